"""TLS and authentication of the real servers, in process, over loopback.

The Embedder here is the real `EmbedderServer` without its model loaded: every
check below happens before a call reaches the model (TLS handshake, then the
auth interceptor), and an authenticated call is told the model is loading,
which is how the tests see that it got past both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from imgsearch.client import Client
from imgsearch.common import errors
from imgsearch.common.grpc_runtime import HealthState, create_grpc_server
from imgsearch.common.pki import write_private
from imgsearch.common.server_security import server_security
from imgsearch.common.settings import ConfigurationError, ServerSettings
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.server import EmbedderServer
from imgsearch_search.server import SearchServer, StartupError
from imgsearch_search.settings import SearchSettings
from tests.fixtures.embedder import embedder_test_settings
from tests.fixtures.processes import PYTHON
from tests.security.conftest import Credentials

SEARCH_CLIENT = "search.client.test"
LOADING = "still loading its model"


def _channel(address: str, ca: Path | None = None, cert: tuple[Path, Path] | None = None) -> Any:
    if ca is None:
        return grpc.aio.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=cert[1].read_bytes() if cert else None,
        certificate_chain=cert[0].read_bytes() if cert else None,
    )
    return grpc.aio.secure_channel(address, credentials)


async def _get_model(channel: Any, token: str | None = None) -> grpc.StatusCode:
    """GetModel's status code; UNAVAILABLE with 'loading' means auth let the call through."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        await embedder_pb2_grpc.EmbedderStub(channel).GetModel(
            embedder_pb2.GetModelRequest(), metadata=metadata, timeout=5
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAVAILABLE and LOADING in (error.details() or ""):
            return grpc.StatusCode.OK
        return error.code()
    return grpc.StatusCode.OK


@asynccontextmanager
async def running_embedder(**settings: Any) -> AsyncIterator[EmbedderServer]:
    """A real Embedder server (model not loaded), TLS and auth on unless `settings` say otherwise.

    (The test session's environment asks for plaintext: see tests/conftest.py.)
    """
    server = EmbedderServer(
        embedder_test_settings(**{"tls_mode": "tls", "auth_mode": "enforce", **settings})
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(drain_delay_s=0, grace_s=0)


# --- certificates on disk --------------------------------------------------------------------


async def test_rotated_certificate_is_served_without_dropping_calls_in_flight(
    credentials: Credentials,
) -> None:
    cert, key = credentials.server_cert("rotating")
    settings = ServerSettings(
        tls_mode="tls", tls_cert_file=cert, tls_key_file=key, auth_mode="none"
    )
    health = HealthState([])
    security = server_security(settings, [], CollectorRegistry(), "TEST_", health)
    server, port = create_grpc_server("127.0.0.1:0", [], health, credentials=security.credentials)
    await server.start()
    await health.set_serving(True)
    address = f"localhost:{port}"
    old = _channel(address, credentials.ca_file)
    try:
        # A call in flight across the rotation: a health Watch stream on the old connection.
        watch = health_pb2_grpc.HealthStub(old).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        # Rotate to a certificate of another CA, written in place as cert-manager would.
        credentials.server_cert("rotating", ca=credentials.foreign_ca)
        await asyncio.sleep(1.2)  # the files are looked at once a second
        await _check_serving(address, credentials.foreign_ca_file)
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await _check_serving(address, credentials.ca_file)
        assert stale.value.code() == grpc.StatusCode.UNAVAILABLE

        # The old connection and its stream are still alive and get the next update.
        await health.set_serving(False)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = await health_pb2_grpc.HealthStub(old).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    finally:
        await old.close()
        await server.stop(0)


async def test_half_written_rotation_keeps_the_previous_pair(credentials: Credentials) -> None:
    cert, key = credentials.server_cert("half")
    settings = ServerSettings(
        tls_mode="tls", tls_cert_file=cert, tls_key_file=key, auth_mode="none"
    )
    health = HealthState([])
    security = server_security(settings, [], CollectorRegistry(), "TEST_", health)
    server, port = create_grpc_server("127.0.0.1:0", [], health, credentials=security.credentials)
    await server.start()
    address = f"localhost:{port}"
    try:
        fresh = credentials.foreign_ca.issue("half.test", ["localhost"])
        write_private(cert, fresh.certificate_pem)  # the new certificate, its key not yet
        await asyncio.sleep(1.2)
        await _check_serving(address, credentials.ca_file)  # still the old, complete pair
        write_private(key, fresh.key_pem)  # the rotation completes
        await asyncio.sleep(1.2)
        await _check_serving(address, credentials.foreign_ca_file)
    finally:
        await server.stop(0)


async def _check_serving(address: str, ca: Path) -> None:
    async with _channel(address, ca) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


# --- clients that do not fit the server --------------------------------------------------------


async def test_plaintext_or_untrusting_client_against_tls_fails_cleanly(
    credentials: Credentials,
) -> None:
    cert, key = credentials.server_cert("embedder-tls")
    async with running_embedder(tls_cert_file=cert, tls_key_file=key, auth_mode="none") as server:
        address = f"localhost:{server.port}"
        loop = asyncio.get_running_loop()

        def health(**options: Any) -> errors.ImgsearchError:
            with Client(address, timeout=5, **options) as client:
                try:
                    client.health()
                except errors.ImgsearchError as error:
                    return error
            raise AssertionError("the call should have failed")

        started = time.monotonic()
        plaintext = await loop.run_in_executor(None, health)
        assert isinstance(plaintext, errors.UnavailableError)
        assert "expect TLS" in plaintext.message
        assert "--tls-ca" in plaintext.message
        untrusted = await loop.run_in_executor(
            None, lambda: health(tls_ca=credentials.foreign_ca_file)
        )
        assert isinstance(untrusted, errors.UnavailableError)
        assert "not trusted" in untrusted.message
        assert time.monotonic() - started < 15, "a TLS mismatch must fail fast, not hang"
        # And the right CA works: the server answers (its health is NOT_SERVING: no model).
        with Client(address, timeout=5, tls_ca=credentials.ca_file) as client:
            assert await loop.run_in_executor(None, client.health) == "NOT_SERVING"


def test_a_token_is_never_sent_in_plaintext_to_another_host(credentials: Credentials) -> None:
    with pytest.raises(ConfigurationError, match="refusing to send the token unencrypted"):
        Client("search.example.com:50052", token=credentials.token("search"))
    # Loopback is allowed (the bytes never leave the machine).
    Client("127.0.0.1:50052", token=credentials.token("search")).close()


# --- servers that refuse to start insecurely -------------------------------------------------


async def test_servers_are_secure_by_default_and_say_what_is_missing(
    credentials: Credentials, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"EMBEDDER_TLS_CERT_FILE.*plaintext"):
        EmbedderServer(embedder_test_settings(tls_mode="tls", auth_mode="none"))
    cert, key = credentials.server_cert("defaults")
    with pytest.raises(ConfigurationError, match="EMBEDDER_AUTH_FILE"):
        EmbedderServer(
            embedder_test_settings(
                tls_mode="tls", tls_cert_file=cert, tls_key_file=key, auth_mode="enforce"
            )
        )
    other_cert, _ = credentials.server_cert("other")
    with pytest.raises(ConfigurationError, match="does not belong to the certificate"):
        EmbedderServer(
            embedder_test_settings(
                tls_mode="tls", tls_cert_file=other_cert, tls_key_file=key, auth_mode="none"
            )
        )
    # The real process, with nothing configured but the environment's defaults removed.
    env_removed = {"SEARCH_TLS_MODE": "", "SEARCH_AUTH_MODE": ""}
    done = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "imgsearch_search", "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env_without(env_removed), "SEARCH_LOG_JSON": "false"},
    )
    assert done.returncode == 2, done.stderr
    assert "SEARCH_TLS_CERT_FILE" in done.stderr
    assert "SEARCH_TLS_MODE=plaintext" in done.stderr


def _env_without(names: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


# --- the Embedder accepts only the Search service ----------------------------------------------


async def test_embedder_accepts_only_searchs_client_certificate(credentials: Credentials) -> None:
    cert, key = credentials.server_cert("embedder-mtls")
    principals = write_private(
        credentials.directory / "embedder-x509.txt", f"search embed x509:{SEARCH_CLIENT}\n"
    )
    search_identity = credentials.client_cert("search-client", SEARCH_CLIENT)
    someone_else = credentials.client_cert("other-client", "other.client.test")
    async with running_embedder(
        tls_mode="mtls",
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=credentials.ca_file,
        auth_file=principals,
    ) as server:
        address = f"localhost:{server.port}"
        async with _channel(address, credentials.ca_file, search_identity) as channel:
            assert await _get_model(channel) == grpc.StatusCode.OK
        async with _channel(address, credentials.ca_file, someone_else) as channel:
            assert await _get_model(channel) == grpc.StatusCode.UNAUTHENTICATED
        async with _channel(address, credentials.ca_file) as channel:  # no certificate
            assert await _get_model(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def token_embedder(credentials: Credentials) -> AsyncIterator[EmbedderServer]:
    """An Embedder on TLS that admits the `search-service` token (scope embed) only."""
    cert, key = credentials.server_cert("embedder-token")
    principals = credentials.principals(
        "embedder-tokens.txt", [("search-service", ["embed"]), ("reader", ["search"])]
    )
    async with running_embedder(
        tls_cert_file=cert, tls_key_file=key, auth_file=principals, metrics_port=0
    ) as server:
        yield server


async def test_embedder_tokens_need_the_embed_scope(
    token_embedder: EmbedderServer, credentials: Credentials
) -> None:
    async with _channel(f"localhost:{token_embedder.port}", credentials.ca_file) as channel:
        assert await _get_model(channel, credentials.token("search-service")) == grpc.StatusCode.OK
        assert await _get_model(channel, credentials.token("reader")) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await _get_model(channel) == grpc.StatusCode.UNAUTHENTICATED


def _search_settings(tmp_path: Path, embedder_port: int, **overrides: Any) -> SearchSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "tls_mode": "plaintext",
        "auth_mode": "none",
        "milvus_uri": str(tmp_path / "milvus.db"),
        "cache_enabled": False,
        "embedder_address": f"127.0.0.1:{embedder_port}",
        "embedder_tls_mode": "tls",
        "startup_timeout_s": 2.5,
        **overrides,
    }
    return SearchSettings(**values)


async def _startup_error(settings: SearchSettings) -> str:
    server = SearchServer(settings)
    await server.start()
    try:
        with pytest.raises(StartupError) as failed:
            await server.connect()
        return str(failed.value)
    finally:
        await server.stop(drain_delay_s=0, grace_s=0)


async def test_search_refuses_an_embedder_signed_by_another_ca(
    credentials: Credentials, tmp_path: Path
) -> None:
    cert, key = credentials.server_cert("impostor", ca=credentials.foreign_ca)
    async with running_embedder(tls_cert_file=cert, tls_key_file=key, auth_mode="none") as fake:
        settings = _search_settings(tmp_path, fake.port, embedder_tls_ca_file=credentials.ca_file)
        message = await _startup_error(settings)
    assert "CERTIFICATE_VERIFY_FAILED" in message, message


async def test_search_presents_its_token_and_stops_when_it_is_refused(
    token_embedder: EmbedderServer, credentials: Credentials, tmp_path: Path
) -> None:
    common = {"embedder_tls_ca_file": credentials.ca_file}
    right = _search_settings(
        tmp_path,
        token_embedder.port,
        embedder_token_file=credentials.token_file("search-service"),
        **common,
    )
    # Past TLS and auth: the Embedder answers that its model is loading (retried until timeout).
    assert LOADING in await _startup_error(right)
    wrong = write_private(tmp_path / "wrong.token", "imgs_not-the-right-one\n")
    started = time.monotonic()
    message = await _startup_error(
        _search_settings(tmp_path, token_embedder.port, embedder_token_file=wrong, **common)
    )
    assert "refused this Search service's credentials" in message, message
    assert "imgs_not-the-right-one" not in message
    assert time.monotonic() - started < 2.5, "a refused credential is not retried"


# --- refusals are logged and counted, never with the token -------------------------------------


async def test_refusals_are_logged_and_counted_without_the_token(
    token_embedder: EmbedderServer, credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    guess = "imgs_" + "guessed-token-value-0123456789"
    reader = credentials.token("reader")
    with caplog.at_level(logging.INFO):
        async with _channel(f"localhost:{token_embedder.port}", credentials.ca_file) as channel:
            assert await _get_model(channel, guess) == grpc.StatusCode.UNAUTHENTICATED
            assert await _get_model(channel, reader) == grpc.StatusCode.PERMISSION_DENIED
    refused = [r for r in caplog.records if r.getMessage() == "call refused"]
    assert [(r.code, r.reason) for r in refused][-2:] == [  # type: ignore[attr-defined]
        ("UNAUTHENTICATED", "unknown_token"),
        ("PERMISSION_DENIED", "missing_scope"),
    ]
    assert refused[-1].principal == "reader"  # type: ignore[attr-defined]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert guess not in logged
    assert reader not in logged
    assert token_embedder.metrics_server is not None
    port = token_embedder.metrics_server.port
    exposition = await asyncio.get_running_loop().run_in_executor(None, _fetch_metrics, port)
    method = "/imgsearch.v1.Embedder/GetModel"
    assert (
        f'grpc_server_auth_refused_total{{code="UNAUTHENTICATED",method="{method}",'
        f'reason="unknown_token"}}'
    ) in exposition
    assert f'grpc_server_handled_total{{code="PERMISSION_DENIED",method="{method}"}}' in exposition
    assert guess not in exposition
    assert reader not in exposition


def _fetch_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


async def test_principals_file_changes_apply_without_a_restart(
    credentials: Credentials, tmp_path: Path
) -> None:
    cert, key = credentials.server_cert("reloading")
    principals = credentials.principals("reloading.txt", [("before", ["embed"])])
    async with (
        running_embedder(tls_cert_file=cert, tls_key_file=key, auth_file=principals) as server,
        _channel(f"localhost:{server.port}", credentials.ca_file) as channel,
    ):
        assert await _get_model(channel, credentials.token("before")) == grpc.StatusCode.OK
        credentials.principals("reloading.txt", [("after", ["embed"])])
        await asyncio.sleep(1.2)
        assert await _get_model(channel, credentials.token("after")) == grpc.StatusCode.OK
        assert await _get_model(channel, credentials.token("before")) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        write_private(principals, "not a principals file\n")  # a broken edit
        await asyncio.sleep(1.2)
        assert await _get_model(channel, credentials.token("after")) == grpc.StatusCode.OK


async def test_probe_port_serves_health_alone_in_plaintext(credentials: Credentials) -> None:
    cert, key = credentials.server_cert("probed")
    principals = credentials.principals("probed.txt", [("search-service", ["embed"])])
    async with running_embedder(
        tls_cert_file=cert, tls_key_file=key, auth_file=principals, health_probe_port=0
    ) as server:
        assert server.security.probe is not None
        async with _channel(f"127.0.0.1:{server.security.probe.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="imgsearch.v1.Embedder"), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # model not loaded
            assert await _get_model(channel) == grpc.StatusCode.UNIMPLEMENTED
