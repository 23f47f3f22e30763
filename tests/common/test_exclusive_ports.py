"""Every server we build refuses a port already in use, with one line naming it.

gRPC turns SO_REUSEPORT on by default, so a second server on a taken port
would start and share it, splitting clients between two processes. These
tests hold a port with a real server (gRPC, or a plain listening socket) and
start ours on it: in-process for the factory, the probe and /metrics, and as
real processes for Search and the web gateway.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import grpc
import pytest
from prometheus_client import CollectorRegistry

from imgsearch.common.grpc_runtime import HealthState, create_grpc_server
from imgsearch.common.metrics import start_metrics_server
from imgsearch.common.server_security import HealthProbeServer
from imgsearch.common.settings import ConfigurationError
from imgsearch.secure_stack import OPEN_SEARCH_ENV


@pytest.fixture
async def taken_port():
    """A port held by a running gRPC server with gRPC's default options (SO_REUSEPORT on)."""
    holder = grpc.aio.server()
    port = holder.add_insecure_port("127.0.0.1:0")
    await holder.start()
    yield port
    await holder.stop(0)


@pytest.fixture
def listening_socket():
    """A port held by a plain listening socket (another program, not gRPC)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_grpc_factory_refuses_a_port_held_by_another_grpc_server(taken_port):
    with pytest.raises(ConfigurationError) as caught:
        create_grpc_server(f"127.0.0.1:{taken_port}", [], HealthState([]))
    message = str(caught.value)
    assert f"127.0.0.1:{taken_port}" in message
    assert "already in use" in message
    assert "\n" not in message


async def test_grpc_factory_refuses_a_port_held_by_a_plain_socket(listening_socket):
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{listening_socket}.*in use"):
        create_grpc_server(f"127.0.0.1:{listening_socket}", [], HealthState([]))


async def test_grpc_factory_names_an_address_it_cannot_bind():
    with pytest.raises(ConfigurationError, match=r"192\.0\.2\.1:0"):
        create_grpc_server("192.0.2.1:0", [], HealthState([]))


async def test_health_probe_port_refuses_a_taken_port(taken_port):
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{taken_port} \\(health probe\\)"):
        HealthProbeServer(f"127.0.0.1:{taken_port}", HealthState([]))


def test_metrics_port_refuses_a_taken_port(listening_socket):
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{listening_socket} \\(metrics\\)"):
        start_metrics_server(CollectorRegistry(), "127.0.0.1", listening_socket)


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("which", ["SEARCH_PORT", "SEARCH_METRICS_PORT"])
def test_search_process_exits_at_once_on_a_taken_port(taken_port, which):
    env = {
        **OPEN_SEARCH_ENV,
        "SEARCH_HOST": "127.0.0.1",
        "SEARCH_PORT": "0",
        "SEARCH_METRICS_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": "0",
        # Never reached: the port check comes first.
        "SEARCH_EMBEDDER_ADDRESS": "127.0.0.1:1",
        "SEARCH_MILVUS_URI": "http://127.0.0.1:1",
        "SEARCH_REDIS_URL": "redis://127.0.0.1:1",
        which: str(taken_port),
    }
    done = _run("imgsearch_search", env)
    assert done.returncode == 2, done.stderr
    assert "listening on" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1, done.stderr
    assert f"127.0.0.1:{taken_port}" in errors[0]
    assert "Traceback" not in done.stderr


def test_web_process_exits_at_once_on_a_taken_port(listening_socket):
    done = _run(
        "imgsearch_web",
        {"WEB_HOST": "127.0.0.1", "WEB_PORT": str(listening_socket),
         "WEB_SEARCH_ADDRESS": "127.0.0.1:1"},
    )  # fmt: skip
    assert done.returncode != 0
    assert "listening on" not in done.stdout
    assert f"cannot listen on 127.0.0.1:{listening_socket}" in done.stderr
    assert "Traceback" not in done.stderr
