"""Process supervisor behind `imgsearch up`: the whole stack on one machine.

`LocalStack` starts a Milvus server (Milvus Lite's server or the real Milvus
standalone from PyPI `milvus`), a `redis-server`, the Embedder, the Search
service and the web gateway, each as a separate child process in its own
process group, and waits until each one answers (Redis PING, Milvus health,
gRPC health SERVING, the gateway's /readyz).

Why process groups: a child may have children of its own, and Ctrl-C in a
terminal must reach only the supervisor, which then stops the services in
order (Search first, storage last). Stopping a child sends its stop signal to
the whole group, waits, then SIGKILLs the group; the group is also SIGKILLed
once its leader has exited but before it is reaped, so no stray member
survives and the group id cannot have been recycled. Each child also gets
PR_SET_PDEATHSIG, so even a SIGKILLed supervisor does not leave orphans.

Every child's output goes to `<data_dir>/logs/<name>.log`; the last lines are
kept in memory to explain a child that dies.

The default Milvus is the real Milvus 2.3 standalone server
(`imgsearch.milvus_standalone` launches it): before it is stopped, every
collection is flushed and released, so it stops at once with everything
acknowledged on disk (Search, stopped first, has drained its in-flight
Inserts by then).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch import milvus_standalone
from imgsearch.common.grpc_runtime import bind_error
from imgsearch.datadir import DataDirError, DataDirLock
from imgsearch.secure_stack import (
    OPEN_EMBEDDER_ENV,
    OPEN_SEARCH_ENV,
    SecureFiles,
    ensure_milvus_password,
    redis_tls_alive,
)

MilvusKind = Literal["lite", "standalone"]

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2


class StackError(RuntimeError):
    """The stack could not start, or a child died; the message says which and why."""


class StackUsageError(StackError):
    """The stack cannot start as asked: its data folder or a chosen port is unusable or in use."""


_PROMISED_PORTS: set[int] = set()  # handed out by free_port() in this process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago, never one handed out before.

    A port handed out is not bound until its server starts, so the kernel may
    offer it again meanwhile; two children told the same port would collide.
    """
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _PROMISED_PORTS:
            _PROMISED_PORTS.add(port)
            return port


def _connect_host(host: str) -> str:
    """The address to dial for a server bound to `host` (wildcards mean loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _pdeathsig_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `sig` to the child when the supervisor dies.

    libc is looked up here, before fork, so the function run in the child
    between fork and exec only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_pdeathsig


@dataclass
class ChildSpec:
    """How to run one service of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # Milvus Lite's server only closes its database cleanly on SIGINT.
    stop_signal: signal.Signals = signal.SIGTERM
    # A regular expression; the child is not ready before a line matches it.
    ready_line: str | None = None
    # Then called until it returns True: the child answers requests.
    probe: Callable[[], bool] | None = None
    # Seconds between the stop signal and SIGKILL; None: StackConfig.stop_timeout_s.
    stop_timeout_s: float | None = None
    # Called before the stop signal (e.g. flush storage); returns what it did, for
    # the log, and reports its own failures the same way: the stop goes on.
    before_stop: Callable[[], str] | None = None
    # A regular expression: once a line matches it, a non-zero exit is a known,
    # harmless failure after a complete shutdown, and reported as exit code 0.
    clean_exit_line: str | None = None


class Child:
    """A running child process, its log file and the tail of its output."""

    def __init__(self, spec: ChildSpec, log_dir: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.log_path = log_dir / f"{spec.name}.log"
        self.lines: deque[str] = deque(maxlen=200)
        self.ready_match: re.Match[str] | None = None
        self._ready_regex = re.compile(spec.ready_line) if spec.ready_line else None
        self._clean_regex = re.compile(spec.clean_exit_line) if spec.clean_exit_line else None
        self.clean_exit_seen = False
        self._line_seen = threading.Event()
        self._log: IO[str] = self.log_path.open("a", encoding="utf-8", errors="replace")
        self._log.write(f"--- imgsearch up: starting {' '.join(spec.argv)}\n")
        self._log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        try:
            self.proc = self._popen(spec, env)
        except OSError:
            self._log.close()
            raise
        self.pid = self.proc.pid
        self._exit_code: int | None = None
        self._reader = threading.Thread(target=self._read, name=f"log-{spec.name}", daemon=True)
        self._reader.start()

    @staticmethod
    def _popen(spec: ChildSpec, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
            # One prctl call between fork and exec: no locks, no allocation.
            # The child's own stop signal, so it shuts down as cleanly as it can.
            preexec_fn=_pdeathsig_preexec(spec.stop_signal),
            text=True,
            errors="replace",
        )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._log.write(raw if raw.endswith("\n") else raw + "\n")
            self._log.flush()
            if self.ready_match is None and self._ready_regex is not None:
                match = self._ready_regex.search(line)
                if match:
                    self.ready_match = match
            if self._clean_regex is not None and self._clean_regex.search(line):
                self.clean_exit_seen = True
            self._line_seen.set()
        # End of output: wake anyone waiting for a line, so they notice the exit.
        self._line_seen.set()

    def tail(self, count: int = 30) -> str:
        return "\n".join(list(self.lines)[-count:])

    def exit_code(self) -> int | None:
        """The exit status once the child has exited, without reaping it.

        Not reaping keeps the process group id reserved until `stop()` has
        SIGKILLed whatever else is left in the group.
        """
        if self._exit_code is not None:
            return self._exit_code
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Already reaped (by stop()).
            return self.proc.returncode
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def wait_line(self, timeout: float) -> None:
        """Block up to `timeout` seconds for the next line of output."""
        self._line_seen.wait(timeout)
        self._line_seen.clear()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _before_stop(self) -> None:
        if self.spec.before_stop is None or self.exit_code() is not None:
            return
        started = time.monotonic()
        done = self.spec.before_stop()
        self._write_log(f"before stopping: {done} in {time.monotonic() - started:.1f} s")

    def _write_log(self, message: str) -> None:
        with contextlib.suppress(ValueError):  # closed
            self._log.write(f"--- imgsearch up: {message}\n")
            self._log.flush()

    def stop(self, timeout: float) -> int:
        """Stop signal to the group, SIGKILL after `timeout`, then reap; returns the exit code."""
        self._before_stop()
        if self.exit_code() is None:
            self._signal_group(self.spec.stop_signal)
            deadline = time.monotonic() + timeout
            while self.exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        # Kill the leader if it lingers, and any member of its group still alive.
        self._signal_group(signal.SIGKILL)
        code = self.proc.wait()
        self._reader.join(timeout=5)
        if code != 0 and self.clean_exit_seen:
            self._write_log(f"exit code {code} after a complete shutdown: counted as 0")
            code = 0
        self._exit_code = code
        # A reader still running means something outside the group holds the
        # pipe; it keeps the log file, so only a finished reader's is closed.
        if not self._reader.is_alive():
            self._log.write(f"--- imgsearch up: {self.name} stopped with exit code {code}\n")
            self._log.close()
        return code


@dataclass
class StackConfig:
    """What `imgsearch up` runs; every port 0 means a free port."""

    data_dir: Path = Path(".imgsearch")
    host: str = "127.0.0.1"
    search_port: int = 0
    embedder_port: int = 0
    web_port: int = 0
    milvus: MilvusKind = "standalone"
    milvus_port: int = 0
    redis_port: int = 0
    # External servers instead of starting ours.
    milvus_uri: str | None = None
    redis_url: str | None = None
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 20.0
    # Extra environment for the services, e.g. {"EMBEDDER_MAX_BATCH_SIZE": "16"}.
    extra_env: dict[str, str] = field(default_factory=dict)
    # TLS and tokens on every hop, with a private CA under data_dir/secure
    # (imgsearch.secure_stack); off, the services run in plaintext without auth.
    secure: bool = False
    python: str = sys.executable


@dataclass(frozen=True)
class StackAddresses:
    """Where the running stack listens."""

    search: str
    embedder: str
    milvus_uri: str
    redis_url: str
    log_dir: Path
    web: str = ""  # the gateway's base URL, http://HOST:PORT
    # With `secure`: where the CA, certificates and tokens are.
    secure: SecureFiles | None = None


class LocalStack:
    """Starts and supervises the services; use as a context manager or start()/stop().

    `stop_requested` is an event the caller may set (from a signal handler) to
    interrupt `start()` or `wait()`.
    """

    def __init__(
        self,
        config: StackConfig,
        announce: Callable[[str], None] = lambda message: None,
        data_lock: DataDirLock | None = None,
    ) -> None:
        """`data_lock`: the data folder's lock, when the caller took it already (the demo
        does, to wipe the folder first); else `start()` takes it and `stop()` drops it."""
        self.config = config
        self._given_lock = data_lock
        self.data_lock: DataDirLock | None = data_lock
        self.announce = announce
        self.stop_requested = threading.Event()
        self.children: list[Child] = []
        self.addresses: StackAddresses | None = None
        self.data_dir = config.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.secure: SecureFiles | None = None

    def __enter__(self) -> StackAddresses:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- start-up

    def start(self) -> StackAddresses:
        """Start every child and wait until all are ready; on failure stop them and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _claim_data_dir(self) -> None:
        """Lock the data folder, check the chosen ports are free; StackUsageError if not."""
        try:
            if self.data_lock is None:
                self.data_lock = DataDirLock.acquire(self.config.data_dir)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except DataDirError as error:
            raise StackUsageError(str(error)) from None
        except OSError as error:
            raise StackUsageError(f"cannot create {self.log_dir}: {error.strerror}") from None
        config = self.config
        chosen = {
            "--search-port": (config.host, config.search_port),
            "--embedder-port": (config.host, config.embedder_port),
            "--web-port": (config.host, config.web_port),
            "milvus port": ("127.0.0.1", config.milvus_port),
            "redis port": ("127.0.0.1", config.redis_port),
        }
        for option, (host, port) in chosen.items():
            reason = bind_error(f"{host}:{port}") if port else None
            if reason is not None:
                raise StackUsageError(f"cannot use {option} {port} on {host}: {reason}")

    def _start(self) -> StackAddresses:
        config = self.config
        self._claim_data_dir()
        deadline = time.monotonic() + config.startup_timeout_s
        connect_host = _connect_host(config.host)
        if config.secure:
            self.secure = SecureFiles.prepare(self.data_dir / "secure", [connect_host])

        # Every service starts at once: Search retries the Embedder and Milvus
        # until they answer (its startup_timeout_s), so its own start-up (imports,
        # connections) overlaps theirs instead of following them. The Embedder's
        # port is chosen here, since Search must be told it.
        redis_url = config.redis_url or self._start_redis()
        milvus_uri = config.milvus_uri or self._start_milvus()
        embedder_address = f"{connect_host}:{config.embedder_port or free_port()}"
        embedder = self._spawn(
            ChildSpec(
                name="embedder",
                argv=[config.python, "-m", "imgsearch_embedder"],
                env={
                    "EMBEDDER_HOST": config.host,
                    "EMBEDDER_PORT": embedder_address.rsplit(":", 1)[1],
                    "EMBEDDER_METRICS_HOST": "127.0.0.1",
                    "EMBEDDER_METRICS_PORT": "0",
                    **self._security_env("embedder", milvus_uri),
                    **config.extra_env,
                },
                ready_line=r"embedder listening on (\S+):(\d+)",
            )
        )
        search = self._spawn(
            ChildSpec(
                name="search",
                argv=[config.python, "-m", "imgsearch_search"],
                env={
                    "SEARCH_HOST": config.host,
                    "SEARCH_PORT": str(config.search_port),
                    "SEARCH_METRICS_HOST": "127.0.0.1",
                    "SEARCH_METRICS_PORT": "0",
                    "SEARCH_MILVUS_URI": milvus_uri,
                    "SEARCH_REDIS_URL": redis_url,
                    "SEARCH_EMBEDDER_ADDRESS": embedder_address,
                    **self._security_env("search", milvus_uri),
                    **config.extra_env,
                },
                ready_line=r"search listening on (\S+):(\d+)",
            )
        )
        for child in self.children:
            self._wait_ready(child, deadline)
        self._wait_grpc_serving(embedder, embedder_address, deadline)
        assert search.ready_match is not None
        search_address = f"{connect_host}:{search.ready_match.group(2)}"
        self._wait_grpc_serving(search, search_address, deadline)

        web_url = self._start_web(search_address, deadline)
        self.addresses = StackAddresses(
            search=search_address,
            embedder=embedder_address,
            milvus_uri=milvus_uri,
            redis_url=redis_url,
            log_dir=self.log_dir,
            secure=self.secure,
            web=web_url,
        )
        return self.addresses

    def _security_env(self, service: str, milvus_uri: str) -> dict[str, str]:
        """TLS and auth settings of `service` (embedder, search): explicit plaintext unless secure.

        Secure Redis and Milvus settings apply only to servers the stack started.
        """
        if self.secure is None:
            return OPEN_EMBEDDER_ENV if service == "embedder" else OPEN_SEARCH_ENV
        if service == "embedder":
            return self.secure.embedder_env()
        return self.secure.search_env(
            redis_secure=self.config.redis_url is None,
            milvus_secure=self.config.milvus_uri is None and milvus_uri.startswith("https://"),
        )

    def _web_security_env(self) -> dict[str, str]:
        """Secure: HTTPS with its own certificate, and Search reached over TLS (callers' tokens)."""
        if self.secure is None:
            return {}
        cert, key = self.secure.cert("web")
        return {
            "WEB_TLS_CERT_FILE": str(cert),
            "WEB_TLS_KEY_FILE": str(key),
            "WEB_SEARCH_TLS_CA_FILE": str(self.secure.ca),
        }

    def _start_web(self, search_address: str, deadline: float) -> str:
        """The HTTP gateway and web page, in front of Search; returns its base URL."""
        config = self.config
        url: list[str] = []

        def ready() -> bool:
            ca = self.secure.ca if self.secure is not None else None
            return bool(url) and _http_ok(f"{url[0]}/readyz", ca)

        web = self._spawn(
            ChildSpec(
                name="web",
                argv=[config.python, "-m", "imgsearch_web"],
                env={
                    "WEB_HOST": config.host,
                    "WEB_PORT": str(config.web_port),
                    "WEB_METRICS_HOST": "127.0.0.1",
                    "WEB_METRICS_PORT": "0",
                    "WEB_SEARCH_ADDRESS": search_address,
                    **self._web_security_env(),
                    **config.extra_env,
                },
                ready_line=r"web listening on (https?)://(\S+):(\d+)",
                probe=ready,
            )
        )
        # The probe needs the port, which the ready line gives: wait for it first.
        while web.ready_match is None:
            self._check_any_alive()
            if time.monotonic() > deadline:
                raise StackError(self._timeout_message(web))
            web.wait_line(_POLL_S)
        scheme, port = web.ready_match.group(1), web.ready_match.group(3)
        url.append(f"{scheme}://{_connect_host(config.host)}:{port}")
        self._wait_ready(web, deadline)
        return url[0]

    def _spawn(self, spec: ChildSpec) -> Child:
        self.announce(f"starting {spec.name}")
        try:
            child = Child(spec, self.log_dir)
        except OSError as exc:
            hint = " (run `make setup`)" if isinstance(exc, FileNotFoundError) else ""
            raise StackError(f"cannot start {spec.name}: {spec.argv[0]}: {exc}{hint}") from exc
        self.children.append(child)
        return child

    def _start_redis(self) -> str:
        port = self.config.redis_port or free_port()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        if self.secure is not None:
            return self._start_secure_redis(port, redis_dir, self.secure)
        self._spawn(
            ChildSpec(
                name="redis",
                argv=[
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    # A query cache: nothing worth persisting, nothing to reload.
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(redis_dir),
                ],
                probe=lambda: _redis_ping("127.0.0.1", port),
            )
        )
        return f"redis://127.0.0.1:{port}/0"

    def _start_secure_redis(self, port: int, redis_dir: Path, secure: SecureFiles) -> str:
        """Redis on TLS only, password required; the config file holds only its hash."""
        config = secure.redis_config(port, redis_dir)
        self._spawn(
            ChildSpec(
                name="redis",
                argv=["redis-server", str(config)],
                probe=lambda: redis_tls_alive(port, secure.ca),
            )
        )
        return f"rediss://127.0.0.1:{port}/0"

    def _start_milvus(self) -> str:
        port = self.config.milvus_port or free_port()
        if self.config.milvus == "lite":
            self._spawn(
                ChildSpec(
                    name="milvus",
                    argv=[
                        self.config.python,
                        "-m",
                        "milvus_lite",
                        "server",
                        "--data-dir",
                        str(self.data_dir / "milvus-lite"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    stop_signal=signal.SIGINT,
                    ready_line=r"MilvusLite gRPC server listening on",
                    probe=lambda: _tcp_accepts("127.0.0.1", port),
                )
            )
        else:
            spec, uri = _standalone_spec(
                self.data_dir / "milvus-standalone", port, self.config, self.secure
            )
            self._spawn(spec)
            return uri
        return f"http://127.0.0.1:{port}"

    def _check_alive(self, child: Child) -> None:
        code = child.exit_code()
        if code is not None:
            raise StackError(self.describe_exit(child, code))
        if self.stop_requested.is_set():
            raise StackError("stopped before the stack was ready")

    def _wait_ready(self, child: Child, deadline: float) -> None:
        """Wait for the child's ready line (if any) and then its probe (if any)."""
        while child.spec.ready_line and child.ready_match is None:
            self._check_any_alive()
            if time.monotonic() > deadline:
                raise StackError(self._timeout_message(child))
            child.wait_line(_POLL_S)
        probe = child.spec.probe
        while probe is not None and not probe():
            self._check_any_alive()
            if time.monotonic() > deadline:
                raise StackError(self._timeout_message(child))
            time.sleep(_POLL_S)
        self.announce(f"{child.name} is ready")

    def _check_any_alive(self) -> None:
        for child in self.children:
            self._check_alive(child)

    def _health_channel(self, address: str) -> grpc.Channel:
        if self.secure is None:
            return grpc.insecure_channel(address)
        # The Embedder requires a client certificate (mTLS): present Search's.
        cert, key = self.secure.cert("search-client")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.secure.ca.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )
        return grpc.secure_channel(address, credentials)

    def _wait_grpc_serving(self, child: Child, address: str, deadline: float) -> None:
        """Poll grpc.health.v1 (open to every caller) until the server says SERVING."""
        with self._health_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_any_alive()
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(self._timeout_message(child))
                time.sleep(_POLL_S)

    def _timeout_message(self, child: Child) -> str:
        return (
            f"{child.name} was not ready after {self.config.startup_timeout_s:.0f} s;"
            f" last lines of {child.log_path}:\n{child.tail()}"
        )

    @staticmethod
    def describe_exit(child: Child, code: int) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"{child.name} {how}; last lines of {child.log_path}:\n{child.tail()}"

    # --- running and stopping

    def wait(self) -> Child | None:
        """Block until a child exits (returned) or `stop_requested` is set (None)."""
        while not self.stop_requested.is_set():
            for child in self.children:
                if child.exit_code() is not None:
                    return child
            self.stop_requested.wait(_POLL_S)
        return None

    def stop(self) -> dict[str, int]:
        """Stop every child; returns each one's exit code.

        The callers inside the stack (web, then Search) stop first, the last
        started first, so nothing new reaches the back ends; then the back ends
        (Embedder, Milvus, Redis), which no longer have a caller, stop together
        (Milvus's flush and stop dominate; the others need not wait for it).
        """
        codes: dict[str, int] = {}
        callers = [child for child in self.children if child.name in _CALLERS]
        backends = [child for child in self.children if child.name not in _CALLERS]
        for child in reversed(callers):
            self._announce_stop(child)
            codes[child.name] = self._stop_child(child)
        for child in reversed(backends):  # announced here: one line each, in order
            self._announce_stop(child)

        def stop_backend(child: Child) -> None:
            codes[child.name] = self._stop_child(child)

        threads = [
            threading.Thread(target=stop_backend, args=(child,), name=f"stop-{child.name}")
            for child in reversed(backends)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.children.clear()
        if self.data_lock is not None and self._given_lock is None:
            self.data_lock.release()
            self.data_lock = None
        return codes

    def _announce_stop(self, child: Child) -> None:
        if child.exit_code() is None:
            self.announce(f"stopping {child.name}")

    def _stop_child(self, child: Child) -> int:
        timeout = child.spec.stop_timeout_s
        return child.stop(self.config.stop_timeout_s if timeout is None else timeout)


# Children that call the others: stopped first, so the back ends see no new work.
_CALLERS = frozenset({"web", "search"})


def _standalone_spec(
    data_dir: Path, port: int, config: StackConfig, secure: SecureFiles | None
) -> tuple[ChildSpec, str]:
    """The real Milvus standalone server, flushed and released before its SIGTERM; its URI.

    With `secure` (`imgsearch up --secure`) it serves TLS and requires the
    generated root password, which the readiness probe sets on first start.
    """
    metrics_port, etcd_port = free_port(), free_port()
    uri = f"{'https' if secure else 'http'}://127.0.0.1:{port}"

    def ready() -> bool:
        # Sessions of the previous run on this data directory block the start
        # until their lease ends (milvus_standalone's docstring): end them now.
        milvus_standalone.revoke_stale_sessions(etcd_port)
        if secure is None:
            return milvus_standalone.answers(port, metrics_port)
        return milvus_standalone.healthz(metrics_port) and _milvus_secured(uri, secure)

    def flush_and_release() -> str:
        from pymilvus.exceptions import MilvusException

        options = {}
        if secure is not None:
            options = {"token": secure.milvus_token.read_text().strip(), "secure": True,
                       "server_pem_path": str(secure.ca)}  # fmt: skip
        try:
            flushed = milvus_standalone.prepare_stop(uri, **options)
        except (MilvusException, grpc.RpcError, OSError) as exc:
            return f"flush failed ({type(exc).__name__}: {exc})"
        return f"flushed and released {len(flushed)} collections"

    argv = [config.python, "-m", "imgsearch.milvus_standalone", "--data-dir", str(data_dir),
            "--port", str(port), "--metrics-port", str(metrics_port),
            "--etcd-port", str(etcd_port)]  # fmt: skip
    if secure is not None:
        argv += ["--secure-dir", str(secure.directory)]
    spec = ChildSpec(
        name="milvus",
        argv=argv,
        probe=ready,
        before_stop=flush_and_release,
        clean_exit_line=milvus_standalone.CLEAN_EXIT_LINE,
        # Flushed and released, it stops within a second or two; the margin is
        # for a loaded machine. Its write-ahead log holds acknowledged writes
        # even if it must be killed (say, the flush failed).
        stop_timeout_s=15.0,
    )
    return spec, uri


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _redis_ping(host: str, port: int) -> bool:
    """True when a Redis server answers PING (raw RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _milvus_secured(uri: str, secure: SecureFiles) -> bool:
    """True once Milvus answers over TLS with the generated root password (set on first start)."""
    try:
        ensure_milvus_password(uri, secure)
    except Exception:  # noqa: BLE001 -- not ready yet: the probe is called again
        return False
    return True


def _http_ok(url: str, ca: Path | None = None) -> bool:
    """True when a GET of `url` answers 200 (https: trusting the CA file `ca`)."""
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as reply:  # noqa: S310
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError):
        return False
