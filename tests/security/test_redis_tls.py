"""Search's Redis cache over TLS with a password read from a file, against a real redis-server.

Debian's redis-server is built with TLS (`--tls-port`): the server here
listens on TLS only, verifies nothing about clients but their password, and
stores only the password's SHA-256 (an ACL `#hash`), like the Kubernetes base.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from imgsearch.common.pki import write_private
from imgsearch.common.settings import ConfigurationError
from imgsearch_search.cache import CacheMetrics, QueryCache
from imgsearch_search.settings import SearchSettings
from tests.fixtures.processes import ChildProcess, free_port
from tests.security.conftest import Credentials


@pytest.fixture(scope="module")
def tls_redis(
    credentials: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    """(port, password file) of a TLS-only redis-server requiring that password."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed: run `make setup`"
    directory = tmp_path_factory.mktemp("redis-tls")
    password = secrets.token_hex(32)
    password_file = write_private(directory / "password", password + "\n")
    cert, key = credentials.server_cert("redis")
    port = free_port()
    conf = write_private(
        directory / "redis.conf",
        "\n".join(
            [
                "bind 127.0.0.1",
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {cert}",
                f"tls-key-file {key}",
                f"tls-ca-cert-file {credentials.ca_file}",
                "tls-auth-clients no",
                f"user default on #{hashlib.sha256(password.encode()).hexdigest()} ~* &* +@all",
                'save ""',
                f"dir {directory}",
            ]
        )
        + "\n",
    )
    child = ChildProcess("redis-tls", [server, str(conf)])
    try:
        child.wait_for_line(r"Ready to accept connections", timeout=30)
        yield port, password_file
    finally:
        child.stop()


def _cache(**settings: Any) -> QueryCache:
    values = {"tls_mode": "plaintext", "auth_mode": "none", "redis_timeout_s": 2.0, **settings}
    return QueryCache(
        SearchSettings(**values), "test|tls", "model", CacheMetrics(CollectorRegistry())
    )


async def _round_trip(cache: QueryCache) -> bytes | None:
    await cache.invalidate()
    generation, _ = await cache.get_result("query")
    await cache.put_result(generation, "query", b"payload")
    _, cached = await cache.get_result("query")
    return cached


async def test_cache_over_tls_with_the_password_from_a_file(
    tls_redis: tuple[int, Path], credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    port, password_file = tls_redis
    cache = _cache(
        redis_url=f"rediss://127.0.0.1:{port}/0",
        redis_password_file=password_file,
        redis_tls_ca_file=credentials.ca_file,
    )
    try:
        assert await _round_trip(cache) == b"payload"
        assert cache.available
    finally:
        await cache.close()

    # The wrong password, a CA that did not sign Redis's certificate, plaintext to a TLS
    # port: the cache is skipped (Redis is an optimisation), and nothing secret is logged.
    wrong = write_private(password_file.parent / "wrong", "not-the-password\n")
    failing = [
        {"redis_url": f"rediss://127.0.0.1:{port}/0", "redis_password_file": wrong,
         "redis_tls_ca_file": credentials.ca_file},
        {"redis_url": f"rediss://127.0.0.1:{port}/0", "redis_password_file": password_file,
         "redis_tls_ca_file": credentials.foreign_ca_file},
        {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_password_file": password_file},
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        for settings in failing:
            cache = _cache(**settings)
            try:
                assert await _round_trip(cache) is None, settings
                assert not cache.available, settings
            finally:
                await cache.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert password_file.read_text().strip() not in logged


def test_password_in_two_places_or_tls_files_without_rediss_are_refused(
    tls_redis: tuple[int, Path], credentials: Credentials
) -> None:
    _, password_file = tls_redis
    with pytest.raises(ConfigurationError, match="keep the password in the file only"):
        _cache(redis_url="rediss://:inline@127.0.0.1:1/0", redis_password_file=password_file)
    with pytest.raises(ConfigurationError, match="not rediss://"):
        _cache(redis_url="redis://127.0.0.1:1/0", redis_tls_ca_file=credentials.ca_file)
    with pytest.raises(ConfigurationError, match="cannot read Redis password file"):
        _cache(redis_url="redis://127.0.0.1:1/0", redis_password_file=Path("/nonexistent/pw"))
