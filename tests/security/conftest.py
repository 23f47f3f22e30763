"""Fixtures of the security tests: a private CA (and a foreign one), certificates, tokens.

Everything is real: certificates from `imgsearch.common.pki` (the code
`imgsearch up --secure` uses), TLS over loopback, tokens checked by the
services' own interceptor. `Credentials.principals(...)` writes a principals
file holding token hashes only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imgsearch.common.auth import new_token, principal_line, token_hash
from imgsearch.common.pki import CertificateAuthority, write_private

LOOPBACK_NAMES = ["localhost", "127.0.0.1"]


@dataclass
class Credentials:
    """A CA that the services trust, one they do not, and helpers to issue and write."""

    directory: Path
    ca: CertificateAuthority
    foreign_ca: CertificateAuthority
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ca_file(self) -> Path:
        assert self.ca.certificate_file is not None
        return self.ca.certificate_file

    @property
    def foreign_ca_file(self) -> Path:
        assert self.foreign_ca.certificate_file is not None
        return self.foreign_ca.certificate_file

    def server_cert(
        self, stem: str, *, ca: CertificateAuthority | None = None, names: list[str] | None = None
    ) -> tuple[Path, Path]:
        issued = (ca or self.ca).issue_to(
            self.directory, stem, f"{stem}.test", names or LOOPBACK_NAMES
        )
        assert issued.certificate_file is not None
        assert issued.key_file is not None
        return issued.certificate_file, issued.key_file

    def client_cert(self, stem: str, name: str) -> tuple[Path, Path]:
        issued = self.ca.issue_to(self.directory, stem, name, [name], server=False, client=True)
        assert issued.certificate_file is not None
        assert issued.key_file is not None
        return issued.certificate_file, issued.key_file

    def token(self, name: str) -> str:
        """A token per name, made once."""
        if name not in self.tokens:
            self.tokens[name] = new_token()
        return self.tokens[name]

    def token_file(self, name: str) -> Path:
        return write_private(self.directory / f"{name}.token", self.token(name) + "\n")

    def principals(self, filename: str, entries: Iterable[tuple[str, Iterable[str]]]) -> Path:
        """A principals file with one token principal per (name, scopes)."""
        lines = [
            principal_line(name, scopes, token_hash(self.token(name))) for name, scopes in entries
        ]
        return write_private(self.directory / filename, "\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    directory = tmp_path_factory.mktemp("pki")
    return Credentials(
        directory=directory,
        ca=CertificateAuthority.create(directory / "ca"),
        foreign_ca=CertificateAuthority.create(directory / "foreign-ca", "some other CA"),
    )
