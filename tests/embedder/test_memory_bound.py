"""The Embedder's memory stays under its stated bound whatever arrives (docs/embedder.md).

A real Embedder process, with limits scaled down so that the test is quick, gets
the worst we know: extreme strips, images at the pixel limit in the costliest
modes (RGBA, 16-bit, float), floods of near-limit requests beyond its RPC cap,
and many concurrent requests. Its peak resident memory (VmHWM) must stay under
its RSS once warm plus `EmbedderSettings.memory_bound_above_base()`.
"""

from __future__ import annotations

import asyncio
import collections
import os

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from imgsearch.common.resources import peak_rss_bytes, rss_bytes
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.settings import EmbedderSettings
from tests.embedder import odd_images
from tests.fixtures.embedder import LISTENING
from tests.fixtures.processes import PYTHON, ChildProcess

MiB = 1024 * 1024
LIMITS = {
    "max_request_bytes": 8 * MiB,
    "max_pending_bytes": 32 * MiB,
    "max_concurrent_rpcs": 8,
    "max_image_pixels": 8_000_000,
    "max_decoding_pixels": 8_000_000,
    "decode_workers": 2,
    "max_batch_size": 4,
    "queue_size": 64,
    "max_images_per_request": 64,
}


def _costly_images() -> list[bytes]:
    """Images at the limits, in the modes that cost the most memory to decode."""
    encode = odd_images.encode
    return [
        odd_images.strip_image("png-1x5000"),  # grew the old Embedder by 1.3 GiB
        odd_images.strip_image("png-3x200000-rgba"),
        encode(Image.new("RGBA", (4000, 2000), (10, 200, 30, 100)), "PNG"),
        encode(Image.fromarray(np.zeros((2000, 4000), np.uint16)), "PNG"),
        encode(
            Image.fromarray(np.zeros((2000, 4000), np.float32), mode="F"),
            "TIFF",
            compression="tiff_adobe_deflate",
        ),
        odd_images.tiff(np.zeros((1400, 1900, 3), np.float32), compression="zlib"),
        encode(Image.new("RGB", (4000, 2000), (10, 20, 30)), "JPEG"),
        encode(Image.new("P", (4000, 2000), 3), "PNG", transparency=3),
    ]


async def _call(stub: embedder_pb2_grpc.EmbedderStub, images: list[bytes]) -> str:
    try:
        await stub.Embed(embedder_pb2.EmbedRequest(images=images), timeout=120)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return f"{error.code().name}: {error.details()}"
        return error.code().name
    return "OK"


async def _drive(port: int, pid: int) -> dict[str, object]:
    photo = odd_images.encode(odd_images.upright_picture(), "JPEG")
    padded = photo + os.urandom(7 * MiB)  # a valid JPEG followed by 7 MiB of trailing bytes
    options = [("grpc.max_send_message_length", 64 * MiB)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        assert await _call(stub, [photo]) == "OK"
        figures: dict[str, object] = {"base": rss_bytes(pid)}
        costly = _costly_images()
        for wave in (costly[:4], costly[4:]):  # within the RPC cap: all must be embedded
            assert await asyncio.gather(*(_call(stub, [image]) for image in wave)) == ["OK"] * 4
        flood = await asyncio.gather(*(_call(stub, [padded]) for _ in range(40)))
        many = await asyncio.gather(*(_call(stub, [photo] * 8) for _ in range(30)))
        mixed = await asyncio.gather(*(_call(stub, [image, padded]) for image in costly[2:6]))
        figures["codes"] = collections.Counter([*flood, *many, *mixed])
        health = health_pb2_grpc.HealthStub(channel)
        status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    return figures


def test_peak_rss_stays_under_the_stated_bound() -> None:
    settings = EmbedderSettings(**LIMITS)  # type: ignore[arg-type]
    env = {f"EMBEDDER_{name.upper()}": str(value) for name, value in LIMITS.items()}
    env |= {
        "EMBEDDER_HOST": "127.0.0.1",
        "EMBEDDER_PORT": "0",
        "EMBEDDER_METRICS_PORT": "0",
        "EMBEDDER_LOG_LEVEL": "WARNING",
    }
    child = ChildProcess("embedder", [PYTHON, "-m", "imgsearch_embedder"], env)
    try:
        port = int(child.wait_for_line(LISTENING, timeout=300)["port"])
        figures = asyncio.run(_drive(port, child.proc.pid))
        peak = peak_rss_bytes(child.proc.pid)
    finally:
        child.stop()
    base = int(figures["base"])  # type: ignore[call-overload]
    bound = base + settings.memory_bound_above_base()
    codes = figures["codes"]
    report = f"base {base / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB"
    print(report, dict(codes))  # type: ignore[call-overload]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes  # type: ignore[arg-type]
    assert codes["RESOURCE_EXHAUSTED"], codes  # type: ignore[index]
    assert codes["OK"], codes  # type: ignore[index]
    assert peak <= bound, report
