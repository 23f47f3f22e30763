"""The gateway's HTTPS, as deployed: the process serves the certificate files it is given,
follows them when they rotate on disk (cert-manager renews them), and refuses to start on a
pair that cannot work.

Real processes, real TLS over loopback, certificates from a throwaway CA
(`imgsearch.common.pki`). Search is not needed: /healthz answers without it.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from imgsearch.common.pki import CertificateAuthority
from imgsearch.common.tls import TlsConfigurationError
from imgsearch_web.tls import ReloadingServerTls
from tests.fixtures.processes import ChildProcess

_ENV = {"WEB_LOG_LEVEL": "INFO", "WEB_LOG_JSON": "false", "WEB_METRICS_PORT": "0"}


def _command(cert: Path, key: Path) -> list[str]:
    return [
        sys.executable, "-m", "imgsearch_web", "--host", "127.0.0.1", "--port", "0",
        "--search-address", "127.0.0.1:1", "--tls-cert-file", str(cert), "--tls-key-file", str(key),
    ]  # fmt: skip


def _served_certificate(url: str, ca: Path) -> x509.Certificate:
    """The certificate the server presents to a client that trusts `ca` (verified)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _write_pair(ca: CertificateAuthority, cert: Path, key: Path, name: str) -> int:
    """Issue a server certificate for localhost, write it in place; return its serial number."""
    issued = ca.issue(name, ["localhost", "127.0.0.1"])
    # As a Secret volume does: new files, then an atomic switch (rename) of each.
    for path, data in ((key, issued.key_pem), (cert, issued.certificate_pem)):
        fresh = path.with_suffix(".new")
        fresh.write_bytes(data)
        fresh.replace(path)
    return x509.load_pem_x509_certificate(issued.certificate_pem).serial_number


def test_https_certificate_rotates_on_disk_without_a_restart(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    assert ca.certificate_file is not None
    cert, key = tmp_path / "web.pem", tmp_path / "web-key.pem"
    first = _write_pair(ca, cert, key, "web-1")
    child = ChildProcess("web", _command(cert, key), env={**os.environ, **_ENV})
    try:
        url = child.wait_for_line(r"web listening on (https://\S+)", timeout=60)[1]
        trust = ssl.create_default_context(cafile=str(ca.certificate_file))
        with httpx.Client(verify=trust) as http:
            local = url.replace("127.0.0.1", "localhost")
            assert http.get(f"{local}/healthz", timeout=10).status_code == 200
            assert _served_certificate(url, ca.certificate_file).serial_number == first
            # A half-done rotation (the new certificate, the old key) is refused: the
            # previous pair stays in use, and the service keeps answering.
            other = ca.issue("web-other", ["localhost"])
            time.sleep(1.1)
            cert.write_bytes(other.certificate_pem)
            time.sleep(1.2)
            assert _served_certificate(url, ca.certificate_file).serial_number == first
            assert http.get(f"{local}/healthz", timeout=10).status_code == 200
            # The renewed pair arrives: new connections get it, no restart.
            second = _write_pair(ca, cert, key, "web-2")
            deadline = time.monotonic() + 15
            while _served_certificate(url, ca.certificate_file).serial_number != second:
                assert time.monotonic() < deadline, child.tail()
                time.sleep(0.3)
            assert http.get(f"{local}/healthz", timeout=10).status_code == 200
        child.wait_for_line("keeping the current HTTPS certificate", timeout=5)
        child.wait_for_line("reloaded HTTPS certificate", timeout=5)
        assert child.proc.poll() is None, "the process kept running"
    finally:
        child.stop()


def _broken_pair(tmp_path: Path, problem: str) -> tuple[Path, Path]:
    ca = CertificateAuthority.create(tmp_path / "ca")
    cert, key = tmp_path / "web.pem", tmp_path / "web-key.pem"
    _write_pair(ca, cert, key, "web")
    if problem == "missing":
        key.unlink()
    elif problem == "mismatch":
        key.write_bytes(ca.issue("other", ["localhost"]).key_pem)
    else:
        cert.write_text("not a certificate\n")
    return cert, key


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("missing", "cannot read TLS key"),
        ("mismatch", "the key does not belong to the certificate"),
        ("garbage", "the certificate is not PEM"),
    ],
)
def test_a_certificate_pair_that_cannot_work_is_refused_with_its_reason(
    tmp_path: Path, problem: str, reason: str
) -> None:
    cert, key = _broken_pair(tmp_path, problem)
    with pytest.raises(TlsConfigurationError, match=reason):
        ReloadingServerTls(cert, key)


def test_the_process_does_not_start_on_a_bad_pair(tmp_path: Path) -> None:
    cert, key = _broken_pair(tmp_path, "mismatch")
    done = subprocess.run(
        _command(cert, key), env={**os.environ, **_ENV}, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot serve HTTPS" in output
    assert "does not belong to the certificate" in output
    assert "Traceback" not in output
    assert "listening" not in output
