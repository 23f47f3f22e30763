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
from imgsearch.evaluation.records import EvalData, Vectors
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
    """Every set's vectors from one Embedder."""
    started = time.perf_counter()
    batch, concurrency = config.batch_size, config.concurrency
    vectors = Vectors(
        probe.embed_all([p.jpeg for p in data.indexed], batch, concurrency),
        probe.embed_all([q.image for q in data.queries], batch, concurrency),
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
