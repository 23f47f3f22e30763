"""A small private certificate authority: what `imgsearch up --secure` and the tests issue.

Production certificates come from the operator (cert-manager, a corporate CA,
`kubectl create secret tls`); this module only makes a CA and leaf
certificates for one machine, with the `cryptography` package:

- `CertificateAuthority.create(directory)`: a self-signed CA (EC P-256), its
  key written owner-only next to its certificate;
- `issue(...)`: a leaf certificate for a set of DNS names and IP addresses,
  for server use, client use or both (extended key usage);
- `write_private(path, data)`: every secret file is created with mode 0600
  (its folder 0700) before a byte is written, so it is never readable by others.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_VALIDITY = datetime.timedelta(days=365)
# Clocks of the machines involved may differ a little.
_BACKDATE = datetime.timedelta(minutes=5)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it owner-only (0700); returns it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a secret file readable and writable by its owner only (0600), atomically.

    The file is created under a temporary name with mode 0600 and renamed into
    place, so readers never see it half written or with wider permissions.
    """
    payload = data.encode() if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    temporary.replace(path)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imgsearch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate and its key, PEM encoded, and where they were written."""

    certificate_pem: bytes
    key_pem: bytes
    certificate_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    certificate_file: Path | None = None

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(
        cls,
        directory: Path | None = None,
        common_name: str = "imgsearch private CA",
        validity: datetime.timedelta = DEFAULT_VALIDITY * 5,
    ) -> CertificateAuthority:
        """A new CA; with `directory`, written there as ca.pem (0644) and ca-key.pem (0600)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _subject(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        certificate_file = None
        if directory is not None:
            private_dir(directory)
            write_private(directory / "ca-key.pem", _pem_key(key))
            certificate_file = directory / "ca.pem"
            certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate=certificate, key=key, certificate_file=certificate_file)

    def issue(
        self,
        common_name: str,
        names: Sequence[str] = (),
        *,
        server: bool = True,
        client: bool = False,
        validity: datetime.timedelta = DEFAULT_VALIDITY,
        not_before: datetime.datetime | None = None,
    ) -> IssuedCertificate:
        """A leaf certificate for `names` (DNS names or IP addresses), signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.datetime.now(datetime.UTC) - _BACKDATE
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(_subject(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        alt_names = _alt_names(names or [common_name])
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return IssuedCertificate(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=_pem_key(key),
        )

    def issue_to(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        names: Sequence[str] = (),
        **options: bool,
    ) -> IssuedCertificate:
        """`issue`, written as DIRECTORY/STEM.pem and DIRECTORY/STEM-key.pem (0600)."""
        issued = self.issue(common_name, names, **options)  # type: ignore[arg-type]
        private_dir(directory)
        certificate_file = directory / f"{stem}.pem"
        key_file = write_private(directory / f"{stem}-key.pem", issued.key_pem)
        write_private(certificate_file, issued.certificate_pem)
        return IssuedCertificate(issued.certificate_pem, issued.key_pem, certificate_file, key_file)
