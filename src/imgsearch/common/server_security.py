"""A server's TLS credentials, auth interceptor and health-probe port, built from its settings.

`server_security(settings, ...)` is what each service's server factory calls
before `create_grpc_server`: it checks that the TLS and auth settings fit
together, loads the certificate and principals files (so a bad file stops
the process at start-up with a message naming the setting), and returns the
credentials for `add_secure_port` and the interceptor to install.

The kubelet's gRPC probes speak neither TLS nor tokens. With
`health_probe_port` set, a second, plaintext server on that port serves the
same health status (the same `grpc.health.v1` servicer) and nothing else:
probes keep their readiness semantics while every service method stays
behind TLS and auth.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry

from imgsearch.common.auth import AuthInterceptor, AuthMetrics, PrincipalStore
from imgsearch.common.grpc_runtime import EXCLUSIVE_PORT_OPTIONS, HealthState, bind_port
from imgsearch.common.settings import ConfigurationError, ServerSettings
from imgsearch.common.tls import ServerCertificates, server_credentials

_log = logging.getLogger(__name__)


class HealthProbeServer:
    """A plaintext gRPC server with only `grpc.health.v1`, sharing the main server's status."""

    def __init__(self, address: str, health_state: HealthState) -> None:
        self.server = grpc.aio.server(options=EXCLUSIVE_PORT_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, self.server)
        self.port = bind_port(self.server, address, what="health probe")

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace_s: float | None = None) -> None:
        await self.server.stop(grace_s)


@dataclass
class ServerSecurity:
    """What the server factory needs: credentials (None: plaintext), interceptors, probe port."""

    credentials: grpc.ServerCredentials | None
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    certificates: ServerCertificates | None = None
    principals: PrincipalStore | None = None
    probe: HealthProbeServer | None = None

    async def start(self) -> None:
        """Start the health probe port, if any (call with the main server's start)."""
        if self.probe is not None:
            await self.probe.start()

    async def stop(self) -> None:
        """Stop the health probe port, if any (call after the main server stopped)."""
        if self.probe is not None:
            await self.probe.stop(0)


def server_security(
    settings: ServerSettings,
    services: Sequence[str],
    registry: CollectorRegistry,
    prefix: str,
    health_state: HealthState,
) -> ServerSecurity:
    """TLS credentials, auth interceptor and probe port of one server (not started yet).

    `services`: full names of the services the server exposes (for the
    reflection rule); `prefix`: the settings' environment prefix, for
    messages. Raises ConfigurationError when the settings cannot work.
    """
    credentials, certificates = server_credentials(
        settings.tls_mode,
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
        setting_prefix=prefix,
    )
    security = ServerSecurity(credentials=credentials, certificates=certificates)
    if settings.auth_mode == "none":
        _log.warning(
            "authentication is off (%sAUTH_MODE=none): anyone who reaches the port may call"
            " every method",
            prefix,
        )
    else:
        if settings.auth_file is None:
            raise ConfigurationError(
                f"authentication is on ({prefix}AUTH_MODE=enforce) but {prefix}AUTH_FILE is not"
                f" set: give the principals file (docs/security.md), or set {prefix}AUTH_MODE=none"
            )
        security.principals = PrincipalStore(settings.auth_file)
        security.interceptors.append(
            AuthInterceptor(
                security.principals,
                services,
                AuthMetrics(registry),
                trust_client_certificates=settings.tls_mode == "mtls",
            )
        )
    if settings.tls_mode == "plaintext":
        _log.warning("TLS is off (%sTLS_MODE=plaintext): calls travel unencrypted", prefix)
    if settings.health_probe_port is not None:
        address = f"{settings.host}:{settings.health_probe_port}"
        security.probe = HealthProbeServer(address, health_state)
    return security
