"""The access rules: every RPC has one, unknown methods are refused, principals files parse safely.

The rule table is keyed by full method name. These tests read the methods from
the services' own descriptors, so an RPC added to a .proto without a rule in
`imgsearch.common.auth.METHOD_SCOPES` fails here (and would be refused by the
server, which fails closed; the last test shows that over loopback).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import CollectorRegistry

from imgsearch.common.auth import (
    METHOD_SCOPES,
    OPEN,
    REFLECTION,
    SCOPES,
    SEARCH,
    WRITE,
    AuthInterceptor,
    AuthMetrics,
    PrincipalStore,
    new_token,
    parse_principals,
    principal_line,
    token_hash,
)
from imgsearch.common.grpc_runtime import HealthState, create_grpc_server
from imgsearch.common.secret_files import SecretFileError
from imgsearch.v1 import embedder_pb2, search_pb2
from tests.security.conftest import Credentials

SERVED = [
    *search_pb2.DESCRIPTOR.services_by_name.values(),
    *embedder_pb2.DESCRIPTOR.services_by_name.values(),
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]


def _methods(service) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"/{service.full_name}/{method.name}" for method in service.methods]


def test_every_rpc_of_every_served_service_has_a_rule() -> None:
    missing = [m for service in SERVED for m in _methods(service) if m not in METHOD_SCOPES]
    assert not missing, (
        f"RPCs without an access rule (add them to imgsearch.common.auth.METHOD_SCOPES): {missing}"
    )
    for method, rule in METHOD_SCOPES.items():
        assert rule in SCOPES or rule is OPEN or rule is REFLECTION, (method, rule)


def test_search_reads_need_search_and_changes_need_write() -> None:
    search = search_pb2.DESCRIPTOR.services_by_name["Search"]
    rules = {m: METHOD_SCOPES[m] for m in _methods(search)}
    assert rules["/imgsearch.v1.Search/Insert"] == WRITE
    assert rules["/imgsearch.v1.Search/Delete"] == WRITE
    for read in ("Search", "Get", "Stats", "List", "FindDuplicates"):
        assert rules[f"/imgsearch.v1.Search/{read}"] == SEARCH
    # Nothing of the Search service is open: only health is.
    assert not [m for m, rule in rules.items() if rule is OPEN]
    assert {m for m, rule in METHOD_SCOPES.items() if rule is OPEN} == set(
        _methods(health_pb2.DESCRIPTOR.services_by_name["Health"])
    )


def test_principals_file_holds_hashes_and_refuses_a_pasted_token() -> None:
    token = new_token()
    principals = parse_principals(principal_line("ingest", ["write", "search"], token_hash(token)))
    found = principals.by_token(token)
    assert found is not None
    assert (found.name, found.scopes) == ("ingest", {"write", "search"})
    assert principals.by_token(token + "x") is None
    assert principals.by_token(None) is None
    assert principals.by_token("") is None
    with pytest.raises(SecretFileError) as pasted:
        parse_principals(f"ingest write sha256:{token}")
    assert token not in str(pasted.value)
    with pytest.raises(SecretFileError) as raw:
        parse_principals(f"ingest write {token}")
    assert token not in str(raw.value)
    with pytest.raises(SecretFileError, match="unknown scope"):
        parse_principals(f"ingest delete-everything {token_hash(token)}")
    with pytest.raises(SecretFileError, match="names no principal"):
        parse_principals("# nobody\n\n")


def _median_batch_s(lookup, token: str | None, calls: int = 200) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(calls):
        lookup(token)
    return time.perf_counter() - started


def test_token_lookup_takes_the_same_time_known_or_not() -> None:
    """No timing signal: known, near-miss, random, empty and missing tokens cost the same.

    Samples of each kind are interleaved, so load on the machine hits them
    alike; the medians must agree within 25% (the work is the same: one
    SHA-256 and a constant-time comparison with every stored digest).
    """
    tokens = [new_token() for _ in range(5)]
    principals = parse_principals(
        "\n".join(principal_line(f"p{i}", ["search"], token_hash(t)) for i, t in enumerate(tokens))
    )
    known = tokens[2]
    kinds = {
        "known": known,
        "near miss": known[:-1] + ("A" if known[-1] != "A" else "B"),
        "random": new_token(),
        "empty": "",
        "missing": None,
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(60):
        for kind, token in kinds.items():
            samples[kind].append(_median_batch_s(principals.by_token, token))
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    assert max(medians.values()) < 1.25 * min(medians.values()), medians


@pytest.fixture
async def health_only_server(credentials: Credentials, tmp_path: Path) -> AsyncIterator[str]:
    """A real server (the services' factory) whose rule table lacks health: fail closed."""
    store = PrincipalStore(credentials.principals("rules-principals.txt", [("admin", ["admin"])]))
    health = HealthState([])
    interceptor = AuthInterceptor(store, [], AuthMetrics(CollectorRegistry()), rules={})
    server, port = create_grpc_server("127.0.0.1:0", [], health, interceptors=[interceptor])
    await server.start()
    await health.set_serving(True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_a_method_without_a_rule_is_refused_even_to_admin(
    health_only_server: str, credentials: Credentials
) -> None:
    async with grpc.aio.insecure_channel(health_only_server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.Check(request, timeout=5)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        admin = (("authorization", f"Bearer {credentials.token('admin')}"),)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Check(request, metadata=admin, timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no access rule" in (refused.value.details() or "")


def test_token_command_writes_the_token_for_the_client_and_its_hash_for_the_service(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from imgsearch.cli.main import app

    runner = CliRunner()
    token_file, principals_file = tmp_path / "ingest.token", tmp_path / "principals.txt"
    args = ["token", "create", "ingest", "--scope", "write", "--scope", "search"]
    args += ["--token-file", str(token_file), "--principals-file", str(principals_file)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    token = token_file.read_text().strip()
    assert token not in done.output
    for path in (token_file, principals_file):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert token not in principals_file.read_text()
    principal = PrincipalStore(principals_file).current().by_token(token)
    assert principal is not None
    assert principal.scopes == {"write", "search"}
    # Never overwrites a token; refuses an unknown scope; `hash` prints the same line.
    assert runner.invoke(app, args).exit_code == 2
    bad = runner.invoke(
        app, ["token", "create", "x", "--scope", "root", "--token-file", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2
    assert "unknown scope" in bad.output
    hashed = runner.invoke(
        app,
        ["token", "hash", "ingest", "-s", "write", "-s", "search", "--token-file", str(token_file)],
    )
    assert hashed.output.strip() == principals_file.read_text().strip()
