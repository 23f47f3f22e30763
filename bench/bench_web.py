"""`make bench-web`: the HTTP gateway's overhead, and duplicate finding over 20,000 items.

Everything runs on the default local stack (`imgsearch up`: Milvus, Redis,
the Embedder, Search and the web gateway as child processes):

1. Gateway overhead: the same image queries through the gateway
   (POST /v1/search/image, raw body and multipart, keep-alive HTTP/1.1) and
   straight to Search over gRPC, interleaved, `--rounds` times over
   `--query-images` photos. Repeated images are answered from Search's Redis
   cache (about a millisecond), so the difference of the medians is the
   gateway's own cost; never-seen images (Embedder + Milvus) give the end-to-end
   figures beside it.
2. `imgsearch duplicates` over `--items` (20,000) items, timed as a user runs
   it (the CLI in a subprocess). The collection holds Fashion-MNIST training
   images inserted through Search.Insert (`--seed images`, the real path,
   thumbnails included; minutes of embedding on a CPU) or, for a quick run,
   their embeddings plus synthetic vectors made from them loaded straight into
   Milvus (`--seed vectors`); either way `--copies` planted near-duplicates
   (recompressed copies, or vectors with a little noise) say how many
   duplicates the scan finds.
3. A screenshot of the web page's results (`--screenshot`, docs/images/).

Prints one JSON line and rewrites the `web` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, replace_section  # noqa: E402

FASHION_TRAIN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
CHROMIUM = "/usr/bin/chromium"
NOISE = 0.004  # per-dimension noise of a planted duplicate vector (cosine about 0.99)


def fashion(path: Path, count: int, offset: int = 0) -> np.ndarray:
    """`count` Fashion-MNIST images (28 x 28 uint8) from an IDX file."""
    data = gzip.decompress(path.read_bytes())
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return images[offset : offset + count]


def encode(array: np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def start_stack(data_dir: Path) -> tuple[Any, Any]:
    from imgsearch.stack import LocalStack, StackConfig

    stack = LocalStack(
        # Seeding embeds thousands of images through Insert: on a busy CPU a request of
        # 32 can take longer than the default 30 s Embedder deadline.
        StackConfig(
            data_dir=data_dir,
            startup_timeout_s=600,
            extra_env={"SEARCH_EMBEDDER_TIMEOUT_S": "300"},
        ),
        announce=lambda message: print(f"[bench-web] {message}", file=sys.stderr, flush=True),
    )
    return stack, stack.start()


# --- 1. gateway overhead --------------------------------------------------------------------


def overhead(addresses: Any, photos: list[bytes], cold: list[bytes], rounds: int) -> dict:
    """Median latency of image queries over HTTP (raw, multipart) and gRPC, interleaved."""
    import grpc
    import httpx

    from imgsearch.v1 import search_pb2, search_pb2_grpc

    times: dict[str, list[float]] = {"grpc": [], "http_raw": [], "http_multipart": []}
    with (
        grpc.insecure_channel(addresses.search) as channel,
        httpx.Client(base_url=addresses.web, timeout=60) as http,
    ):
        stub = search_pb2_grpc.SearchStub(channel)

        def by_grpc(image: bytes) -> None:
            stub.Search(search_pb2.SearchRequest(image=image, top_k=10), timeout=60)

        def by_raw(image: bytes) -> None:
            http.post(
                "/v1/search/image?top_k=10", content=image, headers={"content-type": "image/png"}
            ).raise_for_status()

        def by_form(image: bytes) -> None:
            files = {"image": ("q.png", image, "image/png")}
            http.post("/v1/search/image?top_k=10", files=files).raise_for_status()

        calls = {"grpc": by_grpc, "http_raw": by_raw, "http_multipart": by_form}
        for image in photos:  # warm every path and Search's cache
            for call in calls.values():
                call(image)
        for _ in range(rounds):
            for image in photos:
                for name, call in calls.items():
                    started = time.perf_counter()
                    call(image)
                    times[name].append(time.perf_counter() - started)
        cold_times: dict[str, list[float]] = {"grpc": [], "http_raw": []}
        for index, image in enumerate(cold):
            name = "grpc" if index % 2 == 0 else "http_raw"
            started = time.perf_counter()
            calls[name](image)
            cold_times[name].append(time.perf_counter() - started)
    result = {f"hit_{name}_p50_ms": round(p50(values), 2) for name, values in times.items()}
    result.update({f"miss_{n}_p50_ms": round(p50(v), 1) for n, v in cold_times.items()})
    result["overhead_p50_ms"] = round(result["hit_http_raw_p50_ms"] - result["hit_grpc_p50_ms"], 2)
    result["overhead_multipart_p50_ms"] = round(
        result["hit_http_multipart_p50_ms"] - result["hit_grpc_p50_ms"], 2
    )
    result["overhead_queries"] = len(times["grpc"])
    return result


# --- 2. duplicates over the collection -----------------------------------------------------


def seed_images(client: Any, count: int, copies: int) -> None:
    """Fashion-MNIST training images through Search.Insert, plus recompressed copies."""
    from concurrent.futures import ThreadPoolExecutor

    from imgsearch.client import ItemInput

    originals = fashion(FASHION_TRAIN, count - copies)
    items = [
        ItemInput(image=encode(image), id=f"fm-{i:05d}", labels={"source": "fashion-mnist"})
        for i, image in enumerate(originals)
    ]
    items += [
        ItemInput(image=encode(originals[i], "JPEG", quality=60), id=f"fm-{i:05d}-copy")
        for i in range(copies)
    ]
    batches = [items[i : i + 32] for i in range(0, len(items), 32)]
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        for done, outcomes in enumerate(pool.map(client.insert, batches), start=1):
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise RuntimeError(f"insert failed: {failed[0]}")
            if done % 20 == 0:
                rate = done * 32 / (time.perf_counter() - started)
                print(f"[bench-web] inserted {done * 32} ({rate:.0f}/s)", file=sys.stderr)


def seed_vectors(client: Any, milvus_uri: str, count: int, copies: int, real: int) -> None:
    """`real` images through Insert, then synthetic vectors made from their embeddings."""
    from pymilvus import MilvusClient

    from bench.bench_search import synthetic

    seed_images(client, real, 0)
    ids = [f"fm-{i:05d}" for i in range(real)]
    stored = client.get(ids, include_vectors=True).items
    bases = np.asarray([item.vector for item in stored], dtype=np.float32)
    rng = np.random.default_rng(0)
    made = synthetic(bases, count - real - copies, rng)
    planted = made[:copies] + rng.normal(0, NOISE, (copies, bases.shape[1])).astype(np.float32)
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    rows_ids = [f"syn-{i:05d}" for i in range(len(made))]
    rows_ids += [f"syn-{i:05d}-copy" for i in range(copies)]
    vectors = np.concatenate([made, planted])
    milvus = MilvusClient(uri=milvus_uri)
    model = stored[0].model
    for start in range(0, len(rows_ids), 2000):
        rows = [
            {"id": item_id, "vector": vector.tolist(), "uri": "", "labels": {"source": "synthetic"},
             "content_sha256": "", "model": model, "thumbnail": ""}
            for item_id, vector in zip(
                rows_ids[start : start + 2000], vectors[start : start + 2000], strict=True
            )
        ]  # fmt: skip
        milvus.upsert("images", rows)
    milvus.flush("images")
    milvus.close()


def duplicates(addresses: Any, threshold: float) -> tuple[dict, float]:
    """`imgsearch duplicates --json` as a user runs it; its output and wall time."""
    command = [sys.executable, "-m", "imgsearch.cli", "--address", addresses.search]
    command += ["duplicates", "--threshold", str(threshold), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, timeout=3600)
    return json.loads(done.stdout), time.perf_counter() - started


def planted_found(found: dict, copies: int, prefix: str) -> int:
    """How many planted copies ended up in the same group as their original."""
    group_of = {}
    for number, group in enumerate(found["groups"]):
        for member in group["items"]:
            group_of[member["id"]] = number
    return sum(
        1
        for i in range(copies)
        if f"{prefix}-{i:05d}" in group_of
        and group_of.get(f"{prefix}-{i:05d}-copy") == group_of[f"{prefix}-{i:05d}"]
    )


# --- 3. screenshot --------------------------------------------------------------------------


def screenshot(addresses: Any, query: bytes, path: Path) -> None:
    """The results page for `query` (a drop on the page), as a PNG."""
    import asyncio
    import base64

    from playwright.async_api import async_playwright

    async def shoot() -> None:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            await page.goto(f"{addresses.web}/")
            await page.fill("#filter", 'source == "photo"')
            await page.select_option("#top-k", "5")
            transfer = await page.evaluate_handle(
                """(b64) => { const t = new DataTransfer();
                  t.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))],
                                       "cat-cropped.jpg", { type: "image/jpeg" }));
                  return t; }""",
                base64.b64encode(query).decode(),
            )
            await page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
            await page.wait_for_selector("#results figure img.thumb")
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(path))
            await browser.close()

    asyncio.run(shoot())


# --- the run --------------------------------------------------------------------------------


def insert_photos(client: Any, folder: Path) -> list[Path]:
    from imgsearch.client import ItemInput
    from imgsearch.demo import write_photos

    paths = write_photos(folder)
    client.insert([ItemInput.from_path(p, labels={"source": "photo"}) for p in paths])
    return paths


def run(args: argparse.Namespace, data_dir: Path) -> dict:
    from imgsearch.client import Client

    result: dict[str, Any] = {"machine": machine(), "load_average_1m_start": os.getloadavg()[0]}
    stack, addresses = start_stack(data_dir)
    try:
        with Client(addresses.search, timeout=120, insert_timeout=600) as client:
            photos = insert_photos(client, data_dir / "photos")
            queries = [p.read_bytes() for p in photos[: args.query_images]]
            cold = [encode(image) for image in fashion(FASHION_TEST, args.cold_queries)]
            result.update(overhead(addresses, queries, cold, args.rounds))
            print(f"[bench-web] overhead: {json.dumps(result)}", file=sys.stderr, flush=True)
            if args.screenshot:
                chelsea = Image.open(next(p for p in photos if p.stem == "chelsea")).convert("RGB")
                width, height = chelsea.size
                crop = chelsea.crop((width // 8, height // 8, width * 7 // 8, height * 7 // 8))
                buffer = io.BytesIO()
                crop.save(buffer, format="JPEG", quality=70)
                screenshot(addresses, buffer.getvalue(), args.screenshot)
            missing = args.items - client.stats().item_count
            started = time.perf_counter()
            if args.seed == "images":
                seed_images(client, missing, args.copies)
            else:
                seed_vectors(client, addresses.milvus_uri, missing, args.copies, args.real)
            result["seed_s"] = round(time.perf_counter() - started, 1)
            result["items"] = client.stats().item_count
        found, elapsed = duplicates(addresses, args.threshold)
        prefix = "fm" if args.seed == "images" else "syn"
        result.update(
            {
                "seed": args.seed,
                "threshold": args.threshold,
                "duplicates_s": round(elapsed, 1),
                "duplicates_scan_s": round(found["elapsed_s"], 1),
                "duplicate_groups": len(found["groups"]),
                "items_in_groups": sum(len(g["items"]) for g in found["groups"]),
                "planted_copies": args.copies,
                "planted_found": planted_found(found, args.copies, prefix),
                "load_average_1m_end": os.getloadavg()[0],
            }
        )
    finally:
        stack.stop()
    return result


def report(result: dict) -> str:
    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    loads = f"{result['load_average_1m_start']:.1f} and {result['load_average_1m_end']:.1f}"
    busy = max(result["load_average_1m_start"], result["load_average_1m_end"]) > 3
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {result['machine']} (1-minute load"
            f" average {loads} at the start and the end"
            + ("; other jobs shared the cores, so times are upper bounds" if busy else "")
            + "), on the default `imgsearch up` stack.",
            "",
            "| Target | Measured | |",
            "|---|---|---|",
            f"| Gateway overhead over a direct gRPC Search ≤ 5 ms p50 (image query) |"
            f" {result['overhead_p50_ms']:.2f} ms (raw body; multipart"
            f" {result['overhead_multipart_p50_ms']:.2f} ms) |"
            f" {verdict(result['overhead_p50_ms'] <= 5)} |",
            f"| `imgsearch duplicates` over 20,000 items ≤ 5 min | {result['duplicates_s']:.0f} s"
            f" over {result['items']:,} items | {verdict(result['duplicates_s'] <= 300)} |",
            "",
            "| Figure | Value |",
            "|---|---|",
            f"| image query, cached, p50: gRPC / HTTP raw / HTTP multipart |"
            f" {result['hit_grpc_p50_ms']:.2f} / {result['hit_http_raw_p50_ms']:.2f} /"
            f" {result['hit_http_multipart_p50_ms']:.2f} ms ({result['overhead_queries']}"
            " queries each, interleaved) |",
            f"| image query, never seen (Embedder + Milvus), p50: gRPC / HTTP |"
            f" {result['miss_grpc_p50_ms']:.0f} / {result['miss_http_raw_p50_ms']:.0f} ms |",
            f"| duplicate scan (server side) | {result['duplicates_scan_s']:.0f} s;"
            f" {result['duplicate_groups']:,} groups, {result['items_in_groups']:,} items in"
            f" groups at similarity ≥ {result['threshold']} |",
            f"| planted near-duplicates found | {result['planted_found']} of"
            f" {result['planted_copies']} ({result['seed']} seed) |",
            "",
            "The collection: the skimage sample photos plus Fashion-MNIST training images"
            + (
                " inserted through Search.Insert"
                if result["seed"] == "images"
                else " (their embeddings) and synthetic vectors made from them, loaded into Milvus"
            )
            + ". Reproduce with `make bench-web` (`--seed vectors` skips most of the"
            " embedding).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000, help="items for the duplicate scan")
    parser.add_argument("--seed", choices=("images", "vectors"), default="images")
    parser.add_argument("--real", type=int, default=1000, help="real images when --seed vectors")
    parser.add_argument("--copies", type=int, default=200, help="planted near-duplicates")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--query-images", type=int, default=10)
    parser.add_argument("--cold-queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--screenshot", type=Path, default=ROOT / "docs" / "images" / "web-search.png"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as data_dir:
        result = run(args, Path(data_dir))
    if not args.no_docs:
        replace_section(
            "web", "## Web gateway and duplicates (`make bench-web`)\n\n" + report(result)
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
