"""Talking to an Embedder directly: bulk embedding of the sets, and the speed probe."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from imgsearch.evaluation import datasets
from imgsearch.evaluation.config import EvalConfig, Say
from imgsearch.evaluation.records import EvalData, QueryViews, Vectors
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc


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

    def embed_with_views(
        self, images: Sequence[bytes]
    ) -> tuple[np.ndarray, list[list[tuple[str, list[float]]]]]:
        """Each image's vector and the views found in it (EmbedRequest.query_views), in order."""
        request = embedder_pb2.EmbedRequest(images=list(images), query_views=True)
        reply = self._stub.Embed(request, timeout=600)
        vectors = np.array([e.vector for e in reply.embeddings], dtype=np.float32)
        views = [[(v.kind, list(v.vector)) for v in e.views] for e in reply.embeddings]
        return vectors, views

    def embed_all(self, images: Sequence[bytes], batch: int, concurrency: int) -> np.ndarray:
        """Every image's vector, in order (batches of `batch`, `concurrency` calls in flight)."""
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        with ThreadPoolExecutor(concurrency) as pool:
            parts = list(pool.map(self.embed, chunks))
        return np.concatenate(parts) if parts else np.zeros((0, self.model.dimension), np.float32)

    def embed_queries(
        self, images: Sequence[bytes], batch: int, concurrency: int
    ) -> tuple[np.ndarray, QueryViews]:
        """Every query's whole-image vector and the views found in it, as Search asks for them."""
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        with ThreadPoolExecutor(concurrency) as pool:
            parts = list(pool.map(self.embed_with_views, chunks))
        dimension = self.model.dimension
        if not parts:
            return np.zeros((0, dimension), np.float32), QueryViews.empty(dimension)
        vectors = np.concatenate([part[0] for part in parts])
        per_query = [views for part in parts for views in part[1]]
        found = [
            (index, kind, vector) for index, views in enumerate(per_query) for kind, vector in views
        ]
        if not found:
            return vectors, QueryViews.empty(dimension)
        return vectors, QueryViews(
            vectors=np.array([vector for _, _, vector in found], dtype=np.float32),
            query=np.array([index for index, _, _ in found], dtype=np.int64),
            kinds=[kind for _, kind, _ in found],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model.model,
            "fingerprint": self.model.fingerprint,
            "dimension": self.model.dimension,
            "descriptor": self.model.descriptor,
            "device": self.model.device,
        }


def embed_sets(
    probe: EmbedderProbe,
    data: EvalData,
    config: EvalConfig,
    say: Say,
    label: str,
    *,
    views: bool = False,
) -> Vectors:
    """Every set's vectors from one Embedder; with `views`, the queries' views too."""
    started = time.perf_counter()
    batch, concurrency = config.batch_size, config.concurrency
    query_images = [q.image for q in data.queries]
    query_views = None
    if views:
        queries, query_views = probe.embed_queries(query_images, batch, concurrency)
    else:
        queries = probe.embed_all(query_images, batch, concurrency)
    vectors = Vectors(
        probe.embed_all([p.jpeg for p in data.indexed], batch, concurrency),
        queries,
        query_views=query_views,
    )
    if data.fashion_gallery is not None and data.fashion_queries is not None:
        vectors.fashion_gallery = probe.embed_all(
            [datasets.png(a) for a in data.fashion_gallery], batch, concurrency
        )
        vectors.fashion_queries = probe.embed_all(
            [datasets.png(a) for a in data.fashion_queries], batch, concurrency
        )
    say(f"  {label}: embedded in {time.perf_counter() - started:.0f} s")
    return vectors


def probe_speed(
    probes: dict[str, EmbedderProbe],
    images: Sequence[bytes],
    rounds: int,
    batch: int,
    views: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """Interleaved: single-image query latency p50 and bulk images/s of each Embedder.

    The latency images are 20 spread over `images` (the queries: every edit kind).
    A query to an Embedder named in `views` asks for its views, as Search does
    (`embed_latency_p50_ms`; `embed_whole_image_latency_p50_ms` without them);
    bulk embedding never does, as Insert does not.
    """
    sample = list(images[:: max(1, len(images) // 20)][:20])
    latency: dict[str, list[float]] = {name: [] for name in probes}
    whole: dict[str, list[float]] = {name: [] for name in probes}
    rate: dict[str, list[float]] = {name: [] for name in probes}
    for probe in probes.values():
        probe.embed(sample[:4])  # warm
    for _ in range(rounds):
        for name, probe in probes.items():
            for image in sample:
                whole[name].append(_timed_ms(probe.embed, [image]))
                if name in views:
                    latency[name].append(_timed_ms(probe.embed_with_views, [image]))
            started = time.perf_counter()
            probe.embed_all(images[: batch * 4], batch, 2)
            rate[name].append(batch * 4 / (time.perf_counter() - started))
    return {
        name: {
            "embed_latency_p50_ms": statistics.median(latency[name] or whole[name]),
            "embed_whole_image_latency_p50_ms": statistics.median(whole[name]),
            "embed_images_per_s": statistics.median(rate[name]),
        }
        for name in probes
    }


def _timed_ms(call: Any, images: list[bytes]) -> float:
    started = time.perf_counter()
    call(images)
    return (time.perf_counter() - started) * 1000
