"""Running the gateway: uvicorn on a socket bound here, so port 0 works and is announced.

`serve` binds the socket first (port 0 picks a free one), starts uvicorn on
it (HTTPS with `tls_cert_file`, followed as it rotates on disk: `tls`), and
once the application has started prints one line
`web listening on http(s)://HOST:PORT` on stdout for supervisors and scripts
(`imgsearch up`, tests). On SIGTERM or SIGINT, /readyz turns 503 for
`drain_delay_s` (load balancers notice), then uvicorn stops accepting and
gives in-flight requests `shutdown_grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imgsearch.common.logs import configure_logging
from imgsearch.common.metrics import start_metrics_server
from imgsearch.common.settings import ConfigurationError
from imgsearch.common.tls import TlsConfigurationError
from imgsearch_web.app import create_app
from imgsearch_web.settings import WebSettings
from imgsearch_web.tls import ReloadingServerTls

_log = logging.getLogger(__name__)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it every response waits about 40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), but a request it cannot parse gets our error shape.

    A request line or header block the parser refuses (malformed, or a URL of
    many kilobytes) never reaches the app, so uvicorn answers it with a
    plain-text 400 of its own; this answers with the API's JSON error body.
    """

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {
                "code": "INVALID_ARGUMENT",
                "message": "the HTTP request could not be parsed: it is malformed, or its URL"
                " or headers are too long (send long inputs in a JSON body instead)",
            }
        ).encode()
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class _DrainingServer(uvicorn.Server):
    """uvicorn, but the first stop signal only turns readiness off for `drain_delay_s`."""

    def __init__(self, config: uvicorn.Config, drain_delay_s: float) -> None:
        super().__init__(config)
        self._drain_delay_s = drain_delay_s
        self._draining = False
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the server; unlike uvicorn's, a clean stop then exits 0.

        uvicorn re-raises the captured signal after shutting down, so the process
        would die of it (exit -15) even when everything stopped cleanly; the
        other services exit 0 after a graceful SIGTERM, and so does this one.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._drain_delay_s <= 0 or self.loop is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.config.app.state.draining = True  # type: ignore[union-attr]
        _log.info("received %s: draining for %.1f s", signal.Signals(sig).name, self._drain_delay_s)
        stop = super().handle_exit
        self.loop.call_soon_threadsafe(self.loop.call_later, self._drain_delay_s, stop, sig, frame)


async def serve(settings: WebSettings) -> int:
    """Run the gateway until SIGTERM or SIGINT; returns the exit status."""
    registry = CollectorRegistry()
    app = create_app(settings, registry)
    app.state.draining = False
    try:
        sock = bind(settings.host, settings.port)
    except OSError as error:
        _log.error(
            "cannot listen on %s:%s: %s", settings.host, settings.port, error.strerror or error
        )
        return 1
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            tls = ReloadingServerTls(settings.tls_cert_file, settings.tls_key_file)
        except TlsConfigurationError as error:
            _log.error("cannot serve HTTPS: %s", error)
            sock.close()
            return 1
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
        http=JsonErrorHttpProtocol,
    )
    config.load()
    if tls is not None:
        # Our context, not uvicorn's: it follows the certificate files as they rotate.
        config.ssl = tls.context
    server = _DrainingServer(config, settings.drain_delay_s)
    server.loop = asyncio.get_running_loop()
    metrics = None
    if settings.metrics_port is not None:
        try:
            metrics = start_metrics_server(registry, settings.metrics_host, settings.metrics_port)
        except ConfigurationError as error:
            _log.error("cannot start: %s", error)
            sock.close()
            return 1
    running = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not running.done():  # noqa: ASYNC110 -- uvicorn has no event
            await asyncio.sleep(0.02)
        if server.started:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            scheme = "https" if tls is not None else "http"
            print(f"web listening on {scheme}://{shown}:{port}", flush=True)
        await running
    finally:
        sock.close()
        if metrics is not None:
            metrics.close()
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> None:
    """Entry point: settings from the environment (WEB_*) and command-line flags."""
    settings = WebSettings(
        _cli_parse_args=argv if argv is not None else True,
        _cli_prog_name="python -m imgsearch_web",
        _cli_kebab_case=True,
    )
    configure_logging(settings.log_level, settings.log_json)
    sys.exit(asyncio.run(serve(settings)))
