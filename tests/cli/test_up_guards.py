"""`imgsearch up` and the demo refuse, at once and in one line, what cannot work.

- a data folder that another `imgsearch up` holds (its flock), with that one's pid;
- a port another server listens on (the session's own stack holds real ones);
- a data folder that cannot be created or written, or is a file.

Real processes throughout: the session's stack (tests/fixtures/stack.py) and
`imgsearch up` / `python -m imgsearch.demo` runs that must fail before
starting anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imgsearch.datadir import LOCK_NAME
from tests.cli.conftest import IMGSEARCH, run_cli
from tests.fixtures.processes import PYTHON
from tests.fixtures.stack import LocalStack


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMGSEARCH, "up", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_second_up_on_the_same_data_folder_fails_at_once(local_stack: LocalStack) -> None:
    def log_sizes() -> dict[str, int]:
        # Milvus writes to its log on its own; every other log only when its child does.
        logs = (local_stack.data_dir / "logs").iterdir()
        return {p.name: p.stat().st_size for p in logs if p.name != "milvus.log"}

    logs_before = log_sizes()
    owner = (local_stack.data_dir / LOCK_NAME).read_text().strip()
    started = time.monotonic()
    done = _up("--data-dir", str(local_stack.data_dir))
    assert time.monotonic() - started < 30
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert f"{local_stack.data_dir} is in use by another imgsearch up (pid {owner})" in line
    # Nothing was started, so nothing was appended to the running stack's logs.
    assert log_sizes() == logs_before


@pytest.mark.parametrize("option", ["--search-port", "--web-port", "--embedder-port"])
def test_up_refuses_a_port_in_use(local_stack: LocalStack, tmp_path: Path, option: str) -> None:
    taken = local_stack.search.rpartition(":")[2]
    if option == "--web-port":
        taken = local_stack.web.rpartition(":")[2].rstrip("/")
    done = _up("--data-dir", str(tmp_path / "other"), option, taken)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert f"{option} {taken}" in line
    assert "in use" in line
    assert "listening on" not in done.stdout


def test_the_lock_goes_with_its_holder_even_on_sigkill(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [PYTHON, "-c", "import sys, time; from pathlib import Path;"
         "from imgsearch.datadir import DataDirLock;"
         "DataDirLock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        # The demo refuses it too, and wipes nothing.
        (tmp_path / "precious").write_text("data")
        demo = subprocess.run(
            [PYTHON, "-m", "imgsearch.demo", "--data-dir", str(tmp_path),
             "--out", str(tmp_path / "out"), "--no-keep-running"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert demo.returncode == 2
        assert f"in use by another imgsearch up (pid {holder.pid})" in demo.stdout
        assert (tmp_path / "precious").read_text() == "data"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    from imgsearch.datadir import DataDirLock

    lock = DataDirLock.acquire(tmp_path)  # the kernel dropped the dead holder's lock
    lock.release()


@pytest.mark.parametrize(
    ("make_path", "reason"),
    [
        (lambda tmp: Path("/proc/nope"), "cannot create data folder /proc/nope"),
        (lambda tmp: tmp / "a-file", "is not a folder"),
        (lambda tmp: tmp / "a-file" / "below", "cannot create data folder"),
        (lambda tmp: Path("/proc/self"), "is not writable"),
    ],
)
def test_bad_data_folder_is_one_line(tmp_path: Path, make_path, reason: str) -> None:
    (tmp_path / "a-file").write_text("x")
    path = make_path(tmp_path)
    done = run_cli(["up", "--data-dir", str(path)], address=None)
    assert done.code == 2
    line = _one_error_line(done.stderr)
    assert reason in line
    assert str(path) in line
