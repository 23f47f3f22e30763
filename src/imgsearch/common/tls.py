"""TLS for the gRPC services and their clients, from certificate files that may rotate.

Servers: `server_credentials(settings)` turns the TLS settings every server
has (`ServerSettings.tls_*`) into `grpc.dynamic_ssl_server_credentials`. gRPC
calls our fetcher (`ServerCertificates`) whenever it accepts a connection;
when the certificate, key or client CA files have changed on disk (a renewed
cert-manager Secret, a rotated `kubectl create secret tls`), it hands gRPC the
new ones, which apply to new connections. Established connections, and the
calls in flight on them, keep the old ones: nothing is dropped. A half-written
rotation (a certificate whose key has not arrived yet) is refused and the
previous pair stays in use until the pair on disk matches.

Clients: `channel_credentials(...)` builds `grpc.ssl_channel_credentials`
from a CA bundle (None: the system roots) and, for mutual TLS, a client
certificate and key.

`tls_mode` is `tls` (server certificate), `mtls` (also require a client
certificate signed by `tls_client_ca_file`) or `plaintext`, which must be
asked for: the default is `tls`, and a server without its certificate files
refuses to start.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imgsearch.common.secret_files import FileWatch, SecretFileError, read_bytes
from imgsearch.common.settings import ConfigurationError

TlsMode = Literal["tls", "mtls", "plaintext"]
_log = logging.getLogger(__name__)


class TlsConfigurationError(ConfigurationError):
    """TLS settings that cannot work (a missing file, a key that does not match its certificate)."""


def _public_key_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_pair(certificate_pem: bytes, key_pem: bytes, where: str) -> x509.Certificate:
    """Parse a PEM certificate (chain: the first one is the leaf) and check its key matches.

    Returns the leaf certificate; raises TlsConfigurationError naming `where`.
    """
    try:
        certificate = x509.load_pem_x509_certificates(certificate_pem)[0]
    except ValueError as error:
        raise TlsConfigurationError(f"{where}: the certificate is not PEM: {error}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise TlsConfigurationError(
            f"{where}: the key is not an unencrypted PEM private key: {error}"
        ) from None
    if _public_key_bytes(key.public_key()) != _public_key_bytes(certificate.public_key()):
        raise TlsConfigurationError(f"{where}: the key does not belong to the certificate")
    return certificate


def _check_validity(certificate: x509.Certificate, where: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        _log.error(
            "TLS certificate has expired",
            extra={"where": where, "not_after": certificate.not_valid_after_utc.isoformat()},
        )
    elif certificate.not_valid_before_utc > now:
        _log.warning("TLS certificate is not valid yet", extra={"where": where})


class ServerCertificates:
    """Server certificate, key and (mTLS) client CA files, as gRPC certificate configurations.

    Use `initial` for the server's first configuration and the instance itself
    as gRPC's certificate-configuration fetcher: it returns a new
    configuration when the files changed and form a valid pair, else None
    (keep using the current one).
    """

    def __init__(
        self,
        certificate_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.certificate_file = Path(certificate_file)
        self.key_file = Path(key_file)
        self.client_ca_file = Path(client_ca_file) if client_ca_file else None
        files = [self.certificate_file, self.key_file]
        if self.client_ca_file is not None:
            files.append(self.client_ca_file)
        self._watch = FileWatch(*files, interval_s=interval_s)
        self.initial, self.certificate = self._load()

    def _load(self) -> tuple[grpc.ServerCertificateConfiguration, x509.Certificate]:
        certificate_pem = read_bytes(self.certificate_file, "TLS certificate")
        key_pem = read_bytes(self.key_file, "TLS key")
        certificate = check_key_pair(certificate_pem, key_pem, str(self.certificate_file))
        _check_validity(certificate, str(self.certificate_file))
        client_ca = None
        if self.client_ca_file is not None:
            client_ca = read_bytes(self.client_ca_file, "TLS client CA bundle")
        configuration = grpc.ssl_server_certificate_configuration(
            [(key_pem, certificate_pem)], root_certificates=client_ca
        )
        return configuration, certificate

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration when the files changed, else None."""
        if not self._watch.changed():
            return None
        try:
            configuration, certificate = self._load()
        except (SecretFileError, TlsConfigurationError) as error:
            _log.error("keeping the current TLS certificate: %s", error)
            return None
        self.certificate = certificate
        _log.info(
            "reloaded TLS certificate",
            extra={
                "subject": certificate.subject.rfc4514_string(),
                "not_after": certificate.not_valid_after_utc.isoformat(),
            },
        )
        return configuration


def server_credentials(
    mode: TlsMode,
    certificate_file: Path | None,
    key_file: Path | None,
    client_ca_file: Path | None,
    setting_prefix: str = "",
) -> tuple[grpc.ServerCredentials | None, ServerCertificates | None]:
    """gRPC server credentials for `mode` (None for plaintext), and the reloading fetcher.

    Raises TlsConfigurationError, naming the settings to set, when files are
    missing or do not fit together.
    """
    if mode == "plaintext":
        return None, None
    if certificate_file is None or key_file is None:
        raise TlsConfigurationError(
            f"TLS is on ({setting_prefix}TLS_MODE={mode}) but {setting_prefix}TLS_CERT_FILE and"
            f" {setting_prefix}TLS_KEY_FILE are not both set; give the server certificate and key"
            f" files, or set {setting_prefix}TLS_MODE=plaintext to serve without TLS"
        )
    if mode == "mtls" and client_ca_file is None:
        raise TlsConfigurationError(
            f"{setting_prefix}TLS_MODE=mtls needs {setting_prefix}TLS_CLIENT_CA_FILE: the CA"
            " bundle that signs the client certificates to accept"
        )
    try:
        certificates = ServerCertificates(
            certificate_file, key_file, client_ca_file if mode == "mtls" else None
        )
    except SecretFileError as error:
        raise TlsConfigurationError(str(error)) from None
    credentials = grpc.dynamic_ssl_server_credentials(
        certificates.initial, certificates, require_client_authentication=(mode == "mtls")
    )
    return credentials, certificates


def channel_credentials(
    ca_file: Path | None = None,
    certificate_file: Path | None = None,
    key_file: Path | None = None,
) -> grpc.ChannelCredentials:
    """Client TLS credentials: trust `ca_file` (None: the system roots); present a client
    certificate when `certificate_file` and `key_file` are given (mutual TLS).

    Raises SecretFileError / TlsConfigurationError naming the file when one is unusable.
    """
    roots = read_bytes(ca_file, "TLS CA bundle") if ca_file is not None else None
    if roots is not None:
        _check_ca_bundle(roots, ca_file)
    if (certificate_file is None) != (key_file is None):
        raise TlsConfigurationError(
            "a client certificate needs both its certificate file and its key file"
        )
    chain = key = None
    if certificate_file is not None and key_file is not None:
        chain = read_bytes(certificate_file, "TLS client certificate")
        key = read_bytes(key_file, "TLS client key")
        check_key_pair(chain, key, str(certificate_file))
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _check_ca_bundle(pem: bytes, ca_file: Path | None) -> None:
    """TlsConfigurationError unless `pem` holds PEM certificates (gRPC only logs a failure)."""
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsConfigurationError(
            f"TLS CA bundle {ca_file} holds no PEM certificate"
            " (expected -----BEGIN CERTIFICATE----- blocks)"
        ) from None


def peer_certificate_names(auth_context: dict[str, list[bytes]]) -> list[str]:
    """Names in the verified client certificate of a call (its subject alternative names).

    Empty when the peer presented no certificate (or TLS is off). Only
    meaningful when the server requires and verifies client certificates.
    """
    return [
        value.decode(errors="replace")
        for value in auth_context.get("x509_subject_alternative_name", [])
    ]
