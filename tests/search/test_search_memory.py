"""Search's memory bound (docs/search.md, "Load shedding and memory"), held by a real process.

A Search process of its own (`python -m imgsearch_search`, on the session's
Milvus Lite server, Redis and Embedder) with small limits is flooded with more
large Inserts at once than its limits admit. Its peak resident memory
(VmHWM, reset after warm-up) must stay within the documented bound

    resident <= after start-up + 4 x (max_concurrent_rpcs + headroom) x max_message_bytes

whatever the offered load (here six times what may be received at once), and
every request must either succeed or be shed with RESOURCE_EXHAUSTED (nothing
else, no crash). The same images repeat (under new ids), so after
the first Insert their embeddings come from the cache and the flood costs the
Embedder nothing: what is measured is Search's own memory.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from imgsearch.common.grpc_runtime import PROBE_HEADROOM_RPCS
from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import RedisServer
from tests.fixtures.embedder import EmbedderProcess
from tests.fixtures.processes import PYTHON, ChildProcess

pytestmark = pytest.mark.slow

MIB = 1 << 20
MAX_CONCURRENT_RPCS = 4
MAX_MESSAGE_BYTES = 6 * MIB
INSERT_BYTES_IN_FLIGHT = 8 * MIB
# What the docs state: each request being received or processed costs up to ~4x its size.
COST_PER_REQUEST_BYTE = 4
RECEIVED_AT_ONCE = MAX_CONCURRENT_RPCS + PROBE_HEADROOM_RPCS  # calls gRPC admits at once
BOUND_BYTES = COST_PER_REQUEST_BYTE * RECEIVED_AT_ONCE * MAX_MESSAGE_BYTES
LISTENING = r"search listening on (?P<host>[^\s:]+):(?P<port>\d+)"


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux `clear_refs`)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _noise_jpeg(seed: int, side: int = 640) -> bytes:
    """A JPEG that barely compresses (about 0.3 MB), so requests are large per image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def search_process(
    milvus_lite_uri: str, redis_server: RedisServer, embedder_process: EmbedderProcess
) -> Iterator[tuple[ChildProcess, str]]:
    if not embedder_process.running:  # a fault test may have left it down
        embedder_process.restart()
    if not redis_server.running:
        redis_server.restart()
    env = {
        "SEARCH_HOST": "127.0.0.1",
        "SEARCH_PORT": "0",
        "SEARCH_METRICS_PORT": "0",
        "SEARCH_LOG_LEVEL": "WARNING",
        "SEARCH_MILVUS_URI": milvus_lite_uri,
        "SEARCH_COLLECTION": f"memory_{uuid.uuid4().hex[:12]}",
        "SEARCH_REDIS_URL": redis_server.url,
        "SEARCH_EMBEDDER_ADDRESS": embedder_process.address,
        "SEARCH_MAX_CONCURRENT_RPCS": str(MAX_CONCURRENT_RPCS),
        "SEARCH_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "SEARCH_INSERT_BYTES_IN_FLIGHT": str(INSERT_BYTES_IN_FLIGHT),
    }
    child = ChildProcess("search", [PYTHON, "-m", "imgsearch_search"], env)
    try:
        match = child.wait_for_line(LISTENING, timeout=120)
        yield child, f"{match['host']}:{match['port']}"
    finally:
        child.stop()


async def test_a_flood_of_large_inserts_stays_within_the_stated_memory_bound(
    search_process: tuple[ChildProcess, str],
) -> None:
    child, address = search_process
    pid = child.proc.pid
    images = [_noise_jpeg(seed) for seed in range(4)]
    per_request = (MAX_MESSAGE_BYTES - 64 * 1024) // len(images[0])

    def request(tag: str) -> search_pb2.InsertRequest:
        items = [
            search_pb2.Item(id=f"{tag}-{index}", image=images[index % len(images)])
            for index in range(per_request)
        ]
        return search_pb2.InsertRequest(items=items)

    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    ) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        await channel_ready(stub)
        # Warm-up: the embeddings get cached, every code path runs once.
        warm = await stub.Insert(request("warm"), timeout=120)
        assert warm.inserted == per_request
        _reset_peak(pid)
        start_kib = _status_kib(pid, "VmRSS")

        codes: list[grpc.StatusCode] = []

        async def insert(tag: str) -> None:
            try:
                reply = await stub.Insert(request(tag), timeout=120)
                assert reply.inserted == per_request
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())

        # Six times what may be received at once: more than the bound if refused
        # requests were kept (they were, until _forget_frames).
        flood = 6 * RECEIVED_AT_ONCE
        await asyncio.gather(*(insert(f"flood{round_}") for round_ in range(flood)))
        peak_kib = _status_kib(pid, "VmHWM")

    assert child.proc.poll() is None, child.tail()
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 1
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, "the flood was not over the limits"
    growth = (peak_kib - start_kib) * 1024
    offered = flood * per_request * len(images[0])
    print(
        f"memory: start {start_kib // 1024} MiB, peak {peak_kib // 1024} MiB, growth"
        f" {growth / MIB:.0f} MiB for {offered / MIB:.0f} MiB offered at once"
        f" ({codes.count(grpc.StatusCode.OK)} admitted), bound {BOUND_BYTES / MIB:.0f} MiB"
    )
    assert growth <= BOUND_BYTES


async def channel_ready(stub: search_pb2_grpc.SearchStub) -> None:
    """Wait until Search answers (it reaches the Embedder and Milvus after it listens)."""
    for _ in range(600):
        try:
            await stub.Stats(search_pb2.StatsRequest(), timeout=5)
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("Search did not become ready")
