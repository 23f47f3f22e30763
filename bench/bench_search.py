"""`make bench-search`: recall, QPS, the cache and Insert throughput of the Search service.

Everything is real and runs on this machine: `redis-server`, the Embedder
(`python -m imgsearch_embedder`, real EfficientNet-Lite0 weights), the Search
service (`python -m imgsearch_search`, its own process; this process is only
the client), and Milvus: the Milvus 2.3 standalone server (PyPI `milvus`),
then the `milvus-lite server` beside it for comparison.

Per back end, with `--vectors` (100,000) vectors of the model's dimension in
the collection:

1. Insert throughput (standalone only): `--insert-images` Fashion-MNIST test
   images through Search.Insert, against the Embedder's own Embed on the same
   images with the same request size and concurrency. `insert_efficiency` is
   the ratio.
2. The vectors: the embeddings of those real images, plus synthetic ones made
   from them (a random mix of two real embeddings plus Gaussian noise, clipped
   at zero like the CNN's pooled features, unit norm), loaded with pymilvus
   straight into the service's collection, then flushed and indexed.
3. recall@10: `--queries` fresh synthetic query vectors through Search(vector),
   against exact brute force with numpy over the same vectors.
4. QPS and p50/p99 latency of Search(vector) at `--concurrency`, each query a
   new vector (so the cache never answers).
5. The cache (standalone only): Search(image) on images never seen (miss:
   embed + Milvus) against images searched before (hit). Server-side times
   come from the service's access log (`duration_ms`), client times beside.

Prints one JSON line and rewrites the `search` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, replace_section  # noqa: E402
from imgsearch.secure_stack import OPEN_EMBEDDER_ENV, OPEN_SEARCH_ENV  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
SEARCH_LISTENING = r"search listening on (?P<host>[^\s:]+):(?P<port>\d+)"
REQUEST_ITEMS = 32  # images per Insert / Embed request
INSERT_CONCURRENCY = 4  # Insert / Embed requests in flight
LOAD_BATCH = 2000  # rows per pymilvus upsert when loading vectors
NOISE = 0.015  # per-dimension noise of the synthetic vectors (unit vectors, 1280-d)


def fashion_mnist_pngs(count: int, offset: int) -> list[bytes]:
    """`count` Fashion-MNIST test images from `offset`, as PNG files (28x28 grey)."""
    with gzip.open(FASHION_MNIST, "rb") as stream:
        raw = stream.read()
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    if offset + count > len(images):
        raise ValueError(f"only {len(images)} Fashion-MNIST test images")
    encoded = []
    for array in images[offset : offset + count]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def synthetic(bases: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near the real embeddings `bases`: mixes of two plus noise, clipped at 0."""
    out = np.empty((count, bases.shape[1]), dtype=np.float32)
    for start in range(0, count, 10_000):
        n = min(10_000, count - start)
        first = bases[rng.integers(len(bases), size=n)]
        second = bases[rng.integers(len(bases), size=n)]
        weight = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
        noise = rng.normal(scale=NOISE, size=(n, bases.shape[1])).astype(np.float32)
        mixed = np.maximum(weight * first + (1 - weight) * second + noise, 0.0)
        out[start : start + n] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def access_durations(child: Any, method: str) -> list[float]:
    """Server-side durations (ms) of `method` calls in the child's access log lines."""
    durations = []
    for line in list(child.lines):
        if '"imgsearch.access"' not in line or method not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("method", "").endswith(method) and record.get("code") == "OK":
            durations.append(float(record["duration_ms"]))
    return durations


class Search:
    """A `python -m imgsearch_search` child process and a client channel to it."""

    def __init__(self, milvus_uri: str, redis_url: str, embedder: str, collection: str) -> None:
        from tests.fixtures.processes import ChildProcess

        env = {
            "SEARCH_HOST": "127.0.0.1",
            "SEARCH_PORT": "0",
            "SEARCH_METRICS_PORT": "0",
            "SEARCH_MILVUS_URI": milvus_uri,
            "SEARCH_REDIS_URL": redis_url,
            "SEARCH_EMBEDDER_ADDRESS": embedder,
            "SEARCH_COLLECTION": collection,
            "SEARCH_LOG_LEVEL": "INFO",  # the access log gives server-side times
            "SEARCH_MILVUS_TIMEOUT_S": "60",
            **OPEN_SEARCH_ENV,  # loopback benchmark: plaintext, no auth, asked for explicitly
        }
        self.milvus_uri = milvus_uri
        self.collection = collection
        self.child = ChildProcess("search", [sys.executable, "-m", "imgsearch_search"], env)
        match = self.child.wait_for_line(SEARCH_LISTENING, timeout=180)
        self.address = f"127.0.0.1:{match['port']}"

    def stop(self) -> None:
        self.child.stop()


async def insert_throughput(search: Search, embedder: str, images: list[bytes]) -> dict:
    """Images per second through Search.Insert and through Embed alone, same batches."""
    import grpc

    from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc

    batches = [images[i : i + REQUEST_ITEMS] for i in range(0, len(images), REQUEST_ITEMS)]
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]

    async def drive(call: Any) -> float:
        queue = list(enumerate(batches))
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                index, batch = queue.pop()
                await call(index, batch)

        await asyncio.gather(*(worker() for _ in range(INSERT_CONCURRENCY)))
        return len(images) / (time.perf_counter() - started)

    async with (
        grpc.aio.insecure_channel(embedder, options=options) as embed_channel,
        grpc.aio.insecure_channel(search.address, options=options) as search_channel,
    ):
        embed_stub = embedder_pb2_grpc.EmbedderStub(embed_channel)
        search_stub = search_pb2_grpc.SearchStub(search_channel)

        async def embed(index: int, batch: list[bytes]) -> None:
            await embed_stub.Embed(embedder_pb2.EmbedRequest(images=batch), timeout=300)

        async def insert(index: int, batch: list[bytes]) -> None:
            items = [
                search_pb2.Item(id=f"fmnist-{index * REQUEST_ITEMS + k}", image=image)
                for k, image in enumerate(batch)
            ]
            reply = await search_stub.Insert(search_pb2.InsertRequest(items=items), timeout=300)
            if reply.inserted != len(items):
                raise RuntimeError(f"Insert stored {reply.inserted} of {len(items)}: {reply}")

        await embed(0, batches[0][:4])  # warm both paths
        embed_rate = await drive(embed)
        insert_rate = await drive(insert)
        ids = [f"fmnist-{i}" for i in range(len(images))]
        vectors = []
        for start in range(0, len(ids), 500):
            got = await search_stub.Get(
                search_pb2.GetRequest(ids=ids[start : start + 500], include_vectors=True),
                timeout=120,
            )
            vectors.extend(list(stored.vector) for stored in got.items)
    return {
        "embedder_images_per_s": round(embed_rate, 1),
        "insert_images_per_s": round(insert_rate, 1),
        "insert_efficiency": round(insert_rate / embed_rate, 3),
        "ids": ids,
        "vectors": np.asarray(vectors, dtype=np.float32),
    }


def load_vectors(search: Search, model: str, ids: list[str], vectors: np.ndarray) -> dict:
    """Upsert the vectors with pymilvus into the service's collection, then flush and index."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=search.milvus_uri, timeout=120)
    try:
        started = time.perf_counter()
        for start in range(0, len(ids), LOAD_BATCH):
            rows = [
                {
                    "id": ids[i],
                    "vector": vectors[i].tolist(),
                    "uri": "",
                    "labels": {},
                    "content_sha256": "",
                    "model": model,
                }
                for i in range(start, min(start + LOAD_BATCH, len(ids)))
            ]
            client.upsert(search.collection, rows, timeout=300)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        client.flush(search.collection, timeout=600)
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            index = client.describe_index(search.collection, "vector")
            pending = int(index.get("pending_index_rows", 0) or 0)
            total, indexed = int(index.get("total_rows", 0) or 0), int(index.get("indexed_rows", 0))
            if pending == 0 and indexed >= total:
                break
            time.sleep(1.0)
        index_s = time.perf_counter() - started
    finally:
        client.close()
    return {
        "vectors_per_s": round(len(ids) / load_s, 1),
        "load_s": round(load_s, 1),
        "flush_and_index_s": round(index_s, 1),
    }


async def recall_and_qps(
    search: Search,
    all_vectors: np.ndarray,
    all_ids: np.ndarray,
    queries: np.ndarray,
    concurrency: int,
    seconds: float,
    rng: np.random.Generator,
    bases: np.ndarray,
) -> dict:
    import grpc

    from imgsearch.v1 import search_pb2, search_pb2_grpc

    exact = np.argsort(-(queries @ all_vectors.T), axis=1)[:, :10]
    async with grpc.aio.insecure_channel(search.address) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        first_started = time.perf_counter()
        await stub.Search(
            search_pb2.SearchRequest(vector=search_pb2.Vector(values=queries[0]), top_k=10),
            timeout=120,
        )
        first_query_ms = (time.perf_counter() - first_started) * 1000
        recalls = []
        for query, truth in zip(queries, exact, strict=True):
            reply = await stub.Search(
                search_pb2.SearchRequest(vector=search_pb2.Vector(values=query), top_k=10),
                timeout=120,
            )
            found = {hit.id for hit in reply.hits}
            recalls.append(len(found & set(all_ids[truth].tolist())) / 10)

        fresh = synthetic(bases, 20_000, rng)
        latencies: list[float] = []
        counter = iter(range(len(fresh)))
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                vector = fresh[next(counter) % len(fresh)]
                started = time.perf_counter()
                reply = await stub.Search(
                    search_pb2.SearchRequest(vector=search_pb2.Vector(values=vector), top_k=10),
                    timeout=120,
                )
                latencies.append((time.perf_counter() - started) * 1000)
                assert not reply.cached

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "first_query_ms": round(first_query_ms, 1),
        "concurrency": concurrency,
    }


async def cache_latency(search: Search, miss_images: list[bytes], hit_images: list[bytes]) -> dict:
    """Search(image) latency: never-seen images (miss) against repeated ones (hit)."""
    import grpc

    from imgsearch.v1 import search_pb2, search_pb2_grpc

    async with grpc.aio.insecure_channel(search.address) as channel:
        stub = search_pb2_grpc.SearchStub(channel)

        async def timed(image: bytes) -> tuple[float, bool]:
            started = time.perf_counter()
            reply = await stub.Search(search_pb2.SearchRequest(image=image, top_k=10), timeout=60)
            return (time.perf_counter() - started) * 1000, reply.cached

        for image in hit_images:  # prime the cache
            await timed(image)
        with search.child._line_added:
            search.child.lines.clear()
        misses = [await timed(image) for image in miss_images]
        await asyncio.sleep(0.5)
        miss_server = access_durations(search.child, "/Search")
        with search.child._line_added:
            search.child.lines.clear()
        hits = [await timed(hit_images[i % len(hit_images)]) for i in range(200)]
        await asyncio.sleep(0.5)
        hit_server = access_durations(search.child, "/Search")
    assert not any(cached for _, cached in misses), "a never-seen image was a cache hit"
    assert all(cached for _, cached in hits), "a repeated image missed the cache"
    hit_p50 = percentile(hit_server, 50)
    miss_p50 = percentile(miss_server, 50)
    return {
        "cache_hit_p50_ms": round(hit_p50, 3),
        "cache_miss_p50_ms": round(miss_p50, 2),
        "cache_speedup": round(miss_p50 / hit_p50, 1),
        "cache_hit_client_p50_ms": round(percentile([ms for ms, _ in hits], 50), 3),
        "cache_miss_client_p50_ms": round(percentile([ms for ms, _ in misses], 50), 2),
        "cache_server_samples": [len(hit_server), len(miss_server)],
    }


async def run(args: argparse.Namespace) -> dict:
    from tests.fixtures.backends import MilvusStandalone, RedisServer, wait_for_port
    from tests.fixtures.embedder import LISTENING as EMBEDDER_LISTENING
    from tests.fixtures.processes import ChildProcess, free_port

    rng = np.random.default_rng(20261124)
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    children: list[Any] = []
    standalone = None
    try:
        redis = RedisServer(workdir)
        redis.start()
        children.append(redis)
        embedder = ChildProcess(
            "embedder",
            [sys.executable, "-m", "imgsearch_embedder"],
            {
                "EMBEDDER_HOST": "127.0.0.1",
                "EMBEDDER_PORT": "0",
                "EMBEDDER_METRICS_PORT": "0",
                **OPEN_EMBEDDER_ENV,
            },
        )
        children.append(embedder)
        embedder_address = (
            f"127.0.0.1:{embedder.wait_for_line(EMBEDDER_LISTENING, timeout=300)['port']}"
        )
        (workdir / "standalone").mkdir()
        standalone = MilvusStandalone(workdir / "standalone")
        standalone.start()
        lite_port = free_port()
        lite = ChildProcess(
            "milvus-lite",
            [str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir",
             str(workdir / "lite"), "--host", "127.0.0.1", "--port", str(lite_port)],
        )  # fmt: skip
        children.append(lite)
        wait_for_port("127.0.0.1", lite_port, timeout=60, child=lite)

        result: dict[str, Any] = {
            "benchmark": "search",
            "machine": machine(),
            # Other work on the machine lowers every figure: record how busy it was.
            "load_average_1m_start": round(os.getloadavg()[0], 2),
        }
        collection = f"bench_{uuid.uuid4().hex[:8]}"

        # --- Milvus standalone: everything ---------------------------------------------
        search = Search(standalone.uri, redis.url, embedder_address, collection)
        children.append(search)
        images = fashion_mnist_pngs(args.insert_images, offset=0)
        inserted = await insert_throughput(search, embedder_address, images)
        bases = inserted.pop("vectors")
        real_ids = inserted.pop("ids")
        result.update(inserted)
        model = await model_name(search)
        count = args.vectors - len(real_ids)
        vectors = np.concatenate([bases, synthetic(bases, count, rng)])
        ids = np.asarray(real_ids + [f"syn-{i}" for i in range(count)])
        queries = synthetic(bases, args.queries, rng)
        standalone_load = load_vectors(search, model, ids[len(real_ids) :].tolist(),
                                       vectors[len(real_ids) :])  # fmt: skip
        standalone_search = await recall_and_qps(
            search, vectors, ids, queries, args.concurrency, args.seconds, rng, bases
        )
        result.update(
            recall_at_10=standalone_search["recall_at_10"],
            qps=standalone_search["qps"],
            search_p50_ms=standalone_search["p50_ms"],
            search_p99_ms=standalone_search["p99_ms"],
        )
        miss_images = fashion_mnist_pngs(args.cache_queries, offset=args.insert_images)
        hit_images = fashion_mnist_pngs(20, offset=args.insert_images + args.cache_queries)
        result.update(await cache_latency(search, miss_images, hit_images))
        search.stop()
        children.remove(search)
        standalone.stop()
        standalone = None

        # --- Milvus Lite server: loading, recall, QPS ----------------------------------
        lite_search = Search(f"http://127.0.0.1:{lite_port}", redis.url, embedder_address,
                             collection)  # fmt: skip
        children.append(lite_search)
        lite_load = load_vectors(lite_search, model, ids.tolist(), vectors)
        lite_result = await recall_and_qps(
            lite_search, vectors, ids, queries, args.concurrency, args.seconds, rng, bases
        )
        result.update(
            vectors=args.vectors,
            dimension=int(vectors.shape[1]),
            standalone={**standalone_load, **standalone_search},
            lite={**lite_load, **lite_result},
            load_average_1m_end=round(os.getloadavg()[0], 2),
        )
        return result
    finally:
        if standalone is not None:
            standalone.stop()
        for child in reversed(children):
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def model_name(search: Search) -> str:
    import grpc

    from imgsearch.v1 import search_pb2, search_pb2_grpc

    async with grpc.aio.insecure_channel(search.address) as channel:
        stats = await search_pb2_grpc.SearchStub(channel).Stats(search_pb2.StatsRequest())
    return str(stats.model)


def report(result: dict, args: argparse.Namespace) -> str:
    s, lite = result["standalone"], result["lite"]

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    backends = [
        ("recall@10 against exact search (numpy)",
         f"{s['recall_at_10']:.3f}", f"{lite['recall_at_10']:.3f}"),
        (f"Search(vector) QPS at concurrency {s['concurrency']}",
         f"{s['qps']:.0f}", f"{lite['qps']:.1f}"),
        ("Search(vector) p50 / p99, client side",
         f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms",
         f"{lite['p50_ms']:.0f} / {lite['p99_ms']:.0f} ms"),
        ("first query after loading", f"{s['first_query_ms']:.0f} ms",
         f"{lite['first_query_ms']:.0f} ms"),
        ("loading with pymilvus upsert", f"{s['vectors_per_s']:,.0f} vectors/s",
         f"{lite['vectors_per_s']:,.0f} vectors/s"),
        ("flush and index build", f"{s['flush_and_index_s']:.0f} s",
         f"{lite['flush_and_index_s']:.0f} s"),
    ]  # fmt: skip
    targets = [
        ("recall@10 ≥ 0.95", f"{result['recall_at_10']:.3f}",
         verdict(result["recall_at_10"] >= 0.95)),
        ("cache hit p50 ≤ 2 ms server-side",
         f"{result['cache_hit_p50_ms']:.2f} ms (client {result['cache_hit_client_p50_ms']:.2f} ms)",
         verdict(result["cache_hit_p50_ms"] <= 2.0)),
        ("hit ≥ 20× faster than a miss",
         f"miss {result['cache_miss_p50_ms']:.1f} ms (client"
         f" {result['cache_miss_client_p50_ms']:.1f} ms): {result['cache_speedup']:.0f}×",
         verdict(result["cache_speedup"] >= 20)),
        ("Insert ≥ 80% of the Embedder's throughput",
         f"{result['insert_images_per_s']:.1f} against {result['embedder_images_per_s']:.1f}"
         f" images/s: {result['insert_efficiency']:.0%}",
         verdict(result["insert_efficiency"] >= 0.8)),
    ]  # fmt: skip
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {result['machine']}"
        + (
            f" (1-minute load average {result['load_average_1m_start']} at the start,"
            f" {result['load_average_1m_end']} at the end)."
            if "load_average_1m_start" in result
            else "."
        ),
        f"{result['vectors']:,} vectors of {result['dimension']} dimensions: the embeddings of"
        f" {args.insert_images} Fashion-MNIST images inserted through the service, plus"
        " synthetic vectors made from them (mixes of two real embeddings plus noise; see"
        " `bench/bench_search.py`). The Search service runs in its own process; Redis, the"
        " Embedder and Milvus are real local servers. Server-side times are the service's own"
        " access-log `duration_ms`.",
        "",
        "| Figure | Milvus 2.3 standalone (HNSW) | Milvus Lite 3.2 server |",
        "|---|---|---|",
        *(f"| {name} | {a} | {b} |" for name, a, b in backends),
        "",
        "| Target | Measured (standalone) | |",
        "|---|---|---|",
        *(f"| {name} | {value} | {ok} |" for name, value, ok in targets),
        "",
        f"Insert and Embed both sent {REQUEST_ITEMS} images per request, {INSERT_CONCURRENCY}"
        " requests in flight. A cache miss embeds the query image on the CPU and searches"
        " Milvus; a hit is one Redis round trip. Reproduce with `make bench-search`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--insert-images", type=int, default=640, help="images to Insert")
    parser.add_argument("--queries", type=int, default=200, help="queries for recall@10")
    parser.add_argument("--cache-queries", type=int, default=60, help="never-seen query images")
    parser.add_argument("--concurrency", type=int, default=16, help="Search calls in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="QPS measuring time")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if not args.no_docs:
        replace_section("search", report(result, args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
