"""HTTPS for the gateway from certificate files that may rotate (cert-manager, a renewed Secret).

uvicorn loads its certificate once, at start-up; a certificate renewed on disk
would be served only after a restart. `ReloadingServerTls` instead hands
uvicorn one `ssl.SSLContext` whose SNI callback, called by OpenSSL on every
TLS handshake (with or without a server name), looks at the files at most
every `interval_s` seconds and, when they changed and form a valid pair,
switches the handshake to a context built from the new ones. Connections
already open keep their certificate; nothing is dropped. A half-written
rotation (a certificate whose key has not arrived yet) is refused with a log
line and the previous pair stays in use until the pair on disk matches, the
same rules as the gRPC services' `imgsearch.common.tls.ServerCertificates`.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from cryptography import x509

from imgsearch.common.secret_files import FileWatch, SecretFileError, read_bytes
from imgsearch.common.tls import TlsConfigurationError, check_key_pair

_log = logging.getLogger(__name__)


class ReloadingServerTls:
    """The server-side TLS context of the gateway, following `certificate_file` and `key_file`.

    `context` is what the HTTP server wraps its sockets with. Raises
    TlsConfigurationError (naming the file and the problem) when the first
    pair cannot be used: a missing file, a key that does not match.
    """

    def __init__(self, certificate_file: Path, key_file: Path, *, interval_s: float = 1.0) -> None:
        self.certificate_file = Path(certificate_file)
        self.key_file = Path(key_file)
        self._watch = FileWatch(self.certificate_file, self.key_file, interval_s=interval_s)
        try:
            self.context, self.certificate = self._load()
        except SecretFileError as error:
            raise TlsConfigurationError(str(error)) from None
        self._current = self.context

    def _load(self) -> tuple[ssl.SSLContext, x509.Certificate]:
        certificate_pem = read_bytes(self.certificate_file, "TLS certificate")
        key_pem = read_bytes(self.key_file, "TLS key")
        certificate = check_key_pair(certificate_pem, key_pem, str(self.certificate_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # ssl loads only from files: the ones just checked (a rotation between the
        # two reads shows up as a mismatch here, and the next look retries).
        try:
            context.load_cert_chain(self.certificate_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise TlsConfigurationError(
                f"{self.certificate_file}: cannot load the certificate and key: {error}"
            ) from None
        context.sni_callback = self._on_handshake
        return context, certificate

    def _on_handshake(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        """OpenSSL's server-name callback: serve the newest valid certificate on disk."""
        if self._watch.changed():
            self._reload()
        if connection.context is not self._current:
            connection.context = self._current

    def _reload(self) -> None:
        try:
            context, certificate = self._load()
        except (SecretFileError, TlsConfigurationError) as error:
            _log.error("keeping the current HTTPS certificate: %s", error)
            return
        self._current, self.certificate = context, certificate
        _log.info(
            "reloaded HTTPS certificate",
            extra={
                "subject": certificate.subject.rfc4514_string(),
                "not_after": certificate.not_valid_after_utc.isoformat(),
            },
        )
