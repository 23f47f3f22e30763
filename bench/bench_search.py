"""`make bench-search`: the local stack as a user gets it, and each Milvus back end, measured.

Everything is real and runs on this machine. Each back end runs inside a
local stack started by the same code as `imgsearch up` (`imgsearch.stack`):
Milvus, `redis-server`, the Embedder (real weights) and the Search service
as child processes; this process is only the client.

1. The default stack (`imgsearch up`, Milvus 2.3 standalone), from a fresh
   data directory: start-up time; `imgsearch ingest` (the CLI, its default
   batching) of `--ingest-images` Fashion-MNIST training images written as
   PNG files, in two halves, beside the Embedder alone on the same images;
   Search(vector) latency at 10,000 and 100,000 items (the rest synthetic
   vectors bulk-loaded with pymilvus), each right after the bulk ingest and
   once flushed and indexed; recall@10 against exact search (numpy);
   Search(image) on never-seen images (cache misses) beside the model's own
   batch-1 latency; stop time, then restart time on the same data (100,000
   items) and stop again.
2. Milvus Lite (`imgsearch up --milvus lite`): the same vectors, the same
   latency and recall figures (fewer queries: they take a second each).
3. Optionally (`--milvus-lite-binary PATH`): the `milvus` binary of a Milvus
   Lite 2.4/2.5 release, run as an external server (`imgsearch up --milvus-uri`).
4. `--dimensions`: Milvus standalone alone (pymilvus, no service) at 100,000
   synthetic vectors of each dimension, right after loading and once indexed.

Latency is serial (one request at a time), every query a vector never sent
before, so the result cache never answers (checked: `cached` is false).
Server-side times are the Search service's access-log `duration_ms`;
client-side times are measured around the gRPC call in this process.

Prints one JSON line and rewrites the `search` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, replace_section  # noqa: E402
from imgsearch.cli.ingest import IngestOptions  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SIZES = (10_000, 100_000)  # items in the collection when latency is measured (`--sizes`)
LOAD_BATCH = 2000  # rows per pymilvus upsert when bulk-loading vectors
NOISE = 0.015  # per-dimension noise of the synthetic vectors (unit vectors, 1280-d)
EMBED_REQUEST_IMAGES = 32  # the Embedder alone: images per Embed call...
EMBED_CONCURRENCY = 4  # ... and calls in flight (enough to keep it busy)
MB = 1024 * 1024
INGEST_DEFAULTS = IngestOptions()


def say(message: str) -> None:
    print(f"[bench-search {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------


def fashion_mnist(split: str) -> np.ndarray:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", "rb") as stream:
        raw = stream.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, array in enumerate(images):
        path = folder / f"{index:05d}.png"
        path.write_bytes(png(array))
        paths.append(path)
    return paths


def synthetic(bases: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near the real embeddings `bases`: mixes of two plus noise, clipped at 0."""
    out = np.empty((count, bases.shape[1]), dtype=np.float32)
    noise_scale = NOISE * np.sqrt(1280 / bases.shape[1])  # the same angle at any dimension
    for start in range(0, count, 10_000):
        n = min(10_000, count - start)
        first = bases[rng.integers(len(bases), size=n)]
        second = bases[rng.integers(len(bases), size=n)]
        weight = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
        noise = rng.normal(scale=noise_scale, size=(n, bases.shape[1])).astype(np.float32)
        mixed = np.maximum(weight * first + (1 - weight) * second + noise, 0.0)
        out[start : start + n] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2) if values else float("nan")


def exact_top10(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Indices of the 10 nearest vectors (cosine: unit vectors, so the dot product)."""
    rows = []
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ vectors.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        rows.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(rows)


# --- the stack -------------------------------------------------------------------------------


class AccessLog:
    """Server-side durations from the Search service's access log (JSON lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        time.sleep(0.3)  # let the lines of earlier calls reach the file first
        self.offset = self.path.stat().st_size

    def durations(self, method: str) -> list[float]:
        """duration_ms of the OK calls of `method` logged since `mark()`."""
        time.sleep(0.3)  # the supervisor copies the child's output to the file
        with self.path.open("rb") as stream:
            stream.seek(self.offset)
            text = stream.read().decode("utf-8", errors="replace")
        durations = []
        for line in text.splitlines():
            if '"imgsearch.access"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if str(record.get("method", "")).endswith(method) and record.get("code") == "OK":
                durations.append(float(record["duration_ms"]))
        return durations


@dataclass
class RunningStack:
    stack: Any
    address: str
    embedder: str
    milvus_uri: str
    log: AccessLog
    start_s: float


def start_stack(data_dir: Path, milvus: str = "standalone", milvus_uri: str | None = None):
    """A local stack as `imgsearch up` runs it (its defaults, unless said otherwise)."""
    from imgsearch.stack import LocalStack, StackConfig

    stack = LocalStack(
        StackConfig(data_dir=data_dir, milvus=milvus, milvus_uri=milvus_uri),  # type: ignore[arg-type]
        announce=lambda message: say(f"  up: {message}"),
    )
    started = time.perf_counter()
    addresses = stack.start()
    return RunningStack(
        stack=stack,
        address=addresses.search,
        embedder=addresses.embedder,
        milvus_uri=addresses.milvus_uri,
        log=AccessLog(addresses.log_dir / "search.log"),
        start_s=round(time.perf_counter() - started, 1),
    )


def stop_stack(running: RunningStack) -> float:
    started = time.perf_counter()
    codes = running.stack.stop()
    if any(codes.values()):
        say(f"  warning: exit codes {codes}")
    return round(time.perf_counter() - started, 1)


@contextmanager
def search_stub(address: str) -> Iterator[Any]:
    import grpc

    from imgsearch.v1 import search_pb2_grpc

    options = [("grpc.max_receive_message_length", 64 * MB)]
    with grpc.insecure_channel(address, options=options) as channel:
        yield search_pb2_grpc.SearchStub(channel)


def collection_info(address: str) -> dict:
    from imgsearch.v1 import search_pb2

    with search_stub(address) as stub:
        stats = stub.Stats(search_pb2.StatsRequest(), timeout=120)
    return {
        "collection": stats.collection,
        "model": stats.model,
        "dimension": stats.dimension,
        "items": stats.item_count,
        "index": f"{stats.index_type}/{stats.metric_type}",
    }


# --- measurements ----------------------------------------------------------------------------


def vector_latency(running: RunningStack, queries: np.ndarray) -> dict:
    """Serial Search(vector, top_k=10): client and server p50/p99, every query a cache miss;
    failed calls are counted by status, not timed."""
    import grpc

    from imgsearch.v1 import search_pb2

    client_ms = []
    with search_stub(running.address) as stub:
        errors: dict[str, int] = {}
        request = search_pb2.SearchRequest(vector=search_pb2.Vector(values=queries[0]), top_k=10)
        try:
            stub.Search(request, timeout=120)  # warm the channel
        except grpc.RpcError as exc:
            errors[exc.code().name] = 1
        running.log.mark()
        for query in queries[1:]:
            request = search_pb2.SearchRequest(vector=search_pb2.Vector(values=query), top_k=10)
            started = time.perf_counter()
            try:
                reply = stub.Search(request, timeout=120)
            except grpc.RpcError as exc:  # e.g. Milvus Lite past Search's Milvus deadline
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            client_ms.append((time.perf_counter() - started) * 1000)
            assert not reply.cached, "a never-sent vector was answered from the cache"
    server_ms = running.log.durations("/Search")
    return {
        "errors": errors,
        "server_p50_ms": percentile(server_ms, 50),
        "server_p99_ms": percentile(server_ms, 99),
        "client_p50_ms": percentile(client_ms, 50),
        "client_p99_ms": percentile(client_ms, 99),
        "queries": len(client_ms),
        "server_samples": len(server_ms),
    }


def recall_at_10(running: RunningStack, queries: np.ndarray, ids: np.ndarray, vectors) -> float:
    import grpc

    from imgsearch.v1 import search_pb2

    truth = exact_top10(queries, vectors)
    recalls = []
    with search_stub(running.address) as stub:
        for query, expected in zip(queries, truth, strict=True):
            request = search_pb2.SearchRequest(vector=search_pb2.Vector(values=query), top_k=10)
            try:
                reply = stub.Search(request, timeout=120)
            except grpc.RpcError:  # counted as finding nothing
                recalls.append(0.0)
                continue
            found = {hit.id for hit in reply.hits}
            recalls.append(len(found & set(ids[expected].tolist())) / 10)
    return round(float(np.mean(recalls)), 4)


def bulk_load(milvus_uri: str, collection: str, model: str, ids, vectors) -> float:
    """Upsert rows with pymilvus (what a bulk ingest does to Milvus); returns vectors/s."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri, timeout=300)
    try:
        started = time.perf_counter()
        for start in range(0, len(ids), LOAD_BATCH):
            rows = [
                {"id": str(ids[i]), "vector": vectors[i].tolist(), "uri": "", "labels": {},
                 "content_sha256": "", "model": model, "thumbnail": ""}
                for i in range(start, min(start + LOAD_BATCH, len(ids)))
            ]  # fmt: skip
            client.upsert(collection, rows, timeout=300)
        return round(len(ids) / (time.perf_counter() - started), 1)
    finally:
        client.close()


def flush_and_index(milvus_uri: str, collection: str, timeout_s: float = 1800) -> float:
    """Flush, wait until the index covers every row and the query node searches it; seconds.

    `describe_index` says when the index is built; the query node loads it a
    few seconds later, and until then searches the segments with Milvus's
    interim index (measured: recall@10 0.9725 at 10,000 1280-d items right
    after the build, 1.0 ten seconds later). So this also waits until every
    sealed segment the query node serves with enough rows to be indexed
    (`MIN_INDEXED_ROWS`) is served with its index.
    """
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri, timeout=600)
    started = time.perf_counter()
    try:
        client.flush(collection, timeout=600)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            index = client.describe_index(collection, "vector")
            pending = int(index.get("pending_index_rows", 0) or 0)
            total, indexed = int(index.get("total_rows", 0) or 0), int(index.get("indexed_rows", 0))
            if pending == 0 and indexed >= total and _index_served(milvus_uri, collection):
                break
            time.sleep(1.0)
    finally:
        client.close()
    return round(time.perf_counter() - started, 1)


# Milvus builds no index for a sealed segment with fewer rows
# (dataCoord.segment... `minSegmentNumRowsToEnableIndex`, 1024 in Milvus 2.3).
MIN_INDEXED_ROWS = 1024


def _index_served(milvus_uri: str, collection: str) -> bool:
    """Whether the query node serves every indexable sealed segment with its index."""
    import grpc
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    address = milvus_uri.split("://", 1)[-1]
    with grpc.insecure_channel(address) as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        try:
            reply = stub.GetQuerySegmentInfo(
                milvus_pb2.GetQuerySegmentInfoRequest(collectionName=collection), timeout=60
            )
        except grpc.RpcError as exc:
            # Milvus Lite has no query nodes (nor this RPC): what is built is searched.
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True
            raise
    return all(info.indexID for info in reply.infos if info.num_rows >= MIN_INDEXED_ROWS)


def embedder_alone(address: str, images: list[bytes]) -> tuple[float, np.ndarray]:
    """Images per second through Embed alone (`EMBED_REQUEST_IMAGES` per call,
    `EMBED_CONCURRENCY` in flight), and the vectors, in order."""
    import grpc

    from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc

    batches = [
        images[i : i + EMBED_REQUEST_IMAGES] for i in range(0, len(images), EMBED_REQUEST_IMAGES)
    ]
    options = [("grpc.max_send_message_length", 64 * MB)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)

        def embed(batch: list[bytes]) -> np.ndarray:
            for attempt in range(5):
                try:
                    reply = stub.Embed(embedder_pb2.EmbedRequest(images=batch), timeout=600)
                    break
                except grpc.RpcError as exc:  # the server recycles connections (max age)
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                        raise
            return np.asarray([list(e.vector) for e in reply.embeddings], dtype=np.float32)

        embed(batches[0][:4])  # warm
        started = time.perf_counter()
        with ThreadPoolExecutor(EMBED_CONCURRENCY) as pool:
            vectors = list(pool.map(embed, batches))
        rate = len(images) / (time.perf_counter() - started)
    return round(rate, 1), np.concatenate(vectors)


def cli_ingest(address: str, folder: Path) -> dict:
    """`imgsearch ingest FOLDER --json`, as a user runs it; its report."""
    argv = [sys.executable, "-m", "imgsearch.cli", "--address", address, "ingest", str(folder)]
    proc = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"imgsearch ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def image_query_latency(running: RunningStack, images: list[bytes]) -> dict:
    """Serial Search(image) of never-seen images (embedding and result caches both miss),
    then of images searched before (result-cache hits)."""
    from imgsearch.v1 import search_pb2

    def timed(stub: Any, image: bytes) -> tuple[float, bool]:
        started = time.perf_counter()
        reply = stub.Search(search_pb2.SearchRequest(image=image, top_k=10), timeout=120)
        return (time.perf_counter() - started) * 1000, reply.cached

    with search_stub(running.address) as stub:
        stub.Stats(search_pb2.StatsRequest(), timeout=60)
        running.log.mark()
        misses = [timed(stub, image) for image in images]
        miss_server = running.log.durations("/Search")
        running.log.mark()
        hits = [timed(stub, images[i % min(20, len(images))]) for i in range(200)]
        hit_server = running.log.durations("/Search")
    assert not any(cached for _, cached in misses), "a never-seen image was a cache hit"
    assert all(cached for _, cached in hits), "a repeated image missed the cache"
    return {
        "image_query_server_p50_ms": percentile(miss_server, 50),
        "image_query_client_p50_ms": percentile([ms for ms, _ in misses], 50),
        "image_query_client_p99_ms": percentile([ms for ms, _ in misses], 99),
        "image_queries": len(misses),
        "cache_hit_server_p50_ms": percentile(hit_server, 50),
        "cache_hit_client_p50_ms": percentile([ms for ms, _ in hits], 50),
    }


def strong_read_latency(running: RunningStack, count: int = 20) -> dict:
    """Stats: its count(*) is a Strong read, which waits for Milvus's next time tick."""
    from imgsearch.v1 import search_pb2

    with search_stub(running.address) as stub:
        running.log.mark()
        for _ in range(count):
            stub.Stats(search_pb2.StatsRequest(), timeout=60)
        server = running.log.durations("/Stats")
    return {"strong_read_server_p50_ms": percentile(server, 50)}


def model_batch1_ms(images: list[bytes]) -> float:
    """The model alone in this process: median ms to decode and embed one image."""
    from imgsearch_embedder.model import EmbeddingModel
    from imgsearch_embedder.preprocess import Preprocessor
    from imgsearch_embedder.settings import EmbedderSettings

    settings = EmbedderSettings()
    model = EmbeddingModel(settings)
    preprocess = Preprocessor(settings.input_size, settings.resize_size, settings.max_image_pixels)
    for image in images[:5]:  # warm
        model.embed_batch([preprocess(image, 0)])
    times = []
    for image in images:
        started = time.perf_counter()
        model.embed_batch([preprocess(image, 0)])
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 2)


# --- one back end ----------------------------------------------------------------------------


@dataclass
class Vectors:
    """Every vector the collection will hold, in load order, and fresh query vectors."""

    ids: np.ndarray
    vectors: np.ndarray
    queries: np.ndarray
    recall_queries: np.ndarray
    # Real (ingested) items among the rows of each of SIZES.
    real_counts: list[int]


def measure_at_sizes(
    running: RunningStack,
    data: Vectors,
    sizes: list[int],
    queries: int,
    load: Callable[[int, int], None] | None = None,
    figures: dict[str, Any] | None = None,
) -> dict:
    """Grow the collection to each of SIZES; latency right after the bulk load and indexed.

    Figures go into `figures` (a new dict by default) as they are measured, so
    a caller keeps those taken before a failure.
    """
    info = collection_info(running.address)
    figures = {} if figures is None else figures
    cursor = 0  # next query vector: never reuse one (the cache would answer)

    def next_queries() -> np.ndarray:
        nonlocal cursor
        chosen = data.queries[cursor : cursor + queries + 1]
        cursor += queries + 1
        return chosen

    stored = 0
    for size in sizes:
        started = time.perf_counter()
        if load is not None:
            load(stored, size)
        else:
            bulk_load(running.milvus_uri, info["collection"], info["model"],
                      data.ids[stored:size], data.vectors[stored:size])  # fmt: skip
        load_s = round(time.perf_counter() - started, 1)
        stored = size
        say(f"  {size:,} items (loaded in {load_s} s): right after the bulk load")
        after = vector_latency(running, next_queries())
        # Before the index covers the new rows, Milvus searches them through its
        # interim index (`queryNode.segcore.interimIndex`, milvus_standalone).
        recall_after = recall_at_10(
            running, data.recall_queries, data.ids[:size], data.vectors[:size]
        )
        index_s = flush_and_index(running.milvus_uri, info["collection"])
        say(f"  {size:,} items: flushed and indexed in {index_s} s")
        indexed = vector_latency(running, next_queries())
        recall = recall_at_10(running, data.recall_queries, data.ids[:size], data.vectors[:size])
        figures[str(size)] = {
            "load_s": load_s,
            "right_after_load": after,
            "recall_at_10_right_after_load": recall_after,
            "flush_and_index_s": index_s,
            "indexed": indexed,
            "recall_at_10": recall,
        }
        say(f"  {size:,}: after load {after}; indexed {indexed}; recall@10 {recall}")
    figures["items"] = collection_info(running.address)["items"]
    return figures


def default_stack(
    args: argparse.Namespace, workdir: Path, rng: np.random.Generator
) -> tuple[dict, Vectors]:
    """The stack as `imgsearch up` gives it, from a fresh data directory."""
    train = fashion_mnist("train")[: args.ingest_images]
    test = fashion_mnist("test")
    half = args.ingest_images // 2
    folders = [workdir / "ingest" / "a", workdir / "ingest" / "b"]
    halves = [
        [path.read_bytes() for path in write_pngs(folders[0], train[:half])],
        [path.read_bytes() for path in write_pngs(folders[1], train[half:])],
    ]

    say("default stack (imgsearch up): first start")
    data_dir = workdir / "stack-default"
    running = start_stack(data_dir)
    result: dict[str, Any] = {"start_first_s": running.start_s}
    try:
        say(f"  the Embedder alone on {args.ingest_images} images")
        embed_rate, real = embedder_alone(running.embedder, halves[0] + halves[1])
        data = vectors_for(halves, real, args, rng)
        reports: list[dict] = []

        alone_rates: list[float] = []

        def load(stored: int, size: int) -> None:
            """Half of the images through `imgsearch ingest`, then synthetic vectors up to size.

            The Embedder alone is timed again on the same half just before, so
            both rates are taken under the same load on the machine.
            """
            alone_rates.append(embedder_alone(running.embedder, halves[len(reports)])[0])
            reports.append(cli_ingest(running.address, folders[len(reports)]))
            stored += data.real_counts[len(reports) - 1]
            info = collection_info(running.address)
            bulk_load(running.milvus_uri, info["collection"], info["model"],
                      data.ids[stored:size], data.vectors[stored:size])  # fmt: skip

        result.update(collection_info(running.address))
        result["sizes"] = measure_at_sizes(running, data, args.sizes, args.queries, load)
        inserted = sum(report["inserted"] for report in reports)
        seconds = sum(report["elapsed_s"] for report in reports)
        # The Embedder alone over the same images, each half timed just before its ingest.
        alone_s = sum(len(half) / rate for half, rate in zip(halves, alone_rates, strict=True))
        alone_rate = round(sum(len(half) for half in halves) / alone_s, 1)
        result.update(
            embedder_images_per_s=alone_rate,
            embedder_images_per_s_first=embed_rate,
            ingest_images=inserted,
            ingest_images_per_s=round(inserted / seconds, 1),
            ingest_efficiency=round(inserted / seconds / alone_rate, 3),
            ingest_halves=[
                {"embedder_images_per_s": rate, "ingest_images_per_s": report["images_per_s"]}
                for rate, report in zip(alone_rates, reports, strict=True)
            ],
        )
        say(f"  ingest {result['ingest_images_per_s']} images/s, Embedder alone {embed_rate}")
        queries = [png(array) for array in test[: args.image_queries]]
        result.update(image_query_latency(running, queries))
        result.update(strong_read_latency(running))
        if args.dimensions and args.budget.allows("dimensions", 0.5):
            result["dimensions"] = dimension_sweep(running.milvus_uri, args, real, rng)
    finally:
        result["stop_s"] = stop_stack(running)
    say(f"  stopped in {result['stop_s']} s; restarting on the same data")
    running = start_stack(data_dir)
    try:
        result["start_again_s"] = running.start_s
        result["items_after_restart"] = collection_info(running.address)["items"]
    finally:
        result["stop_again_s"] = stop_stack(running)
    say("  the model alone, batch 1 (this process)")
    result["model_batch1_ms"] = model_batch1_ms(queries)
    return result, data


def vectors_for(
    halves: list[list[bytes]], real: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> Vectors:
    """Load order: each half of the images (ids as `imgsearch ingest` gives them: content
    hashes; repeated images once), then synthetic vectors up to the next of SIZES."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    real_counts = []
    seen: set[str] = set()
    position = 0
    for half, size in zip(halves, args.sizes, strict=True):
        count = 0
        for image in half:
            key = hashlib.sha256(image).hexdigest()
            if key not in seen:
                seen.add(key)
                ids.append(key)
                rows.append(real[position])
                count += 1
            position += 1
        real_counts.append(count)
        fill = size - len(ids)
        ids += [f"syn-{len(ids) + i}" for i in range(fill)]
        rows.extend(synthetic(real, fill, rng))
    queries = synthetic(real, (args.queries + 1) * 2 * len(args.sizes), rng)
    return Vectors(
        ids=np.asarray(ids),
        vectors=np.asarray(rows, dtype=np.float32),
        queries=queries,
        recall_queries=synthetic(real, args.recall_queries, rng),
        real_counts=real_counts,
    )


def other_backend(
    name: str, args: argparse.Namespace, workdir: Path, data: Vectors, **stack_options: Any
) -> dict:
    import grpc

    say(f"{name}: start")
    running = start_stack(workdir / f"stack-{name}", **stack_options)
    result: dict[str, Any] = {"start_first_s": running.start_s}
    try:
        result.update(collection_info(running.address))
        queries = args.lite_queries if name.startswith("lite") else args.queries
        recall = data.recall_queries[: args.lite_queries * 2 if name.startswith("lite") else None]
        subset = Vectors(data.ids, data.vectors, data.queries, recall, data.real_counts)
        result["sizes"] = {}
        sizes = args.lite_sizes if name.startswith("lite") else args.sizes
        measure_at_sizes(running, subset, sizes, queries, figures=result["sizes"])
    except grpc.RpcError as exc:  # e.g. Lite's first search after a bulk load: past deadline
        result["error"] = f"{exc.code().name}: {exc.details()}"
        say(f"  {name}: stopped by {result['error']}")
    finally:
        result["stop_s"] = stop_stack(running)
    return result


def lite_binary(args: argparse.Namespace, workdir: Path, data: Vectors) -> dict:
    """The other back end on a Milvus Lite binary, or why the stack could not use it."""
    from imgsearch.stack import StackError

    with external_lite(args.milvus_lite_binary, workdir) as uri:
        try:
            return other_backend("lite-binary", args, workdir, data, milvus_uri=uri)
        except StackError as exc:
            say(f"  the stack cannot run on it: {exc}")
            return {"error": str(exc).splitlines()[-1][-500:]}


@contextmanager
def external_lite(binary: Path, workdir: Path) -> Iterator[str]:
    """A Milvus Lite 2.4/2.5 `milvus` binary serving a database file on a TCP port."""
    from tests.fixtures.backends import wait_for_port
    from tests.fixtures.processes import ChildProcess, free_port

    port = free_port()
    (workdir / "lite25").mkdir()
    env = {"LD_LIBRARY_PATH": str(binary.parent)}
    argv = [str(binary), str(workdir / "lite25" / "milvus.db"), f"127.0.0.1:{port}", "ERROR"]
    child = ChildProcess("milvus-lite-binary", argv, env, cwd=workdir / "lite25")
    try:
        wait_for_port("127.0.0.1", port, timeout=60, child=child)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


# --- dimensions ------------------------------------------------------------------------------


def dimension_sweep(
    milvus_uri: str, args: argparse.Namespace, real: np.ndarray, rng: np.random.Generator
) -> dict:
    """Milvus alone (pymilvus, serial) at `args.dimension_vectors` synthetic vectors per dimension.

    Vectors of a lower dimension come from the real embeddings by a random
    orthonormal projection (what a whitening/PCA projection does to their cost),
    of a higher one by a random isometric embedding.
    """
    figures = {}
    for dimension in args.dimensions:
        say(f"  Milvus alone, {args.dimension_vectors:,} vectors of {dimension} dimensions")
        served = real.shape[1]
        if dimension == served:
            bases = real
        elif dimension < served:  # a random orthonormal projection down
            basis, _ = np.linalg.qr(rng.normal(size=(served, dimension)))
            projected = real @ basis.astype(np.float32)
            bases = projected / np.linalg.norm(projected, axis=1, keepdims=True)
        else:  # an isometric embedding up: the same geometry, the cost of `dimension`
            basis, _ = np.linalg.qr(rng.normal(size=(dimension, served)))
            bases = real @ basis.T.astype(np.float32)
        figures[str(dimension)] = milvus_alone(milvus_uri, bases, args, rng)
        say(f"  {dimension}: {figures[str(dimension)]}")
    return figures


def milvus_alone(milvus_uri: str, bases: np.ndarray, args: argparse.Namespace, rng) -> dict:
    from pymilvus import DataType, MilvusClient

    count, dimension = args.dimension_vectors, bases.shape[1]
    vectors = synthetic_any(bases, count, rng)
    name = f"bench_dim_{dimension}"
    client = MilvusClient(uri=milvus_uri, timeout=600)
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                        params={"M": 16, "efConstruction": 200})  # fmt: skip
        client.create_collection(name, schema=schema, index_params=index,
                                 consistency_level="Session")  # fmt: skip
        started = time.perf_counter()
        for start in range(0, count, LOAD_BATCH):
            rows = [{"id": i, "vector": vectors[i].tolist()}
                    for i in range(start, min(start + LOAD_BATCH, count))]  # fmt: skip
            client.insert(name, rows)
        load_s = round(time.perf_counter() - started, 1)
        queries = synthetic_any(bases, 2 * args.queries + args.recall_queries, rng)
        after = _pymilvus_latency(client, name, queries[: args.queries])
        index_s = flush_and_index(milvus_uri, name)
        indexed = _pymilvus_latency(client, name, queries[args.queries : 2 * args.queries])
        recall_queries = queries[2 * args.queries :]
        truth = exact_top10(recall_queries, vectors)
        by_ef = {}
        for ef in args.ef:  # HNSW ef: recall against time
            latency = _pymilvus_latency(client, name, queries[args.queries : 2 * args.queries], ef)
            params = {"metric_type": "COSINE", "params": {"ef": ef}}
            found = client.search(name, data=recall_queries.tolist(), limit=10,
                                  search_params=params)  # fmt: skip
            recall = np.mean(
                [len({hit["id"] for hit in hits} & set(t.tolist())) / 10
                 for hits, t in zip(found, truth, strict=True)]
            )  # fmt: skip
            by_ef[str(ef)] = {**latency, "recall_at_10": round(float(recall), 4)}
        client.drop_collection(name)
    finally:
        client.close()
    return {"load_s": load_s, "right_after_load": after, "flush_and_index_s": index_s,
            "indexed": indexed, "by_ef": by_ef}  # fmt: skip


def synthetic_any(bases: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`synthetic`, without clipping at zero (projected vectors have negative components)."""
    out = np.empty((count, bases.shape[1]), dtype=np.float32)
    noise_scale = NOISE * np.sqrt(1280 / bases.shape[1])
    for start in range(0, count, 10_000):
        n = min(10_000, count - start)
        first = bases[rng.integers(len(bases), size=n)]
        second = bases[rng.integers(len(bases), size=n)]
        weight = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
        noise = rng.normal(scale=noise_scale, size=(n, bases.shape[1])).astype(np.float32)
        mixed = weight * first + (1 - weight) * second + noise
        out[start : start + n] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def _pymilvus_latency(client: Any, name: str, queries: np.ndarray, ef: int = 128) -> dict:
    params = {"metric_type": "COSINE", "params": {"ef": ef}}
    client.search(name, data=[queries[0].tolist()], limit=10, search_params=params)
    times = []
    for query in queries:
        started = time.perf_counter()
        client.search(name, data=[query.tolist()], limit=10, search_params=params)
        times.append((time.perf_counter() - started) * 1000)
    return {"client_p50_ms": percentile(times, 50), "client_p99_ms": percentile(times, 99)}


# --- the run ---------------------------------------------------------------------------------


class Budget:
    """The run's time budget: optional parts are skipped (and say so) once it runs short."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.skipped: dict[str, str] = {}

    def allows(self, part: str, share: float) -> bool:
        """Whether `part` may start: less than `share` of the budget is spent."""
        spent = time.monotonic() - self.started
        if spent <= share * self.seconds:
            return True
        self.skipped[part] = (
            f"skipped: {spent:.0f} s of the {self.seconds:.0f} s budget spent (--time-budget-s)"
        )
        say(f"{part}: {self.skipped[part]}")
        return False


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(20261130)
    budget = Budget(args.time_budget_s)
    args.budget = budget
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    result: dict[str, Any] = {
        "benchmark": "search",
        "machine": machine(),
        # Other work on the machine slows every figure: record how busy it was.
        "load_average_1m_start": round(os.getloadavg()[0], 2),
        "sizes": args.sizes,
    }
    try:
        result["default"], data = default_stack(args, workdir, rng)
        say(f"default: {json.dumps(result['default'])}")
        if not args.skip_lite and budget.allows("lite", 0.8):
            result["lite"] = other_backend("lite", args, workdir, data, milvus="lite")
            say(f"lite: {json.dumps(result['lite'])}")
        if args.milvus_lite_binary and budget.allows("lite_binary", 0.8):
            result["lite_binary"] = lite_binary(args, workdir, data)
        result["skipped"] = budget.skipped
        result["elapsed_s"] = round(time.monotonic() - budget.started, 1)
        result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the report ------------------------------------------------------------------------------

BACKENDS = {
    "default": "the local stack as a user gets it (`imgsearch up`: Milvus 2.3 standalone)",
    "lite": "`imgsearch up --milvus lite` (Milvus Lite 3.2 server)",
    "lite_binary": "Milvus Lite 2.5 binary as an external server (`--milvus-uri`)",
}


def _latency_rows(result: dict) -> list[str]:
    rows = []
    for key, label in BACKENDS.items():
        if key not in result:
            continue
        if "error" in result[key] and not result[key].get("sizes"):
            rows.append(f"| {label} | – | cannot run: {result[key]['error']} | | | |")
            continue
        for size in result["sizes"]:
            if str(size) not in result[key]["sizes"]:
                error = result[key].get("error", "not measured (`--lite-sizes`)")
                rows.append(f"| {label} | {size:,} | stopped: {error} | | | |")
                continue
            figures = result[key]["sizes"][str(size)]
            recalls = {"right_after_load": figures.get("recall_at_10_right_after_load", ""),
                       "indexed": figures["recall_at_10"]}  # fmt: skip
            for state, name in (("right_after_load", "right after the bulk ingest"),
                                ("indexed", "flushed and indexed")):  # fmt: skip
                f = figures[state]
                failed = ", ".join(f"{n} {code}" for code, n in f.get("errors", {}).items())
                failed = f" (failed: {failed})" if failed else ""
                rows.append(
                    f"| {label} | {size:,} | {name} | {f['server_p50_ms']} / {f['server_p99_ms']}"
                    f" | {f['client_p50_ms']} / {f['client_p99_ms']}{failed} |"
                    f" {recalls[state]} |"
                )
    return rows


def _targets(d: dict, largest: int) -> list[tuple[str, str, bool]]:
    top = d["sizes"][str(largest)]
    indexed, after = top["indexed"], top["right_after_load"]
    return [
        (f"server-side p50 ≤ 10 ms at {largest:,}, indexed", f"{indexed['server_p50_ms']} ms",
         indexed["server_p50_ms"] <= 10),
        (f"server-side p99 ≤ 40 ms at {largest:,}, indexed", f"{indexed['server_p99_ms']} ms",
         indexed["server_p99_ms"] <= 40),
        (f"client-side p50 ≤ 15 ms at {largest:,}, indexed", f"{indexed['client_p50_ms']} ms",
         indexed["client_p50_ms"] <= 15),
        (f"p50 ≤ 60 ms right after bulk-ingesting {largest:,} (client-side)",
         f"{after['client_p50_ms']} ms (server {after['server_p50_ms']} ms)",
         after["client_p50_ms"] <= 60),
        ("image query p50 (cache miss, end to end) ≤ model batch-1 + 15 ms",
         f"{d['image_query_client_p50_ms']} ms against {d['model_batch1_ms']} + 15 ms",
         d["image_query_client_p50_ms"] <= d["model_batch1_ms"] + 15),
        *((f"recall@10 ≥ 0.98 at {int(size):,}, indexed (right after the bulk ingest)",
           f"{f['recall_at_10']:.4f} ({f.get('recall_at_10_right_after_load', '–')})",
           f["recall_at_10"] >= 0.98)
          for size, f in d["sizes"].items() if size != "items"),
        ("`imgsearch ingest` ≥ 0.9 × the Embedder alone",
         f"{d['ingest_images_per_s']} against {d['embedder_images_per_s']} images/s:"
         f" {d['ingest_efficiency']:.2f}", d["ingest_efficiency"] >= 0.9),
        ("start-up ≤ 30 s after the first run", f"{d['start_again_s']} s (first run"
         f" {d['start_first_s']} s)", d["start_again_s"] <= 30),
        ("stop ≤ 15 s", f"{d['stop_s']} s; {d['stop_again_s']} s after the restart",
         max(d["stop_s"], d["stop_again_s"]) <= 15),
    ]  # fmt: skip


def _dimension_rows(d: dict) -> list[str]:
    rows = []
    for dimension, f in d.get("dimensions", {}).items():
        a = f["right_after_load"]
        by_ef = " | ".join(
            f"{e['client_p50_ms']} / {e['client_p99_ms']} ms, {e['recall_at_10']}"
            for e in f["by_ef"].values()
        )
        rows.append(
            f"| {dimension} | {a['client_p50_ms']} / {a['client_p99_ms']} ms |"
            f" {f['flush_and_index_s']} s | {by_ef} |"
        )
    return rows


def report(result: dict, args: argparse.Namespace) -> str:
    d = result["default"]
    lines = [
        "## Search (`make bench-search`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {result['machine']} (1-minute load average"
        f" {result['load_average_1m_start']} at the start, {result.get('load_average_1m_end')}"
        f" at the end); the run took {result.get('elapsed_s', '?')} s. Reproduce with"
        " `make bench-search` (`BENCH_SEARCH_ITEMS` scales it down);"
        " `bench/bench_search.py` says how.",
        *([f"Note: {result['note']}."] if result.get("note") else []),
        *(f"Not measured: {part}, {why}." for part, why in result.get("skipped", {}).items()),
        "",
        f"Collection: {d['dimension']}-d vectors of `{d['model']}`, {d['index']}. The first"
        f" {d['ingest_images']:,} items are Fashion-MNIST training images ingested with"
        " `imgsearch ingest`; the rest are synthetic vectors made from their embeddings"
        " (mixes of two plus noise), bulk-loaded with pymilvus upserts. Latency: Search by"
        " vector, top_k 10, one request at a time, every vector new (cache misses only);"
        " server-side is the Search service's access-log `duration_ms`, client-side is"
        " measured around the gRPC call. Recall@10 is against exact search (numpy) with"
        f" {args.recall_queries} queries ({args.lite_queries * 2} on Milvus Lite).",
        "",
        "| Back end | Items | When | server p50 / p99 ms | client p50 / p99 ms | recall@10 |",
        "|---|---|---|---|---|---|",
        *_latency_rows(result),
        "",
        "| Target (default stack) | Measured | |",
        "|---|---|---|",
        *(f"| {name} | {value} | {'meets' if ok else 'MISSES'} |" for name, value, ok in
          _targets(d, max(result["sizes"]))),
        "",
        f"Image queries: {d['image_queries']} never-seen Fashion-MNIST test images, one at a"
        f" time: p50 {d['image_query_client_p50_ms']} ms at the client"
        f" ({d['image_query_server_p50_ms']} ms server-side), p99"
        f" {d['image_query_client_p99_ms']} ms; the model alone takes {d['model_batch1_ms']} ms"
        " to decode and embed one of them (batch 1, in the benchmark's process). Ingest:"
        f" `imgsearch ingest` with its defaults ({INGEST_DEFAULTS.batch_size} images per request,"
        f" {INGEST_DEFAULTS.concurrency} in flight) against"
        f" the Embedder's Embed alone ({EMBED_REQUEST_IMAGES} per call,"
        f" {EMBED_CONCURRENCY} in flight) on the same images, each half of them timed just"
        " before its ingest. After a stop, the default stack"
        f" restarted in {d['start_again_s']} s and found {d['items_after_restart']:,} items.",
        "",
        f"At {max(result['sizes']):,} items: a result-cache hit (a repeated image query) took"
        f" {d['cache_hit_server_p50_ms']} ms server-side (p50; {d['cache_hit_client_p50_ms']} ms"
        " at the client); a Strong read (Stats, whose `count(*)` waits for Milvus's next time"
        f" tick) {d['strong_read_server_p50_ms']} ms.",
    ]  # fmt: skip
    if d.get("dimensions"):
        lines += [
            "",
            f"Milvus standalone alone (pymilvus client in the benchmark, no service),"
            f" {args.dimension_vectors:,} synthetic vectors per dimension (the real"
            " embeddings projected to it), HNSW M=16, efConstruction=200, serial:",
            "",
            "| Dimension | right after loading p50 / p99 | flush + index build | "
            + " | ".join(f"indexed, ef={ef}: p50 / p99, recall@10" for ef in args.ef)
            + " |",
            "|---|---|---|" + "---|" * len(args.ef),
            *_dimension_rows(d),
        ]
    lines += ["", "```json", json.dumps(result), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ingest-images",
        type=int,
        default=20_000,
        help="Fashion-MNIST images through `imgsearch ingest` (at most 20,000)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=list(SIZES),
        help="the two collection sizes measured",
    )
    parser.add_argument("--queries", type=int, default=300, help="serial queries per figure")
    parser.add_argument(
        "--lite-queries",
        type=int,
        default=30,
        help="serial queries per figure on Milvus Lite (about 1 s each)",
    )
    parser.add_argument("--recall-queries", type=int, default=200, help="queries for recall@10")
    parser.add_argument("--image-queries", type=int, default=100, help="never-seen query images")
    parser.add_argument(
        "--dimensions",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[1280, 256],
        help="Milvus alone at these ('' skips)",
    )
    parser.add_argument("--dimension-vectors", type=int, default=100_000)
    parser.add_argument(
        "--ef",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[64, 128, 256],
        help="HNSW ef values of the dimension runs",
    )
    parser.add_argument("--skip-lite", action="store_true", help="leave Milvus Lite out")
    parser.add_argument(
        "--lite-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=None,
        help="sizes measured on Milvus Lite (default: the first of --sizes; at 100,000 its"
        " searches pass Search's 10 s Milvus deadline, see docs/search.md)",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="scale the run to N items: --sizes N/10,N, --ingest-images min(20000, N/5),"
        " --dimension-vectors N (make bench-search: BENCH_SEARCH_ITEMS)",
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=1500.0,
        help="optional parts (dimension sweep, Milvus Lite) are skipped once the run has"
        " spent half (sweep) or 80%% (Lite) of this",
    )
    parser.add_argument(
        "--milvus-lite-binary",
        type=Path,
        help="the `milvus` binary of a Milvus Lite 2.4/2.5 wheel, to compare",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/")
    parser.add_argument("--note", default="", help="a note printed in docs/benchmarks.md")
    args = parser.parse_args()  # fmt: skip
    if args.items is not None:
        args.sizes = [args.items // 10, args.items]
        args.ingest_images = min(20_000, args.items // 5)
        args.dimension_vectors = args.items
    if args.lite_sizes is None:
        args.lite_sizes = args.sizes[:1]
    if len(args.sizes) != 2 or args.ingest_images > min(args.sizes) * 2:
        parser.error("--sizes: two sizes; --ingest-images: at most twice the first")
    result = run(args)
    if args.note:
        result["note"] = args.note
    if not args.no_docs:
        replace_section("search", report(result, args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
