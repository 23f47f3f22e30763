"""The real Milvus standalone server of the PyPI `milvus` package, run the way imgsearch needs it.

`imgsearch up` (and the tests' Milvus fixture) start Milvus 2.3 standalone
with `python -m imgsearch.milvus_standalone --data-dir DIR --port P
--metrics-port M`: this module writes Milvus's configuration with the `milvus`
package's own writer, applies `CONFIG_OVERRIDES` to it, and execs the Milvus
binary, so whoever started it signals Milvus itself.

Its lifecycle, as measured on Milvus 2.3.5 (see docs/search.md):

- Start-up: `/healthz` says OK a little before the proxy serves requests, so
  readiness is `answers()`: the proxy's own `CheckHealth` RPC says healthy.
- Stop: a query node that still holds a loaded collection waits on SIGTERM
  for its segments to move to another node, which a standalone server does
  not have: it hung for 60 s and more. `prepare_stop()` flushes every
  collection (everything acknowledged is then in sealed segments on disk,
  not only in the write-ahead log) and releases the loaded ones; SIGTERM
  then stops the server in well under a second. Milvus 2.3.5 then panics
  closing its embedded etcd client, after it has logged `CLEAN_EXIT_LINE`:
  that exit (SIGABRT) is a clean stop.
- Restart: a stopped server's sessions stay registered in its embedded etcd
  until their lease expires (Milvus 2.3.5 does not revoke them on SIGTERM;
  `common.session.ttl`, 30 s by default, counted again from etcd's start).
  Until then the new coordinators cannot register (rootcoord, datacoord and
  querycoord sessions are exclusive) and the other components retry the
  stopped server's addresses with a growing back-off: measured as 25 s of a
  31 s restart on an empty collection. `revoke_stale_sessions()`, called by
  the readiness probe, revokes the leases of sessions whose server id is
  older than the running server's, through etcd's JSON gateway on the port
  given by `--etcd-port`; `CONFIG_OVERRIDES` shortens the lease and the
  back-off as a second line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymilvus import MilvusClient

# What Milvus logs once every component has stopped, before the panic above.
CLEAN_EXIT_LINE = r"All cleanup done, handleSignals goroutine quit"

# Written over the `milvus` package's milvus.yaml (dotted paths), each for a measured reason.
CONFIG_OVERRIDES: dict[str, str] = {
    # Sessions of a stopped server block the next one's time ticks until their
    # lease ends: 10 s instead of 30 (the lease is renewed every few seconds).
    "common.session.ttl": "10",
    # Internal gRPC clients retry with a back-off doubling up to this (default
    # 10 s): after a restart they first dial the stopped server's addresses,
    # and a 10 s sleep outlived the stale sessions by that much.
    "grpc.client.maxBackoff": "2",
    # Milvus force-quits a graceful stop that takes longer than this (default 1800 s).
    # `up` flushes and releases every collection first, so nothing acknowledged is
    # left in memory; with 100,000 items loaded its stop reached the 10 s bound.
    "common.gracefulStopTimeout": "5",
    # A query node's stop waits this long for its segments to move elsewhere;
    # alone, there is nowhere to move them (default 30 s, and it then hung).
    "queryNode.gracefulStopTimeout": "3",
    # Rows not yet in a built index (growing segments, and sealed ones until the
    # query node serves their HNSW index) are searched through an interim
    # IVF index of 128 lists. Probing 16 of them (the default) gave recall@10
    # 0.96 against exact search at 10,000 1280-d items; 32: 0.979; 64: 0.988.
    "queryNode.segcore.interimIndex.nprobe": "64",
    # Every internal component on loopback: nothing is reachable from the
    # network, and a restart on another network still finds its own sessions.
    "rootCoord.ip": "127.0.0.1",
    "proxy.ip": "127.0.0.1",
    "queryCoord.ip": "127.0.0.1",
    "queryNode.ip": "127.0.0.1",
    "indexNode.ip": "127.0.0.1",
    "dataCoord.ip": "127.0.0.1",
    "dataNode.ip": "127.0.0.1",
    # Logs on stdout only: `imgsearch up` writes them to logs/milvus.log.
    "log.file.rootPath": '""',
}

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _set_yaml_value(lines: list[str], path: Sequence[str], value: str) -> None:
    """Set `path` (keys from the top) to `value` in YAML block-mapping `lines`, in place.

    A missing last key is added at the top of its parent's block; a missing
    parent is a KeyError (a typo must not silently add a section).
    """
    start, end, indent = 0, len(lines), 0
    for depth, key in enumerate(path):
        found = next(
            (
                i
                for i in range(start, end)
                if (m := _KEY_LINE.match(lines[i])) and len(m["indent"]) == indent
                and m["key"] == key
            ),
            None,
        )  # fmt: skip
        last = depth == len(path) - 1
        if found is None:
            if not last or depth == 0:
                raise KeyError(f"no {'.'.join(path[: depth + 1])!r} in the Milvus configuration")
            lines.insert(start, f"{' ' * indent}{key}: {value}")
            return
        if last:
            lines[found] = f"{' ' * indent}{key}: {value}"
            return
        block_end = found + 1
        while block_end < end and (
            not _is_content(lines[block_end]) or _indent(lines[block_end]) > indent
        ):
            block_end += 1
        children = [line for line in lines[found + 1 : block_end] if _is_content(line)]
        start, end = found + 1, block_end
        indent = _indent(children[0]) if children else indent + 2


def override_yaml(text: str, overrides: Mapping[str, str]) -> str:
    """`text` (Milvus's milvus.yaml) with each dotted key of `overrides` set to its value."""
    lines = text.splitlines()
    for dotted, value in overrides.items():
        _set_yaml_value(lines, dotted.split("."), value)
    return "\n".join(lines) + "\n"


def binary_dir(version: str) -> Path:
    """Where the Milvus binary of `version` is unpacked once per user and reused.

    The `milvus` package ships its binary and libraries xz-compressed
    (~120 MB unpacked); unpacking them into every data directory cost seconds
    of CPU per fresh stack. The cache is `$XDG_CACHE_HOME/imgsearch/milvus-VERSION`
    (default `~/.cache`), filled under a file lock so concurrent starts agree.
    """
    from milvus import _initialize_data_files

    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_home / "imgsearch" / f"milvus-{version}"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Skips files whose checksum matches what is already unpacked.
        _initialize_data_files(str(cache))
    return cache / "bin"


def _free_ports(count: int, exclude: Iterable[int] = ()) -> list[int]:
    """`count` distinct TCP ports that were free a moment ago, chosen by the kernel.

    None is in `exclude`: ports already promised to another listener that has
    not bound them yet (the kernel would hand such a port out again; once, the
    embedded etcd's peer port was the proxy's own, and Milvus never answered).
    """
    taken = set(exclude)
    chosen: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(chosen) < count:
            sock = stack.enter_context(socket.socket())  # held until all are chosen
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                taken.add(port)
                chosen.append(port)
    return chosen


def _etcd_config(path: Path, client_port: int, peer_port: int) -> None:
    """The embedded etcd on private ports (its peer port would otherwise be the fixed 2380)."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    path.write_text(
        "name: default\n"
        f"listen-client-urls: {client}\n"
        f"advertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n",
        encoding="utf-8",
    )


def exec_server(
    data_dir: Path,
    port: int,
    metrics_port: int,
    secure_dir: Path | None = None,
    etcd_port: int | None = None,
) -> None:
    """Write the configuration of a Milvus standalone server under `data_dir` and exec it.

    With `secure_dir` (`imgsearch up --secure`), Milvus serves one-way TLS with
    the certificate issued there and requires authentication (Milvus 2.3's
    tlsMode 1 and authorizationEnabled).
    """
    # Imported here: only this launcher needs the (large) `milvus` package.
    import milvus
    from milvus import MilvusServerConfig

    class ReusablePortsConfig(MilvusServerConfig):  # type: ignore[misc]
        """Checks a port as the Go server binds it (SO_REUSEADDR): after a crash,
        the same port is free at once, not after its connections' TIME_WAIT."""

        def try_bind_port(self, port: int) -> socket.socket | None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()
                return None
            return sock

    config = ReusablePortsConfig()
    # The package would scan upwards from fixed ports (53100, 19531, ...), so
    # servers starting at the same moment on one machine pick the same ones
    # and one dies with "address already in use": let the kernel choose.
    port_keys = [key for key in config.configurable_items if key.endswith("_port")]
    promised = {port, metrics_port} | ({etcd_port} if etcd_port is not None else set())
    config.configs.update(zip(port_keys, _free_ports(len(port_keys), promised), strict=True))
    config.configs.update(data_dir=str(data_dir), proxy_port=port)
    if etcd_port is not None:
        config.configs.update(etcd_port=etcd_port)
    if secure_dir is not None:
        # Items of the package's config template (set() ignores a value of the wrong type).
        config.set("tls_mode", 1)
        config.set("server_pem_path", str(secure_dir / "milvus.pem"))
        config.set("server_key_path", str(secure_dir / "milvus-key.pem"))
        config.set("ca_pem_path", str(secure_dir / "ca.pem"))
        config.set("authorization_enabled", True)
    config.resolve()  # picks free ports for the internal components, writes milvus.yaml
    base = Path(config.base_data_dir)
    milvus_yaml = base / "configs" / "milvus.yaml"
    milvus_yaml.write_text(
        override_yaml(milvus_yaml.read_text(encoding="utf-8"), CONFIG_OVERRIDES),
        encoding="utf-8",
    )
    etcd_yaml = base / "configs" / "embedEtcd.yaml"
    in_use = promised | {int(config.get(key)) for key in port_keys}
    _etcd_config(etcd_yaml, int(config.get("etcd_port")), _free_ports(1, in_use)[0])
    binary = binary_dir(milvus.__version__) / "milvus"
    env = {
        **os.environ,
        "ETCD_CONFIG_PATH": str(etcd_yaml),
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(metrics_port),
        "MILVUS_RUN_DIR": str(base / "run"),
        "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    }
    os.chdir(base)  # Milvus reads configs/milvus.yaml from its working directory
    sys.stdout.flush()
    os.execve(binary, [str(binary), "run", "standalone"], env)  # noqa: S606


def healthz(metrics_port: int, timeout_s: float = 2.0) -> bool:
    """True when Milvus's `/healthz` (on its metrics port, plain HTTP) says OK."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return b"OK" in reply.read()
    except (OSError, urllib.error.URLError):
        return False


def answers(port: int, metrics_port: int, timeout_s: float = 2.0) -> bool:
    """True when `/healthz` says OK and the proxy's CheckHealth RPC says healthy (plaintext)."""
    import grpc
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    if not healthz(metrics_port, timeout_s):
        return False
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = milvus_pb2_grpc.MilvusServiceStub(channel)
            health = stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=timeout_s)
        return bool(health.isHealthy)
    except grpc.RpcError:
        return False


# Where Milvus 2.3 keeps its sessions in etcd (`etcd.rootPath`/meta/session/).
SESSION_PREFIX = "by-dev/meta/session/"


def _etcd_call(etcd_port: int, path: str, body: Mapping[str, Any], timeout_s: float) -> Any:
    """POST `body` to etcd's JSON gateway (`/v3/...`) on loopback; its JSON reply."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{etcd_port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # noqa: S310
        return json.loads(reply.read() or b"{}")


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def stale_session_leases(sessions: Mapping[str, bytes]) -> dict[str, int]:
    """The leases of sessions left by an earlier server, by session key.

    `sessions` maps each key under SESSION_PREFIX to its value: the `id` key
    holds the next server id (each start takes one: the running server's id
    is the one below it); every other value is a session's JSON, with its
    `ServerID` and `LeaseID`. A session of an older server id belongs to a
    stopped server (standalone runs one server at a time on its data
    directory); none is returned until a session of the running server is
    registered, so a session of the running server is never returned.
    """
    import json

    try:
        running = int(sessions[SESSION_PREFIX + "id"]) - 1
    except (KeyError, ValueError):
        return {}
    found: dict[str, tuple[int, int]] = {}
    for key, raw in sessions.items():
        try:
            value = json.loads(raw)
            found[key] = (int(value["ServerID"]), int(value["LeaseID"]))
        except (ValueError, KeyError, TypeError):
            continue  # the `id` key, or not a session
    if not any(server == running for server, _ in found.values()):
        return {}
    return {key: lease for key, (server, lease) in found.items() if server < running}


def revoke_stale_sessions(etcd_port: int, timeout_s: float = 2.0) -> list[str]:
    """Revoke the etcd leases of sessions a stopped Milvus left behind; the keys revoked.

    See the module docstring (Restart) and `stale_session_leases`. Returns []
    when etcd does not answer yet or nothing is stale.
    """
    import base64
    import urllib.error

    prefix = SESSION_PREFIX.encode()
    range_end = prefix[:-1] + bytes([prefix[-1] + 1])
    try:
        reply = _etcd_call(
            etcd_port,
            "/v3/kv/range",
            {"key": _b64(SESSION_PREFIX), "range_end": base64.b64encode(range_end).decode()},
            timeout_s,
        )
        sessions = {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in reply.get("kvs", [])
        }
        stale = stale_session_leases(sessions)
        for lease in set(stale.values()):
            _etcd_call(etcd_port, "/v3/lease/revoke", {"ID": str(lease)}, timeout_s)
    except (OSError, urllib.error.URLError, ValueError):
        return []
    return sorted(stale)


def prepare_stop(uri: str, timeout_s: float = 30.0, **client_options: Any) -> list[str]:
    """Flush every collection of every database, then release the loaded ones.

    After it, everything acknowledged is in sealed segments on disk and the
    query node holds nothing, so SIGTERM stops Milvus at once. Returns the
    collections flushed ("db.collection"); raises pymilvus' errors.
    `client_options` go to every `MilvusClient` (token, TLS).
    """
    with _client(uri, "", timeout_s, client_options) as client:
        databases = client.list_databases(timeout=timeout_s)
    flushed = []
    for database in databases:
        # One client per database: Milvus 2.3 lacks the RPC `use_database` sends.
        with _client(uri, database, timeout_s, client_options) as client:
            for name in client.list_collections(timeout=timeout_s):
                client.flush(name, timeout=timeout_s)
                flushed.append(f"{database}.{name}")
                state = str(client.get_load_state(name, timeout=timeout_s).get("state", ""))
                if "NotLoad" not in state:
                    client.release_collection(name, timeout=timeout_s)
    return flushed


@contextlib.contextmanager
def _client(
    uri: str, database: str, timeout_s: float, options: Mapping[str, Any]
) -> Iterator[MilvusClient]:
    from pymilvus import MilvusClient

    # dedicated: pymilvus would otherwise share a connection made with other options.
    client = MilvusClient(uri=uri, db_name=database, timeout=timeout_s, dedicated=True, **options)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imgsearch.milvus_standalone")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--secure-dir", type=Path, default=None, help="TLS and auth (up --secure)")
    parser.add_argument("--etcd-port", type=int, default=None, help="the embedded etcd's port")
    args = parser.parse_args(argv)
    secure_dir = args.secure_dir.resolve() if args.secure_dir else None
    exec_server(args.data_dir.resolve(), args.port, args.metrics_port, secure_dir, args.etcd_port)


if __name__ == "__main__":
    main()
