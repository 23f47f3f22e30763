"""The rendered Redis configuration and probe, run for real against redis-server.

The manifests' `redis.conf`, command line and readiness probe are taken from
the rendered cpu overlay and used as they are, only with the port and data
directory moved to a free port and a temporary directory: the config must
parse, the password must be enforced, memory must be bounded with LRU
eviction, and the probe must tell a right password from a wrong one (redis-cli
exits 0 even on an authentication error, so the probe has to compare output).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.fixtures.processes import ChildProcess, child_process, free_port
from tests.k8s.manifests import Rendered

PASSWORD = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def redis_deployment(rendered_overlays: dict[str, Rendered]) -> tuple[Rendered, dict]:
    rendered = rendered_overlays["cpu"]
    return rendered, rendered.must("Deployment", "redis")


@pytest.fixture(scope="module")
def manifest_redis(
    redis_deployment: tuple[Rendered, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ChildProcess, int]]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make setup`")
    rendered, deployment = redis_deployment
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    conf = rendered.config_map_data(config_map)["redis.conf"]
    conf = re.sub(r"(?m)^port .*$", f"port {port}", conf)
    conf = re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", conf)
    conf = re.sub(r"(?m)^dir .*$", f"dir {directory}", conf)
    (directory / "redis.conf").write_text(conf)
    # The container's command line, with $(REDIS_PASSWORD) expanded as the kubelet does.
    args = [
        str(directory / "redis.conf") if arg == "/etc/redis/redis.conf" else arg
        for arg in container["args"]
    ]
    args = [arg.replace("$(REDIS_PASSWORD)", PASSWORD) for arg in args]
    assert container["command"] == ["redis-server"]
    with child_process("redis-from-manifest", [server, *args]) as child:
        child.wait_for_line(r"Ready to accept connections", timeout=30)
        yield child, port


def _cli(port: int, *command: str, password: str | None = PASSWORD) -> str:
    env = {**os.environ}
    env.pop("REDISCLI_AUTH", None)
    if password is not None:
        env["REDISCLI_AUTH"] = password
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def test_password_is_required(manifest_redis: tuple[ChildProcess, int]) -> None:
    _, port = manifest_redis
    assert "NOAUTH" in _cli(port, "GET", "k", password=None)
    assert _cli(port, "PING") == "PONG"


def test_memory_is_bounded_with_lru_eviction_and_nothing_persists(
    manifest_redis: tuple[ChildProcess, int],
) -> None:
    _, port = manifest_redis
    memory = dict(
        line.split(":", 1) for line in _cli(port, "INFO", "memory").splitlines() if ":" in line
    )
    assert memory["maxmemory_policy"] == "allkeys-lru"
    assert int(memory["maxmemory"]) == 768 * 1024 * 1024
    persistence = dict(
        line.split(":", 1) for line in _cli(port, "INFO", "persistence").splitlines() if ":" in line
    )
    # No append-only file; `save ""` (no RDB snapshots) is checked on the config itself.
    assert persistence["aof_enabled"] == "0"


def test_dangerous_commands_are_disabled(manifest_redis: tuple[ChildProcess, int]) -> None:
    _, port = manifest_redis
    for command in (("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0")):
        assert "unknown command" in _cli(port, *command).lower(), command


def test_readiness_probe_tells_right_password_from_wrong(
    manifest_redis: tuple[ChildProcess, int], redis_deployment: tuple[Rendered, dict]
) -> None:
    _, port = manifest_redis
    _, deployment = redis_deployment
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    shell, flag, script = probe["exec"]["command"]
    assert "-h 127.0.0.1" in script
    script = script.replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {port}")

    def run(password: str) -> int:
        env = {**os.environ, "REDISCLI_AUTH": password}
        return subprocess.run([shell, flag, script], env=env, timeout=10).returncode

    assert run(PASSWORD) == 0
    assert run("wrong-password") != 0
