"""Usage errors of the command line are caught up front: exit 2, one line, nothing sent.

In process with typer's runner (no server is involved: each input must be
refused before any connection is made), plus one real `imgsearch` process.
"""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from imgsearch.cli.main import app
from tests.cli.conftest import IMGSEARCH

RUNNER = CliRunner()


def _usage_error(args: list[str]) -> str:
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    "address",
    ["http://127.0.0.1:5", "https://search.example:443", "127.0.0.1", "127.0.0.1:99999",
     "127.0.0.1:0", "a b:1", "grpc://host:1", ""],
)  # fmt: skip
def test_malformed_address_is_a_usage_error(address: str) -> None:
    line = _usage_error(["--address", address, "stats"])
    assert "expected host:port" in line


@pytest.mark.parametrize(
    "label", ["a b=x", "9lives=x", "key-with-dash=x", "caf\u00e9=x", f"{'k' * 65}=x"]
)
def test_bad_label_key_is_refused_before_reading_files(label: str, tmp_path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    line = _usage_error(["--address", "127.0.0.1:1", "ingest", str(tmp_path), "-l", label])
    assert "a key is a letter or _, then letters, digits or _ (at most 64)" in line


def test_bad_folder_label_key_is_refused(tmp_path) -> None:
    line = _usage_error(["ingest", str(tmp_path), "--folder-label", "my folder"])
    assert "--folder-label" in line


def test_a_real_process_says_it_in_one_line() -> None:
    done = subprocess.run(
        [*IMGSEARCH, "--address", "http://127.0.0.1:5", "stats"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "expected host:port" in done.stderr


@pytest.mark.parametrize("command", [["search", "README.md"], ["list"], ["duplicates"]])
@pytest.mark.parametrize(
    ("where", "reason"),
    [("/proc/nope/x.html", "no folder /proc/nope"), ("/etc", "it is a folder")],
)
def test_unwritable_html_output_is_refused_before_any_call(
    command: list[str], where: str, reason: str
) -> None:
    line = _usage_error(["--address", "127.0.0.1:1", *command, "--html", where])
    assert f"cannot write --html {where}: {reason}" in line


@pytest.mark.parametrize(
    ("option", "path", "reason"),
    [
        ("--tls-ca", "/proc/nope", "cannot read TLS CA bundle /proc/nope"),
        ("--tls-ca", "/etc", "Is a directory"),
        ("--tls-ca", "/etc/hostname", "holds no PEM certificate"),
        ("--token-file", "/proc/nope", "cannot read token file /proc/nope"),
        ("--token-file", "/etc", "Is a directory"),
    ],
)
def test_unusable_security_files_are_one_line(option: str, path: str, reason: str) -> None:
    line = _usage_error(["--address", "127.0.0.1:1", option, path, "stats"])
    assert reason in line


def test_demo_failure_is_one_line_with_what_to_try(tmp_path) -> None:
    (tmp_path / "a-file").write_text("x")
    done = subprocess.run(
        [*IMGSEARCH[:1], "-m", "imgsearch.demo", "--out", str(tmp_path / "a-file" / "out"),
         "--data-dir", str(tmp_path / "data"), "--no-keep-running"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].count("error: the demo failed") == 1


def test_demo_failure_line_names_the_step_and_a_hint(tmp_path) -> None:
    from imgsearch.common import errors
    from imgsearch.demo import _failure_line

    line = _failure_line(
        "ingesting the sample collection",
        errors.DeadlineExceededError("Insert did not answer within 60 s"),
        tmp_path,
    )
    assert line.startswith("error: the demo failed while ingesting the sample collection:")
    assert "try again" in line
    assert str(tmp_path) in line
    assert "\n" not in line
