"""Running the evaluation: the sets through the live stack and, beside it, exact search.

`run_evaluation` is the whole `imgsearch eval`:

1. builds the sets (`datasets`, `edits`), deterministically from `seed`;
2. starts the local stack (Milvus, Redis, the default Embedder, Search with its
   cache off) unless addresses of a running one are given, inserts gallery and
   distractors through Search.Insert and sends every edited query through
   Search.Search (end to end: Search embeds it and asks the Milvus index);
3. embeds everything with an Embedder that serves the *unprojected* default
   descriptor ("raw") and applies the shipped projection offline, so exact
   search can be measured at every dimension of the projection (and without
   it), checking on a sample that the offline projection equals what the
   live Embedder serves;
4. embeds everything with the previous default descriptor ("baseline": centre
   crop, average pooling, 1280-d) for comparison in the same run;
5. measures query-embedding latency and bulk throughput of the default and
   baseline Embedders, interleaved so machine load hits both alike;
6. computes recall@k and mAP per edit kind, Fashion-MNIST mAP@100 and
   precision@10 beside raw pixels, and returns a `Report`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from imgsearch.client import Client, ItemInput
from imgsearch.evaluation import datasets, edits
from imgsearch.evaluation.metrics import (
    class_retrieval,
    exact_top_k,
    mean_reciprocal_rank,
    rank_of,
    recall_at_k,
)
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc

# The Embedder's previous default descriptor (before issue 10): the baseline.
BASELINE_ENV = {
    "EMBEDDER_CROP": "centre",
    "EMBEDDER_INPUT_SIZE": "224",
    "EMBEDDER_RESIZE_SIZE": "256",
    "EMBEDDER_TRIM_BORDERS": "false",
    "EMBEDDER_POOLING": "avg",
    "EMBEDDER_POWER": "1.0",
    "EMBEDDER_PROJECTION": "none",
}
RAW_ENV = {"EMBEDDER_PROJECTION": "none"}
RECALL_KS = (1, 5, 10)
SEARCH_TOP_K = 100
Say = Callable[[str], None]


@dataclass(frozen=True)
class EvalConfig:
    """What to measure; the defaults are `make eval`'s full run."""

    seed: int = 0
    gallery: int = 300
    distractors: int = 2000
    kinds: tuple[str, ...] = tuple(kind.name for kind in edits.ALL_KINDS)
    fashion_gallery: int = 10_000
    fashion_queries: int = 1_000
    baseline: bool = True
    # An extra Embedder of the unprojected descriptor, for the curve up to its full width
    # (otherwise the curve truncates the served vectors: served width and below).
    dimension_curve: bool = False
    speed_rounds: int = 5  # 0: no speed probe
    milvus: str = "lite"
    data_dir: Path = Path(".imgsearch/eval")
    # Scaled-down sets for the tests: skimage.data photos only, no Debian packages.
    small: bool = False
    batch_size: int = 16
    concurrency: int = 2
    # Torch threads of every Embedder the evaluation starts (0: all cores). On a
    # shared, loaded machine one thread each wastes less time spinning.
    embedder_threads: int = 0


@dataclass
class Vectors:
    """One descriptor's vectors of every set (rows unit-norm)."""

    indexed: np.ndarray
    queries: np.ndarray
    fashion_gallery: np.ndarray | None = None
    fashion_queries: np.ndarray | None = None


@dataclass
class Report:
    """Everything `imgsearch eval` measured; `report.py` renders it."""

    config: dict[str, Any]
    sets: dict[str, Any]
    model: dict[str, Any]
    baseline_model: dict[str, Any] | None
    kinds: list[dict[str, str]]
    # {descriptor label: {"end_to_end"|"exact": {kind: {metric: value}}}}
    retrieval: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    fashion: dict[str, dict[str, float]] = field(default_factory=dict)
    dimension_curve: list[dict[str, float]] = field(default_factory=list)
    speed: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, float] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


# --- data


@dataclass(frozen=True)
class Query:
    kind: str
    answer: int  # index into the indexed set (gallery pictures come first)
    image: bytes


@dataclass
class EvalData:
    indexed: list[datasets.Picture]
    gallery_size: int
    queries: list[Query]
    fashion_gallery: np.ndarray | None
    fashion_gallery_labels: np.ndarray | None
    fashion_queries: np.ndarray | None
    fashion_query_labels: np.ndarray | None
    backdrops: list[Any]


def _small_pictures() -> list[datasets.Picture]:
    return [
        datasets.Picture(name, name, "eval", datasets.to_jpeg(image))
        for name, image in datasets.skimage_pictures()
    ]


def build_data(config: EvalConfig, say: Say) -> EvalData:
    """The sets: gallery, distractors, edited queries, Fashion-MNIST samples."""
    if config.small:
        pictures = _small_pictures()
        sets = datasets.PhotoSets(
            pictures[: config.gallery],
            pictures[config.gallery : config.gallery + config.distractors],
            [],
        )
    else:
        say("building the photo sets (cached after the first run)")
        pictures = datasets.cached_pictures(config.data_dir)
        sets = datasets.photo_sets(pictures, config.gallery, config.distractors, config.seed)
    # Unrelated pictures for banners and screenshots (none in small sets: a plain backdrop).
    backdrops = [p.image() for p in sets.train[:60]]
    queries = []
    for name in config.kinds:
        kind = edits.KINDS_BY_NAME[name]
        for index, picture in enumerate(sets.gallery):
            data = edits.edited_query(picture.image(), kind, config.seed, index, backdrops)
            queries.append(Query(name, index, data))
    say(
        f"  {len(sets.gallery)} gallery pictures, {len(sets.distractors)} distractors,"
        f" {len(queries)} edited queries in {len(config.kinds)} kinds"
    )
    fashion: list[np.ndarray | None] = [None, None, None, None]
    if config.fashion_gallery and config.fashion_queries:
        train, train_labels = datasets.load_fashion("train")
        test, test_labels = datasets.load_fashion("test")
        rng = np.random.default_rng(config.seed)
        g = np.sort(rng.choice(len(train), config.fashion_gallery, replace=False))
        q = np.sort(rng.choice(len(test), config.fashion_queries, replace=False))
        fashion = [train[g], train_labels[g], test[q], test_labels[q]]
    return EvalData(sets.indexed, len(sets.gallery), queries, *fashion, backdrops=backdrops)


# --- talking to the Embedder


class EmbedderProbe:
    """A gRPC client of one Embedder, for bulk embedding and speed probes."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(
            address,
            options=[("grpc.max_receive_message_length", 256 << 20),
                     ("grpc.max_send_message_length", 256 << 20)],
        )  # fmt: skip
        self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)
        self.model = self._stub.GetModel(embedder_pb2.GetModelRequest(), timeout=60)

    def close(self) -> None:
        self._channel.close()

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        reply = self._stub.Embed(embedder_pb2.EmbedRequest(images=list(images)), timeout=600)
        return np.array([e.vector for e in reply.embeddings], dtype=np.float32)

    def embed_all(self, images: Sequence[bytes], batch: int, concurrency: int) -> np.ndarray:
        """Every image's vector, in order (batches of `batch`, `concurrency` calls in flight)."""
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        with ThreadPoolExecutor(concurrency) as pool:
            parts = list(pool.map(self.embed, chunks))
        return np.concatenate(parts) if parts else np.zeros((0, self.model.dimension), np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model.model,
            "fingerprint": self.model.fingerprint,
            "dimension": self.model.dimension,
            "descriptor": self.model.descriptor,
            "device": self.model.device,
        }


def embed_sets(
    probe: EmbedderProbe, data: EvalData, config: EvalConfig, say: Say, label: str
) -> Vectors:
    started = time.perf_counter()
    vectors = Vectors(
        probe.embed_all([p.jpeg for p in data.indexed], config.batch_size, config.concurrency),
        probe.embed_all([q.image for q in data.queries], config.batch_size, config.concurrency),
    )
    if data.fashion_gallery is not None and data.fashion_queries is not None:
        vectors.fashion_gallery = probe.embed_all(
            [datasets.png(a) for a in data.fashion_gallery], config.batch_size, config.concurrency
        )
        vectors.fashion_queries = probe.embed_all(
            [datasets.png(a) for a in data.fashion_queries], config.batch_size, config.concurrency
        )
    say(f"  {label}: embedded in {time.perf_counter() - started:.0f} s")
    return vectors


# --- metrics over vectors


def _per_kind(ranks: Sequence[int | None], queries: Sequence[Query]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[int | None]] = {}
    for rank, query in zip(ranks, queries, strict=True):
        by_kind.setdefault(query.kind, []).append(rank)
    table = {kind: _scores(values) for kind, values in by_kind.items()}
    for group, kinds in (("easy", edits.EASY), ("hard", edits.HARD)):
        names = [k.name for k in kinds if k.name in by_kind]
        if names:
            table[group] = {
                metric: float(np.mean([table[name][metric] for name in names]))
                for metric in table[names[0]]
            }
    table["all"] = _scores(list(ranks))
    return table


def _scores(ranks: Sequence[int | None]) -> dict[str, float]:
    scores = {f"recall@{k}": recall_at_k(ranks, k) for k in RECALL_KS}
    scores["map"] = mean_reciprocal_rank(ranks)
    scores["queries"] = float(len(ranks))
    return scores


def exact_ranks(
    indexed: np.ndarray, queries: np.ndarray, answers: Sequence[int]
) -> list[int | None]:
    top = exact_top_k(queries, indexed, SEARCH_TOP_K)
    return [rank_of(row, answer) for row, answer in zip(top, answers, strict=True)]


def project(vectors: np.ndarray, mean: np.ndarray, matrix: np.ndarray, dim: int) -> np.ndarray:
    """The shipped projection applied offline: L2((x - mean) @ matrix[:, :dim])."""
    projected = (vectors - mean) @ matrix[:, :dim]
    return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


def fashion_scores(vectors: Vectors, data: EvalData) -> dict[str, float]:
    if vectors.fashion_gallery is None or vectors.fashion_queries is None:
        raise ValueError("no Fashion-MNIST vectors")
    if data.fashion_gallery_labels is None or data.fashion_query_labels is None:
        raise ValueError("no Fashion-MNIST labels")
    hits = exact_top_k(vectors.fashion_queries, vectors.fashion_gallery, 100)
    return class_retrieval(hits, data.fashion_query_labels, data.fashion_gallery_labels, 100, 10)


def raw_pixel_vectors(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


# --- end to end


def insert_indexed(client: Client, data: EvalData, say: Say) -> float:
    """Insert gallery and distractors through Search; returns images per second."""
    items = [
        ItemInput(image=p.jpeg, id=f"item-{i:05d}", uri=p.name, labels={"set": "eval"})
        for i, p in enumerate(data.indexed)
    ]
    started = time.perf_counter()
    outcomes = client.insert(items, batch_size=32)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(
            f"{len(failed)} inserts failed, e.g. {failed[0].id}: {failed[0].message}"
        )
    say(f"  inserted {len(items)} pictures in {elapsed:.0f} s ({len(items) / elapsed:.1f}/s)")
    return len(items) / elapsed


def search_end_to_end(
    client: Client, data: EvalData, concurrency: int
) -> tuple[list[int | None], list[float], list[list[str]]]:
    """Every query through Search.Search: (rank of the answer, latency ms, top-3 ids)."""

    def one(query: Query) -> tuple[int | None, float, list[str]]:
        started = time.perf_counter()
        result = client.search(query.image, k=SEARCH_TOP_K)
        latency = (time.perf_counter() - started) * 1000
        ids = [hit.id for hit in result.hits]
        return rank_of(ids, f"item-{query.answer:05d}"), latency, ids[:3]

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, data.queries))
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


# --- speed


def probe_speed(
    probes: dict[str, EmbedderProbe], images: Sequence[bytes], rounds: int, batch: int
) -> dict[str, dict[str, float]]:
    """Interleaved: single-image latency p50 and bulk images/s of each Embedder."""
    latency: dict[str, list[float]] = {name: [] for name in probes}
    rate: dict[str, list[float]] = {name: [] for name in probes}
    for probe in probes.values():
        probe.embed(images[:4])  # warm
    for _ in range(rounds):
        for name, probe in probes.items():
            for image in images[:20]:
                started = time.perf_counter()
                probe.embed([image])
                latency[name].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            probe.embed_all(images[: batch * 4], batch, 2)
            rate[name].append(batch * 4 / (time.perf_counter() - started))
    return {
        name: {
            "embed_latency_p50_ms": statistics.median(latency[name]),
            "embed_images_per_s": statistics.median(rate[name]),
        }
        for name in probes
    }


# --- the whole run


@dataclass
class Services:
    """Addresses of what the evaluation talks to (started by it, or given)."""

    search: str
    embedder: str
    raw_embedder: str | None = None
    baseline_embedder: str | None = None


def _descriptor_label(model: dict[str, Any]) -> str:
    return f"{model['model']} ({model['dimension']}-d)"


def _projection_of(model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and matrix of the projection the live Embedder applies (None without one)."""
    from imgsearch_embedder.projection import BUILTIN_PROJECTION, load_projection

    descriptor = json.loads(model["descriptor"])
    digest = descriptor.get("projection_sha256")
    if not digest:
        return None
    projection = load_projection(BUILTIN_PROJECTION)
    if projection.sha256 != digest:
        raise RuntimeError(
            f"the Embedder applies projection {digest[:12]} but this checkout ships"
            f" {projection.sha256[:12]}: run the evaluation from the Embedder's own version"
        )
    return projection.mean, projection.matrix


def _projected(raw: Vectors, projection: tuple[np.ndarray, np.ndarray] | None, dim: int) -> Vectors:
    if projection is None or dim == raw.indexed.shape[1]:
        return raw
    mean, matrix = projection
    return Vectors(
        *(
            project(v, mean, matrix, dim) if v is not None else None
            for v in (raw.indexed, raw.queries, raw.fashion_gallery, raw.fashion_queries)
        )
    )


def _dimension_curve(
    report: Report,
    data: EvalData,
    raw: Vectors,
    projection: tuple[np.ndarray, np.ndarray] | None,
    say: Say,
) -> None:
    """Exact search without the projection and with it truncated to each dimension."""
    answers = [q.answer for q in data.queries]
    trunk_dim = raw.indexed.shape[1]
    dims = [trunk_dim]
    if projection is not None:
        dims += [d for d in (1024, 512, 256, 128, 64) if d <= projection[1].shape[1]]
    for dim in dims:
        vectors = _projected(raw, projection, dim)
        table = _per_kind(exact_ranks(vectors.indexed, vectors.queries, answers), data.queries)
        point = {
            "dimension": float(dim),
            "projected": float(dim != trunk_dim),
            "easy_recall@1": table.get("easy", {}).get("recall@1", float("nan")),
            "hard_recall@1": table.get("hard", {}).get("recall@1", float("nan")),
            "all_recall@1": table["all"]["recall@1"],
        }
        if vectors.fashion_gallery is not None:
            point["fashion_map@100"] = fashion_scores(vectors, data)["map@100"]
        report.dimension_curve.append(point)
        say(f"  exact, {dim}-d: " + json.dumps({k: round(v, 3) for k, v in point.items()}))


def _truncation_curve(report: Report, data: EvalData, served: Vectors, say: Say) -> None:
    """Exact search at the served dimension and, for a whitened descriptor, at its halvings.

    The projection's components are ordered, so the first d components of a
    served vector, re-normalised, are exactly the d-dimensional descriptor.
    """
    answers = [q.answer for q in data.queries]
    served_dim = served.indexed.shape[1]
    projected = bool(json.loads(report.model["descriptor"]).get("projection_sha256"))
    dims = [served_dim]
    while projected and dims[-1] // 2 >= 64:
        dims.append(dims[-1] // 2)
    for dim in dims:

        def cut(v: np.ndarray | None, dim: int = dim) -> np.ndarray | None:
            if v is None:
                return None
            head = v[:, :dim]
            return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)

        vectors = Vectors(
            *(cut(v) for v in (served.indexed, served.queries, served.fashion_gallery,
                               served.fashion_queries))
        )  # fmt: skip
        table = _per_kind(exact_ranks(vectors.indexed, vectors.queries, answers), data.queries)
        point = {
            "dimension": float(dim),
            "projected": float(projected),
            "easy_recall@1": table.get("easy", {}).get("recall@1", float("nan")),
            "hard_recall@1": table.get("hard", {}).get("recall@1", float("nan")),
            "all_recall@1": table["all"]["recall@1"],
        }
        if vectors.fashion_gallery is not None:
            point["fashion_map@100"] = fashion_scores(vectors, data)["map@100"]
        report.dimension_curve.append(point)


def _default_vectors(
    report: Report,
    probe: EmbedderProbe,
    services: Services,
    data: EvalData,
    config: EvalConfig,
    say: Say,
    probes: dict[str, EmbedderProbe],
) -> Vectors:
    """The default descriptor's vectors of every set, for exact search.

    With an Embedder of the unprojected descriptor, everything is embedded
    once by it and projected offline (also giving the dimension curve); a
    sample embedded by the live default Embedder checks that both agree.
    """
    if services.raw_embedder is None or not config.dimension_curve:
        return embed_sets(probe, data, config, say, report.model["model"])
    raw_probe = EmbedderProbe(services.raw_embedder)
    probes["raw"] = raw_probe
    say(f"exact search: the unprojected descriptor ({raw_probe.model.model})")
    raw = embed_sets(raw_probe, data, config, say, "unprojected")
    projection = _projection_of(report.model)
    _dimension_curve(report, data, raw, projection, say)
    served = _projected(raw, projection, int(report.model["dimension"]))
    sample = [p.jpeg for p in data.indexed[:32]]
    live = probe.embed_all(sample, config.batch_size, 1)
    report.consistency = {
        "max_abs_difference": float(np.abs(live - served.indexed[: len(sample)]).max()),
        "images": float(len(sample)),
    }
    return served


def evaluate(
    config: EvalConfig, services: Services, say: Say = print, data: EvalData | None = None
) -> Report:
    """Measure everything against running services (see the module docstring)."""
    started = time.perf_counter()
    data = data or build_data(config, say)
    probe = EmbedderProbe(services.embedder)
    report = Report(
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()},
        sets={
            "gallery": data.gallery_size,
            "distractors": len(data.indexed) - data.gallery_size,
            "queries": len(data.queries),
            "fashion_gallery": 0 if data.fashion_gallery is None else len(data.fashion_gallery),
            "fashion_queries": 0 if data.fashion_queries is None else len(data.fashion_queries),
        },
        model=probe.describe(),
        baseline_model=None,
        kinds=[
            {"name": k.name, "group": k.group, "description": k.description}
            for k in edits.ALL_KINDS
            if k.name in config.kinds
        ],
    )
    label = _descriptor_label(report.model)
    answers = [q.answer for q in data.queries]
    probes = {"default": probe}
    try:
        pool = ThreadPoolExecutor(3, thread_name_prefix="eval")
        # Three independent streams at once, so they share the machine alike: the
        # previous default's vectors, the default's exact-search vectors, and
        # Insert then every query through Search.
        baseline_job = None
        if services.baseline_embedder is not None:
            baseline = EmbedderProbe(services.baseline_embedder)
            probes["baseline"] = baseline
            report.baseline_model = baseline.describe()
            baseline_job = pool.submit(embed_sets, baseline, data, config, say, "previous default")
        served_job = pool.submit(
            _default_vectors, report, probe, services, data, config, say, probes
        )
        say(f"end to end through Search at {services.search} ({label})")
        with Client(services.search, timeout=600) as client:
            insert_rate = insert_indexed(client, data, say)
            ranks, latencies, top3 = search_end_to_end(client, data, config.concurrency)
        say("  every query searched end to end")
        report.retrieval[label] = {"end_to_end": _per_kind(ranks, data.queries)}
        report.speed["insert_images_per_s"] = insert_rate
        report.speed["search_latency_p50_ms"] = statistics.median(latencies)
        report.misses = [
            {"kind": q.kind, "picture": data.indexed[q.answer].name, "rank": r, "top": t}
            for q, r, t in zip(data.queries, ranks, top3, strict=True)
            if r != 1
        ]
        served = served_job.result()
        report.retrieval[label]["exact"] = _per_kind(
            exact_ranks(served.indexed, served.queries, answers), data.queries
        )
        if not report.dimension_curve:
            _truncation_curve(report, data, served, say)
        if served.fashion_gallery is not None:
            report.fashion[label] = fashion_scores(served, data)
        if baseline_job is not None and report.baseline_model is not None:
            vectors = baseline_job.result()
            base_label = _descriptor_label(report.baseline_model) + ", previous default"
            report.retrieval[base_label] = {
                "exact": _per_kind(
                    exact_ranks(vectors.indexed, vectors.queries, answers), data.queries
                )
            }
            if vectors.fashion_gallery is not None:
                report.fashion[base_label] = fashion_scores(vectors, data)
        pool.shutdown()
        if data.fashion_gallery is not None and data.fashion_queries is not None:
            pixels = Vectors(
                np.zeros((0, 1)),
                np.zeros((0, 1)),
                raw_pixel_vectors(data.fashion_gallery),
                raw_pixel_vectors(data.fashion_queries),
            )
            report.fashion["raw pixels (784-d)"] = fashion_scores(pixels, data)
        if config.speed_rounds:
            say("speed: default and previous Embedders, interleaved")
            speed_probes = {k: v for k, v in probes.items() if k != "raw"}
            report.speed["embedders"] = probe_speed(
                speed_probes,
                [q.image for q in data.queries],
                config.speed_rounds,
                config.batch_size,
            )
    finally:
        for each in probes.values():
            each.close()
    report.elapsed_s = time.perf_counter() - started
    return report


# --- starting what the evaluation needs


_EMBEDDER_READY = r"embedder listening on (\S+):(\d+)"


def _start_embedder(name: str, env: dict[str, str], log_dir: Path, timeout_s: float) -> Any:
    """One more Embedder child process (for the raw and baseline descriptors)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from imgsearch.secure_stack import OPEN_EMBEDDER_ENV
    from imgsearch.stack import Child, ChildSpec

    child = Child(
        ChildSpec(
            name=name,
            argv=[sys.executable, "-m", "imgsearch_embedder"],
            env={
                # Loopback only, like the plain local stack: plaintext, no tokens.
                **OPEN_EMBEDDER_ENV,
                "EMBEDDER_HOST": "127.0.0.1",
                "EMBEDDER_PORT": "0",
                "EMBEDDER_METRICS_PORT": "0",
                "EMBEDDER_LOG_LEVEL": "WARNING",
                **env,
            },
            ready_line=_EMBEDDER_READY,
        ),
        log_dir,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while child.ready_match is None:
            if child.exit_code() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its last lines:\n{child.tail()}")
            child.wait_line(0.5)
        child.address = f"127.0.0.1:{child.ready_match.group(2)}"
        with grpc.insecure_channel(child.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return child
                if child.exit_code() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not serving; its last lines:\n{child.tail()}")
                time.sleep(0.5)
    except BaseException:
        child.stop(10)
        raise


def run_evaluation(config: EvalConfig, say: Say = print) -> Report:
    """Start the local stack and the comparison Embedders, measure, stop them all."""
    from imgsearch.stack import LocalStack, StackConfig

    data = build_data(config, say)
    stack_dir = config.data_dir / "stack"
    shutil.rmtree(stack_dir, ignore_errors=True)
    stack = LocalStack(
        StackConfig(
            data_dir=stack_dir,
            milvus=config.milvus,  # type: ignore[arg-type]
            startup_timeout_s=600,
            extra_env={
                "EMBEDDER_TORCH_THREADS": str(config.embedder_threads),
                "SEARCH_CACHE_ENABLED": "false",
                "SEARCH_COLLECTION": "evaluation",
                "SEARCH_LOG_LEVEL": "WARNING",
                "EMBEDDER_LOG_LEVEL": "WARNING",
            },
        ),
        announce=lambda message: say(f"  {message}"),
    )
    extra: list[Any] = []
    say(f"starting the local stack (Milvus {config.milvus}, Redis, Embedder, Search; cache off)")
    addresses = stack.start()
    try:
        services = Services(search=addresses.search, embedder=addresses.embedder)
        threads = {"EMBEDDER_TORCH_THREADS": str(config.embedder_threads)}
        if config.dimension_curve:
            env = {**RAW_ENV, **threads}
            extra.append(_start_embedder("embedder-raw", env, addresses.log_dir, 600))
            services.raw_embedder = extra[-1].address
        if config.baseline:
            env = {**BASELINE_ENV, **threads}
            extra.append(_start_embedder("embedder-baseline", env, addresses.log_dir, 600))
            services.baseline_embedder = extra[-1].address
        return evaluate(config, services, say, data)
    finally:
        for child in extra:
            child.stop(20)
        stack.stop()
