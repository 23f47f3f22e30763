"""What `imgsearch up --secure` generates and how each child is configured with it.

`SecureFiles.prepare(directory, hosts)` makes, under `<data_dir>/secure/`
(mode 0700; every key, token and password file 0600):

- a private CA (`ca.pem`, `ca-key.pem`) kept across runs, so clients that
  trust it keep working after a restart;
- server certificates for the Embedder, Search, Redis, Milvus and the web
  gateway (HTTPS), and a
  client certificate for Search (its identity at the Embedder), for
  `localhost`, `127.0.0.1` and the bind host; re-issued at every start;
- one bearer token per scope for Search (`search.token`: search;
  `write.token`: write and search, since ingestion reads before it writes;
  `admin.token`: admin), kept across runs, and the principals files the
  services check (`search-principals.txt` with token hashes,
  `embedder-principals.txt` admitting only Search's client certificate);
- a Redis password (`redis-password`, read by Search) and the `redis.conf`
  that enables TLS and stores only the password's SHA-256;
- a Milvus password (`milvus-token`, `root:PASSWORD`) used with the real
  Milvus standalone server (`--milvus standalone`); Milvus Lite's server has
  neither TLS nor authentication and stays bound to 127.0.0.1.

The `*_env` functions give each child its settings: file paths, never a
secret's value, so nothing secret is on a command line or in the environment.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from imgsearch.common.auth import ADMIN, EMBED, SEARCH, WRITE, new_token, principal_line, token_hash
from imgsearch.common.pki import CertificateAuthority, private_dir, write_private

SEARCH_CLIENT_NAME = "search.client.imgsearch.local"
TOKEN_SCOPES = {"search": (SEARCH,), "write": (WRITE, SEARCH), "admin": (ADMIN,)}

# What `imgsearch up` without --secure gives its children: asked for explicitly,
# since the services are secure by default. Bound to 127.0.0.1 unless --host.
OPEN_EMBEDDER_ENV = {"EMBEDDER_TLS_MODE": "plaintext", "EMBEDDER_AUTH_MODE": "none"}
OPEN_SEARCH_ENV = {
    "SEARCH_TLS_MODE": "plaintext",
    "SEARCH_AUTH_MODE": "none",
    "SEARCH_EMBEDDER_TLS_MODE": "plaintext",
}


def _load_ca(directory: Path) -> CertificateAuthority:
    """The CA of an earlier run when there is one, else a new one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
    if cert_file.exists() and key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
            return CertificateAuthority(certificate, key, cert_file)
    return CertificateAuthority.create(directory)


def _kept_secret(path: Path, make: str) -> str:
    """The secret in `path` from an earlier run, else `make` written there (0600)."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    write_private(path, make + "\n")
    return make


@dataclass(frozen=True)
class SecureFiles:
    """Paths of everything `imgsearch up --secure` generated (see the module docstring)."""

    directory: Path
    ca: Path
    tokens: dict[str, Path]
    search_principals: Path
    embedder_principals: Path
    redis_password: Path
    milvus_token: Path

    def cert(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files of `name`: embedder, search, search-client, redis, milvus,
        web."""
        return self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"

    @classmethod
    def prepare(cls, directory: Path, hosts: list[str]) -> SecureFiles:
        """Create (or refresh) the CA, certificates, tokens and passwords under `directory`."""
        private_dir(directory)
        ca = _load_ca(directory)
        names = list(dict.fromkeys(["localhost", "127.0.0.1", *hosts]))
        for service in ("embedder", "search", "redis", "milvus", "web"):
            ca.issue_to(directory, service, f"{service}.imgsearch.local", names)
        ca.issue_to(
            directory, "search-client", SEARCH_CLIENT_NAME, [SEARCH_CLIENT_NAME],
            server=False, client=True,
        )  # fmt: skip
        tokens, lines = {}, []
        for name, scopes in TOKEN_SCOPES.items():
            tokens[name] = directory / f"{name}.token"
            token = _kept_secret(tokens[name], new_token())
            lines.append(principal_line(name, scopes, token_hash(token)))
        search_principals = write_private(
            directory / "search-principals.txt", "\n".join(lines) + "\n"
        )
        embedder_principals = write_private(
            directory / "embedder-principals.txt",
            principal_line("search", [EMBED], f"x509:{SEARCH_CLIENT_NAME}") + "\n",
        )
        redis_password = directory / "redis-password"
        _kept_secret(redis_password, secrets.token_hex(32))
        milvus_token = directory / "milvus-token"
        _kept_secret(milvus_token, f"root:{secrets.token_hex(24)}")
        assert ca.certificate_file is not None
        return cls(
            directory=directory,
            ca=directory / "ca.pem",
            tokens=tokens,
            search_principals=search_principals,
            embedder_principals=embedder_principals,
            redis_password=redis_password,
            milvus_token=milvus_token,
        )

    def embedder_env(self) -> dict[str, str]:
        cert, key = self.cert("embedder")
        return {
            "EMBEDDER_TLS_MODE": "mtls",
            "EMBEDDER_TLS_CERT_FILE": str(cert),
            "EMBEDDER_TLS_KEY_FILE": str(key),
            "EMBEDDER_TLS_CLIENT_CA_FILE": str(self.ca),
            "EMBEDDER_AUTH_MODE": "enforce",
            "EMBEDDER_AUTH_FILE": str(self.embedder_principals),
        }

    def search_env(self, redis_secure: bool, milvus_secure: bool) -> dict[str, str]:
        """Search's settings; Redis and Milvus ones only for the servers the stack started."""
        cert, key = self.cert("search")
        client_cert, client_key = self.cert("search-client")
        env = {
            "SEARCH_TLS_MODE": "tls",
            "SEARCH_TLS_CERT_FILE": str(cert),
            "SEARCH_TLS_KEY_FILE": str(key),
            "SEARCH_AUTH_MODE": "enforce",
            "SEARCH_AUTH_FILE": str(self.search_principals),
            "SEARCH_EMBEDDER_TLS_MODE": "tls",
            "SEARCH_EMBEDDER_TLS_CA_FILE": str(self.ca),
            "SEARCH_EMBEDDER_TLS_CERT_FILE": str(client_cert),
            "SEARCH_EMBEDDER_TLS_KEY_FILE": str(client_key),
        }
        if redis_secure:
            env["SEARCH_REDIS_PASSWORD_FILE"] = str(self.redis_password)
            env["SEARCH_REDIS_TLS_CA_FILE"] = str(self.ca)
        if milvus_secure:
            env["SEARCH_MILVUS_TLS_CA_FILE"] = str(self.ca)
            env["SEARCH_MILVUS_TOKEN_FILE"] = str(self.milvus_token)
        return env

    def redis_config(self, port: int, data_dir: Path) -> Path:
        """A redis.conf (0600) for a TLS-only Redis on 127.0.0.1:`port` with the password."""
        cert, key = self.cert("redis")
        digest = hashlib.sha256(self.redis_password.read_text().strip().encode()).hexdigest()
        lines = [
            "bind 127.0.0.1",
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {cert}",
            f"tls-key-file {key}",
            f"tls-ca-cert-file {self.ca}",
            # Clients authenticate with the password; no client certificate needed.
            "tls-auth-clients no",
            # Only the password's SHA-256 is stored; `nopass` is not set.
            f"user default on #{digest} ~* &* +@all",
            'save ""',
            "appendonly no",
            f"dir {data_dir}",
        ]
        return write_private(self.directory / "redis.conf", "\n".join(lines) + "\n")

    def summary(self) -> dict[str, object]:
        """What `imgsearch up --secure --json` prints: where the CA and each token are."""
        return {
            "ca": str(self.ca),
            "tokens": {name: str(path) for name, path in self.tokens.items()},
            "directory": str(self.directory),
        }


def redis_tls_alive(port: int, ca: Path) -> bool:
    """True when a TLS Redis on 127.0.0.1:`port` completes a verified handshake and answers.

    Without the password the answer is a NOAUTH error, which still proves the
    server is up (the password itself is Search's business).
    """
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except (OSError, ssl.SSLError):
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def ensure_milvus_password(uri: str, files: SecureFiles) -> None:
    """Give Milvus's root user the generated password (first start: it is still `Milvus`).

    Milvus creates `root` with the well-known password `Milvus`; the
    standalone server of `imgsearch up --secure` changes it before Search
    connects. Later starts find the password already set.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    token = files.milvus_token.read_text().strip()
    password = token.partition(":")[2]
    tls = {"secure": True, "server_pem_path": str(files.ca)}
    try:
        MilvusClient(uri=uri, token=token, **tls).close()
        return
    except MilvusException:
        pass
    client = MilvusClient(uri=uri, token="root:Milvus", **tls)  # noqa: S106 -- Milvus's default
    try:
        client.update_password("root", "Milvus", password)
    finally:
        client.close()
