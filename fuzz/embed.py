"""Fuzzing the Embedder's request fields through the real servicer over loopback gRPC.

A real Embedder (EfficientNet-Lite0 weights, batcher, admission, decode pool)
serves on 127.0.0.1 in a background thread; each input becomes one Embed call:

- first byte even: the rest are the request's images, split at SEPARATOR (so
  a request may hold zero, one or many images, empty ones included);
- first byte odd: the rest are sent as the raw EmbedRequest message, so the
  message parser and every field are fuzzed as well.

Allowed answers: OK with one unit vector per image, INVALID_ARGUMENT, or
RESOURCE_EXHAUSTED (a request over the per-request limits). INTERNAL, UNKNOWN,
UNAVAILABLE, a health check that is not SERVING afterwards, a hang (`-timeout`)
or memory beyond `-rss_limit_mb` is a finding.

    python -m fuzz.embed -max_total_time=600
"""

from __future__ import annotations

import asyncio
import threading

import atheris

# Our modules only: Pillow's are covered by fuzz.decode, and instrumenting them
# here would slow each call (a forward pass already) several times over.
with atheris.instrument_imports(include=["imgsearch", "imgsearch_embedder"]):
    from imgsearch_embedder.server import EmbedderServer
    from imgsearch_embedder.settings import EmbedderSettings

# The rest is imported after the instrumented modules, uninstrumented.
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fuzz.harness import run
from fuzz.seeds import MAX_LEN, decode_seeds
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc

SEPARATOR = b"\x00IMG\x00"
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
SETTINGS = EmbedderSettings(
    host="127.0.0.1",
    port=0,
    tls_mode="plaintext",  # loopback only; TLS and tokens are tests/security's subject
    auth_mode="none",
    metrics_port=None,
    log_level="WARNING",
    max_batch_size=4,
    max_images_per_request=8,
    max_request_bytes=1024 * 1024,
    max_pending_bytes=4 * 1024 * 1024,
    max_image_pixels=4_000_000,
    max_decoding_pixels=4_000_000,
)


class ServerThread:
    """An EmbedderServer running on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, name="embedder", daemon=True).start()
        if not self._ready.wait(300):
            raise RuntimeError("the Embedder did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = EmbedderServer(SETTINGS)
        self._loop.run_until_complete(server.start())
        self._loop.run_until_complete(server.load_model())
        self.port = server.port
        self._ready.set()
        self._loop.run_forever()


class Client:
    """Blocking stubs on one channel to the fuzzed server."""

    def __init__(self, port: int) -> None:
        channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.embed = embedder_pb2_grpc.EmbedderStub(channel).Embed
        self.raw_embed = channel.unary_unary("/imgsearch.v1.Embedder/Embed")
        self.health = health_pb2_grpc.HealthStub(channel).Check
        model = embedder_pb2_grpc.EmbedderStub(channel).GetModel
        self.dimension = model(embedder_pb2.GetModelRequest(), timeout=60).dimension


CLIENT: Client | None = None


def _check_reply(reply: embedder_pb2.EmbedResponse, images: int, dimension: int) -> None:
    if len(reply.embeddings) != images:
        raise AssertionError(f"{len(reply.embeddings)} embeddings for {images} images")
    for embedding in reply.embeddings:
        vector = np.asarray(embedding.vector, dtype=np.float32)
        if vector.shape != (dimension,) or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            raise AssertionError(f"not a unit vector: shape {vector.shape}")


def test_one_input(data: bytes) -> None:
    assert CLIENT is not None
    try:
        if data[:1] and data[0] % 2 == 1:
            reply_bytes = CLIENT.raw_embed(data[1:], timeout=60)
            reply = embedder_pb2.EmbedResponse.FromString(reply_bytes)
            images = len(embedder_pb2.EmbedRequest.FromString(data[1:]).images)
        else:
            request = embedder_pb2.EmbedRequest(images=data[1:].split(SEPARATOR))
            reply, images = CLIENT.embed(request, timeout=60), len(request.images)
        _check_reply(reply, images, CLIENT.dimension)
    except grpc.RpcError as error:
        if error.code() not in ALLOWED:  # type: ignore[attr-defined]
            raise AssertionError(f"{error.code()}: {error.details()}") from None  # type: ignore[attr-defined]
    status = CLIENT.health(health_pb2.HealthCheckRequest(), timeout=10).status
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise AssertionError(f"health is {status} after the call")


# The inputs of issue 9 and one of each format: fuzz.decode covers the images in depth.
_IMAGE_SEEDS = (
    "jpeg", "mpo", "png", "png-16bit", "png-rgba", "apng", "webp", "gif-animated", "bmp",
    "tiff", "exif-xresolution-ascii-jpeg", "exif-resolution-unit-ascii-png",
    "png-iccp-compressible-1.5mb", "png-1x5000", "png-1x8400000", "tiff-float32-gray",
    "tiff-float32-rgb", "tiff-float32-non-finite", "truncated-jpeg", "empty",
)  # fmt: skip


def embed_seeds() -> dict[str, bytes]:
    """Seeds in this fuzzer's framing: single images, mixed requests, raw messages."""
    images = decode_seeds(MAX_LEN // 2)
    seeds = {f"one-{name}": b"\x00" + images[name] for name in _IMAGE_SEEDS}
    seeds["two-float-exif"] = (
        b"\x02" + images["tiff-float32-gray"] + SEPARATOR + images["exif-xresolution-ascii-jpeg"]
    )
    seeds["good-and-bad"] = b"\x04" + images["jpeg"] + SEPARATOR + b"not an image"
    seeds["nine-empty-images"] = b"\x00" + SEPARATOR * 8
    request = embedder_pb2.EmbedRequest(images=[images["jpeg"], images["png"]])
    seeds["raw-message"] = b"\x01" + request.SerializeToString()
    seeds["raw-garbage"] = b"\x01\xff\xff\xff"
    return seeds


def main() -> None:
    global CLIENT
    server = ServerThread()
    CLIENT = Client(server.port)
    # Bound: the Embedder's memory bound for these settings (docs/embedder.md):
    # ~700 MB with the model loaded, plus requests (4 MiB pending, 8 RPCs of at
    # most 1 MiB) and decoding (4 MP at ~16 bytes per pixel).
    run("embed", test_one_input, embed_seeds(), rss_limit_mb=1536, timeout_s=60, max_len=MAX_LEN)


if __name__ == "__main__":
    main()
