"""How the Search service authenticates to, and encrypts its calls to, its dependencies.

One function per dependency turns `SearchSettings` into what its client needs;
each raises `ConfigurationError` (naming the settings, never a secret) when
the settings cannot work, so a misconfigured process stops at start-up:

- Embedder: TLS (the default; `embedder_tls_mode=plaintext` to turn it off),
  optionally a client certificate (mutual TLS), and a bearer token read from
  `embedder_token_file`, re-read when the file changes.
- Redis: `rediss://` URLs get TLS verified against `redis_tls_ca_file` (and a
  client certificate if given); the password comes from `redis_password_file`
  through a redis-py credential provider, so a rotated password is used by
  every new connection without a restart.
- Milvus: TLS when the URI is `https://` or a CA is given, mutual TLS with a
  client certificate, credentials from `milvus_token_file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
from redis.credentials import CredentialProvider

from imgsearch.common.secret_files import SecretFile, read_secret
from imgsearch.common.settings import ConfigurationError
from imgsearch.common.tls import channel_credentials
from imgsearch_search.settings import SearchSettings


def redact_url(url: str) -> str:
    """`url` without its password (for logs and messages): `redis://:***@host:6379/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class EmbedderChannelSecurity:
    """Credentials (None: plaintext), channel options and the token of the Embedder channel."""

    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...] = ()
    token: SecretFile | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The `authorization` metadata of one call (empty without a token)."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token.get()}"),)


def _pair(cert: Path | None, key: Path | None, what: str) -> None:
    if (cert is None) != (key is None):
        raise ConfigurationError(f"{what}: give both the client certificate and its key file")


def embedder_channel_security(settings: SearchSettings) -> EmbedderChannelSecurity:
    """How to reach the Embedder: TLS credentials, server-name override and token."""
    _pair(settings.embedder_tls_cert_file, settings.embedder_tls_key_file, "SEARCH_EMBEDDER_TLS")
    token = None
    if settings.embedder_token_file is not None:
        token = SecretFile(settings.embedder_token_file, "Embedder token file")
    if settings.embedder_tls_mode == "plaintext":
        if settings.embedder_tls_ca_file or settings.embedder_tls_cert_file:
            raise ConfigurationError(
                "SEARCH_EMBEDDER_TLS_MODE=plaintext but Embedder TLS files are set: remove them"
                " or use SEARCH_EMBEDDER_TLS_MODE=tls"
            )
        return EmbedderChannelSecurity(credentials=None, token=token)
    credentials = channel_credentials(
        settings.embedder_tls_ca_file,
        settings.embedder_tls_cert_file,
        settings.embedder_tls_key_file,
    )
    options: tuple[tuple[str, Any], ...] = ()
    if settings.embedder_tls_server_name:
        options = (("grpc.ssl_target_name_override", settings.embedder_tls_server_name),)
    return EmbedderChannelSecurity(credentials=credentials, options=options, token=token)


class PasswordFileCredentials(CredentialProvider):
    """redis-py credentials: a fixed user name (may be empty) and the password file's content."""

    def __init__(self, username: str, password: SecretFile) -> None:
        self._username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        if self._username:
            return (self._username, self._password.get())
        return (self._password.get(),)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def redis_connection_options(settings: SearchSettings) -> tuple[str, dict[str, Any]]:
    """The URL to connect to (user name moved out of it) and the extra redis-py options."""
    parts = urlsplit(settings.redis_url)
    options: dict[str, Any] = {}
    url = settings.redis_url
    if settings.redis_password_file is not None:
        if parts.password:
            raise ConfigurationError(
                "SEARCH_REDIS_URL carries a password and SEARCH_REDIS_PASSWORD_FILE is set:"
                " keep the password in the file only"
            )
        password = SecretFile(settings.redis_password_file, "Redis password file")
        options["credential_provider"] = PasswordFileCredentials(parts.username or "", password)
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=host))
    tls_files = (settings.redis_tls_ca_file, settings.redis_tls_cert_file)
    if parts.scheme != "rediss":
        if any(tls_files):
            raise ConfigurationError(
                "SEARCH_REDIS_TLS_* files are set but SEARCH_REDIS_URL is not rediss://"
            )
        return url, options
    _pair(settings.redis_tls_cert_file, settings.redis_tls_key_file, "SEARCH_REDIS_TLS")
    options["ssl_cert_reqs"] = "required"
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
        options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return url, options


def milvus_connection_options(settings: SearchSettings) -> dict[str, Any]:
    """Keyword arguments of `pymilvus.MilvusClient` for credentials and TLS."""
    token = settings.milvus_token.get_secret_value()
    if settings.milvus_token_file is not None:
        if token:
            raise ConfigurationError(
                "both SEARCH_MILVUS_TOKEN and SEARCH_MILVUS_TOKEN_FILE are set: keep the file"
            )
        token = read_secret(settings.milvus_token_file, "Milvus token file")
    options: dict[str, Any] = {"token": token}
    ca, cert, key = (
        settings.milvus_tls_ca_file,
        settings.milvus_tls_cert_file,
        settings.milvus_tls_key_file,
    )
    _pair(cert, key, "SEARCH_MILVUS_TLS")
    secure = urlsplit(settings.milvus_uri).scheme == "https" or ca is not None
    if not secure:
        if cert is not None:
            raise ConfigurationError(
                "a Milvus client certificate needs TLS: set SEARCH_MILVUS_TLS_CA_FILE"
            )
        return options
    options["secure"] = True
    if cert is not None:
        if ca is None:
            raise ConfigurationError("Milvus mutual TLS needs SEARCH_MILVUS_TLS_CA_FILE too")
        options.update(ca_pem_path=str(ca), client_pem_path=str(cert), client_key_path=str(key))
    elif ca is not None:
        # pymilvus names the CA that verifies the server "server_pem_path" in one-way TLS.
        options["server_pem_path"] = str(ca)
    if settings.milvus_tls_server_name:
        options["server_name"] = settings.milvus_tls_server_name
    return options


def check_outbound_settings(settings: SearchSettings) -> None:
    """Check the Redis and Milvus security settings and files now (ConfigurationError if not)."""
    if settings.cache_enabled:
        redis_connection_options(settings)
    milvus_connection_options(settings)
