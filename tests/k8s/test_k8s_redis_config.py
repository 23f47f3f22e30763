"""The rendered Redis configuration and probe, run for real against redis-server.

The manifests' `redis.conf`, command line and readiness probe are taken from
the rendered cpu overlay and used as they are, with only the port, the data
directory and the mount paths moved to a free port and a temporary directory;
the Secrets' files (TLS certificate, users.acl) are the ones
scripts/k8s-secrets.sh makes. The config must parse, serve TLS only, admit
Search's user with its password and nothing but PING without one (so the
probes need no secret), bound memory with LRU eviction, and refuse the
commands that would wipe or reconfigure the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.fixtures.processes import ChildProcess, child_process, free_port
from tests.k8s.manifests import REPO, Rendered


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files scripts/k8s-secrets.sh makes (its Secrets printed, not applied)."""
    directory = tmp_path_factory.mktemp("k8s-secrets") / "secrets"
    done = subprocess.run(
        [str(REPO / "scripts" / "k8s-secrets.sh"), "--print", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def redis_deployment(rendered_overlays: dict[str, Rendered]) -> tuple[Rendered, dict]:
    rendered = rendered_overlays["cpu"]
    return rendered, rendered.must("Deployment", "redis")


def _local_paths(text: str, secrets: Path, conf: Path) -> str:
    """The pod's mount paths, pointed at the files made here."""
    return (
        text.replace("/etc/redis/redis.conf", str(conf))
        .replace("/etc/redis/tls/tls.crt", str(secrets / "redis.crt"))
        .replace("/etc/redis/tls/tls.key", str(secrets / "redis.key"))
        .replace("/etc/redis/tls/ca.crt", str(secrets / "ca.crt"))
        .replace("/etc/redis/acl/users.acl", str(secrets / "users.acl"))
    )


@pytest.fixture(scope="module")
def manifest_redis(
    redis_deployment: tuple[Rendered, dict],
    secrets_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
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
    conf_path = directory / "redis.conf"
    conf = rendered.config_map_data(config_map)["redis.conf"]
    conf = re.sub(r"(?m)^tls-port .*$", f"tls-port {port}", conf)
    conf = re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", conf)
    conf = re.sub(r"(?m)^dir .*$", f"dir {directory}", conf)
    conf_path.write_text(_local_paths(conf, secrets_dir, conf_path))
    assert container["command"] == ["redis-server"]
    args = [_local_paths(arg, secrets_dir, conf_path) for arg in container["args"]]
    with child_process("redis-from-manifest", [server, *args]) as child:
        child.wait_for_line(r"Ready to accept connections", timeout=30)
        yield child, port


def _cli(port: int, secrets: Path, *command: str, user: str | None = "imgsearch") -> str:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    login: list[str] = []
    if user is not None:
        env["REDISCLI_AUTH"] = (secrets / "redis-password").read_text().strip()
        login = ["--user", user]
    done = subprocess.run(
        ["redis-cli", "--tls", "--cacert", str(secrets / "ca.crt"), "-h", "127.0.0.1",
         "-p", str(port), *login, *command],
        capture_output=True, text=True, env=env, timeout=10, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_data_needs_the_password_and_the_probe_user_may_only_ping(
    manifest_redis: tuple[ChildProcess, int], secrets_dir: Path
) -> None:
    _, port = manifest_redis
    assert _cli(port, secrets_dir, "PING", user=None) == "PONG"
    assert "NOPERM" in _cli(port, secrets_dir, "GET", "k", user=None)
    assert "NOPERM" in _cli(port, secrets_dir, "KEYS", "*", user=None)
    assert _cli(port, secrets_dir, "SET", "k", "v") == "OK"
    assert _cli(port, secrets_dir, "GET", "k") == "v"


def test_no_plaintext_port(manifest_redis: tuple[ChildProcess, int]) -> None:
    _, port = manifest_redis
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PING"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert "PONG" not in done.stdout


def test_memory_is_bounded_with_lru_eviction_and_nothing_persists(
    manifest_redis: tuple[ChildProcess, int], secrets_dir: Path
) -> None:
    _, port = manifest_redis
    memory = dict(
        line.split(":", 1)
        for line in _cli(port, secrets_dir, "INFO", "memory").splitlines()
        if ":" in line
    )
    assert memory["maxmemory_policy"] == "allkeys-lru"
    assert int(memory["maxmemory"]) == 768 * 1024 * 1024
    persistence = dict(
        line.split(":", 1)
        for line in _cli(port, secrets_dir, "INFO", "persistence").splitlines()
        if ":" in line
    )
    # No append-only file; `save ""` (no RDB snapshots) is checked on the config itself.
    assert persistence["aof_enabled"] == "0"


def test_dangerous_commands_are_disabled(
    manifest_redis: tuple[ChildProcess, int], secrets_dir: Path
) -> None:
    _, port = manifest_redis
    for command in (("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0")):
        assert "unknown command" in _cli(port, secrets_dir, *command).lower(), command


def test_probes_answer_without_a_secret(
    manifest_redis: tuple[ChildProcess, int],
    redis_deployment: tuple[Rendered, dict],
    secrets_dir: Path,
) -> None:
    _, port = manifest_redis
    _, deployment = redis_deployment
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe"):
        shell, flag, script = container[kind]["exec"]["command"]
        assert "-h 127.0.0.1" in script
        script = _local_paths(script, secrets_dir, Path("/nonexistent"))
        script = script.replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {port}")
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        assert subprocess.run([shell, flag, script], env=env, timeout=10).returncode == 0, kind
        # Control: the same probe against a port where nothing listens fails.
        dead = script.replace(f"-p {port}", f"-p {free_port()}")
        assert subprocess.run([shell, flag, dead], env=env, timeout=10).returncode != 0


async def test_search_reaches_it_as_the_manifests_configure(
    manifest_redis: tuple[ChildProcess, int],
    rendered_overlays: dict[str, Rendered],
    secrets_dir: Path,
) -> None:
    """The Search container's Redis settings (URL, user, password file, CA) work against it."""
    from imgsearch_search.cache import CacheMetrics, QueryCache
    from imgsearch_search.settings import SearchSettings

    _, port = manifest_redis
    rendered = rendered_overlays["cpu"]
    search = rendered.must("Deployment", "search")["spec"]["template"]["spec"]["containers"][0]
    env = rendered.container_env(search)
    url = env["SEARCH_REDIS_URL"].replace(
        "redis.imgsearch.svc.cluster.local:6379", f"127.0.0.1:{port}"
    )
    settings = SearchSettings(
        tls_mode="plaintext",
        auth_mode="none",
        redis_url=url,
        redis_password_file=secrets_dir / "redis-password",
        redis_tls_ca_file=secrets_dir / "ca.crt",
        redis_timeout_s=2.0,
    )
    assert env["SEARCH_REDIS_PASSWORD_FILE"] == "/etc/imgsearch/redis/password"
    cache = QueryCache(settings, "k8s|test", "model", CacheMetrics(CollectorRegistry()))
    try:
        await cache.invalidate()
        generation, _ = await cache.get_result("q")
        await cache.put_result(generation, "q", b"hit")
        assert (await cache.get_result("q"))[1] == b"hit"
    finally:
        await cache.close()
