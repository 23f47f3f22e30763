"""`imgsearch up --secure` end to end: TLS on every hop, one token per scope, the CLI and client.

One secured stack for the module (the Embedder with real weights, Search,
Redis on TLS with a password, the Milvus Lite server), driven as a user
would: the `imgsearch` command and `imgsearch.client.Client` with the CA and
token files that `imgsearch up --secure --json` names.
"""

from __future__ import annotations

import json
import os
import stat
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imgsearch.client import Client, ItemInput, content_id
from imgsearch.common import errors
from imgsearch.common.auth import new_token
from imgsearch.common.pki import CertificateAuthority
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc
from imgsearch_search.outbound import redact_url
from tests.cli.conftest import IMGSEARCH, Result, run_cli
from tests.fixtures.photos import load_photos
from tests.fixtures.processes import ChildProcess

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class SecureStack:
    """What `imgsearch up --secure --json` printed, and the process."""

    child: ChildProcess
    data_dir: Path
    search: str
    embedder: str
    web: str
    ca: Path
    tokens: dict[str, Path]

    def token(self, scope: str) -> str:
        return self.tokens[scope].read_text().strip()

    def client(self, scope: str | None, **options: object) -> Client:
        token_file = self.tokens[scope] if scope else None
        return Client(self.search, tls_ca=self.ca, token_file=token_file, **options)  # type: ignore[arg-type]

    def cli(self, scope: str | None, *args: str) -> Result:
        credentials = ["--tls-ca", str(self.ca)]
        if scope:
            credentials += ["--token-file", str(self.tokens[scope])]
        return run_cli([*credentials, *args], self.search)


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    data_dir = tmp_path_factory.mktemp("secure-stack")
    child = ChildProcess(
        "imgsearch up --secure",
        [*IMGSEARCH, "up", "--secure", "--json", "--data-dir", str(data_dir)],
        env={"EMBEDDER_LOG_LEVEL": "INFO", "SEARCH_LOG_LEVEL": "INFO"},
    )
    try:
        line = child.wait_for_line(r"^\{.*\"secure\"", timeout=300)
        summary = json.loads(line.string)
        yield SecureStack(
            child=child,
            data_dir=data_dir,
            search=summary["search"],
            embedder=summary["embedder"],
            web=summary["web"],
            ca=Path(summary["secure"]["ca"]),
            tokens={scope: Path(path) for scope, path in summary["secure"]["tokens"].items()},
        )
    finally:
        child.stop()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return load_photos()


def test_secrets_are_written_for_the_owner_only(secure_stack: SecureStack) -> None:
    assert set(secure_stack.tokens) == {"search", "write", "admin"}
    directory = secure_stack.ca.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    secret_files = [
        *directory.glob("*.token"),
        *directory.glob("*-key.pem"),
        *directory.glob("*.txt"),
    ]
    secret_files += [directory / "redis-password", directory / "milvus-token"]
    for path in secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    tokens = [secure_stack.token(scope) for scope in secure_stack.tokens]
    assert len(set(tokens)) == 3
    # The principals files and the Redis config hold hashes, never a token or the password.
    password = (directory / "redis-password").read_text().strip()
    for path in [*directory.glob("*.txt"), directory / "redis.conf"]:
        text = path.read_text()
        assert not [t for t in tokens if t in text], path
        assert password not in text, path


def test_cli_end_to_end_with_scoped_tokens(secure_stack: SecureStack, tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(load_photos()["chelsea"])
    refused = secure_stack.cli("search", "ingest", str(tmp_path))
    assert refused.code == 4, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "'write' scope" in refused.stderr
    ingested = secure_stack.cli("write", "ingest", str(tmp_path), "--json")
    assert ingested.code == 0, ingested.stderr
    assert ingested.json()["inserted"] == 1  # type: ignore[index]
    found = secure_stack.cli("search", "search", str(photo), "-k", "1", "--json")
    assert found.code == 0, found.stderr
    assert found.json()["hits"][0]["id"] == content_id(photo.read_bytes())  # type: ignore[index]
    anonymous = secure_stack.cli(None, "stats")
    assert anonymous.code == 4
    assert anonymous.stderr.startswith("imgsearch: error: not authenticated")
    assert "--token-file" in anonymous.stderr
    plaintext = run_cli(
        ["--token-file", str(secure_stack.tokens["search"]), "stats"], secure_stack.search
    )
    assert plaintext.code == 3
    assert "expect TLS" in plaintext.stderr


def test_every_search_rpc_needs_a_token_and_its_scope(
    secure_stack: SecureStack, photos: dict[str, bytes]
) -> None:
    image = photos["astronaut"]
    item = ItemInput(image=image, id="scoped-item", labels={"who": "test"})
    calls = {
        "search": lambda c: c.search(image, k=1),
        "get": lambda c: c.get(["scoped-item"]),
        "stats": lambda c: c.stats(),
        "insert": lambda c: c.insert([item]),
        "delete": lambda c: c.delete(["scoped-item"]),
    }
    with secure_stack.client(None) as anonymous:
        for name, call in calls.items():
            with pytest.raises(errors.UnauthenticatedError):
                call(anonymous)
            assert name
        assert anonymous.health() == "SERVING"  # health stays open for probes
    with secure_stack.client("search") as reader, secure_stack.client("write") as writer:
        before = reader.stats().item_count
        for name in ("insert", "delete"):
            with pytest.raises(errors.PermissionDeniedError, match="'write' scope"):
                calls[name](reader)
        assert reader.get(["scoped-item"]).missing_ids == ["scoped-item"], "nothing was written"
        assert reader.stats().item_count == before
        assert all(outcome.ok for outcome in writer.insert([item]))
        assert reader.get(["scoped-item"]).items[0].labels == {"who": "test"}
        assert reader.search(image, k=1).hits[0].id == "scoped-item"
        with pytest.raises(errors.PermissionDeniedError):
            calls["delete"](reader)
        assert writer.delete(["scoped-item"]) == 1
    with secure_stack.client("admin") as admin:
        assert admin.stats().item_count == before


def _list_services(address: str, ca: Path, token: str | None) -> list[str]:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.secure_channel(address, credentials) as channel:
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=metadata,
            timeout=10,
        )
        return [s.name for reply in replies for s in reply.list_services_response.service]


def test_reflection_follows_the_rule_of_the_service_it_describes(
    secure_stack: SecureStack,
) -> None:
    with pytest.raises(grpc.RpcError) as anonymous:
        _list_services(secure_stack.search, secure_stack.ca, None)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    services = _list_services(secure_stack.search, secure_stack.ca, secure_stack.token("search"))
    assert "imgsearch.v1.Search" in services


def test_the_stacks_embedder_admits_only_the_search_service(secure_stack: SecureStack) -> None:
    directory = secure_stack.ca.parent
    roots = secure_stack.ca.read_bytes()

    def get_model(credentials: grpc.ChannelCredentials, metadata: tuple = ()) -> grpc.StatusCode:
        with grpc.secure_channel(secure_stack.embedder, credentials) as channel:
            try:
                embedder_pb2_grpc.EmbedderStub(channel).GetModel(
                    embedder_pb2.GetModelRequest(), metadata=metadata, timeout=10
                )
            except grpc.RpcError as error:
                return error.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK

    # No client certificate: the mutual-TLS handshake fails, even with an admin token.
    admin = (("authorization", f"Bearer {secure_stack.token('admin')}"),)
    assert get_model(grpc.ssl_channel_credentials(roots), admin) == grpc.StatusCode.UNAVAILABLE
    # A certificate from the same CA, but not Search's name: not a principal of the Embedder.
    ca = _stack_ca(directory)
    other = ca.issue("intruder", ["intruder.test"], server=False, client=True)
    intruder = grpc.ssl_channel_credentials(roots, other.key_pem, other.certificate_pem)
    assert get_model(intruder) == grpc.StatusCode.UNAUTHENTICATED
    search_cert = (directory / "search-client.pem").read_bytes()
    search_key = (directory / "search-client-key.pem").read_bytes()
    assert get_model(grpc.ssl_channel_credentials(roots, search_key, search_cert)) == (
        grpc.StatusCode.OK
    )


def _stack_ca(directory: Path) -> CertificateAuthority:
    from imgsearch.secure_stack import _load_ca

    return _load_ca(directory)


def test_brute_force_gets_no_signal_and_no_crash(secure_stack: SecureStack) -> None:
    real = secure_stack.token("search")
    odd = ["", " ", "Bearer", "x" * 5000, "!#$%&*+-.^_|~" * 9, real[:-1], real + real, real.upper()]
    guesses = odd + [new_token() for _ in range(150)]
    credentials = grpc.ssl_channel_credentials(root_certificates=secure_stack.ca.read_bytes())
    with grpc.secure_channel(secure_stack.search, credentials) as channel:
        stub = search_pb2_grpc.SearchStub(channel)

        def attempt(guess: str) -> grpc.StatusCode:
            try:
                stub.Stats(
                    search_pb2.StatsRequest(),
                    metadata=(("authorization", f"Bearer {guess}"),),
                    timeout=30,
                )
            except grpc.RpcError as error:
                return error.code()  # type: ignore[attr-defined,no-any-return]
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(attempt, guesses))
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
        # Timing: a near miss (the real token but one character) and random guesses are
        # indistinguishable; samples interleaved so machine load hits both alike.
        near_miss = real[:-1] + ("A" if real[-1] != "A" else "B")
        timings: dict[str, list[float]] = {"near miss": [], "random": []}
        for _ in range(40):
            for kind, guess in (("near miss", near_miss), ("random", new_token())):
                started = time.perf_counter()
                assert attempt(guess) == grpc.StatusCode.UNAUTHENTICATED
                timings[kind].append(time.perf_counter() - started)
        medians = {kind: statistics.median(values) for kind, values in timings.items()}
        assert max(medians.values()) < 1.5 * min(medians.values()), medians
        # Still serving the real token.
        assert attempt(real) == grpc.StatusCode.OK


def test_no_secret_in_logs_command_lines_or_environments(secure_stack: SecureStack) -> None:
    directory = secure_stack.ca.parent
    secrets = [secure_stack.token(scope) for scope in secure_stack.tokens]
    secrets.append((directory / "redis-password").read_text().strip())
    logs = "\n".join(
        p.read_text(errors="replace") for p in (secure_stack.data_dir / "logs").glob("*.log")
    )
    assert "call refused" in logs  # the refusals above were logged...
    assert not [s for s in secrets if s in logs]  # ...without a secret
    stack_pid = secure_stack.child.proc.pid
    for pid in [stack_pid, *_children(stack_pid)]:
        for view in ("cmdline", "environ"):
            try:
                text = Path(f"/proc/{pid}/{view}").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert not [s for s in secrets if s in text], (pid, view)
    assert redact_url("rediss://user:pw@host:6380/0") == "rediss://user:***@host:6380/0"


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat_line[stat_line.rindex(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append(child)
                frontier.append(child)
    return found


def test_the_web_gateway_serves_https_and_passes_each_callers_token(
    secure_stack: SecureStack, photos: dict[str, bytes]
) -> None:
    import ssl

    import httpx

    assert secure_stack.web.startswith("https://")
    trust = ssl.create_default_context(cafile=str(secure_stack.ca))
    with httpx.Client(base_url=secure_stack.web, verify=trust, timeout=60) as http:
        assert http.get("/readyz").status_code == 200  # probes need no token
        anonymous = http.get("/v1/stats")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "UNAUTHENTICATED"
        reader = {"Authorization": f"Bearer {secure_stack.token('search')}"}
        writer = {"Authorization": f"Bearer {secure_stack.token('write')}"}
        assert http.get("/v1/stats", headers=reader).status_code == 200
        upload = {"image": ("a.jpg", photos["coffee"], "image/jpeg")}
        denied = http.post("/v1/items", files=upload, data={"id": "web-x"}, headers=reader)
        assert denied.status_code == 403
        assert "'write' scope" in denied.json()["message"]
        created = http.post("/v1/items", files=upload, data={"id": "web-x"}, headers=writer)
        assert created.status_code == 201, created.text
        assert http.get("/v1/thumbnails/web-x", headers=reader).content[:4] == b"RIFF"
        assert http.get("/v1/thumbnails/web-x").status_code == 401
        assert http.delete("/v1/items/web-x", headers=writer).json() == {"deleted": 1}
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the stack's CA
        httpx.get(f"{secure_stack.web}/readyz", timeout=10)
