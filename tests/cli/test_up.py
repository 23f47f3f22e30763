"""`imgsearch up`: every child stops on a signal, nothing acknowledged is lost, no orphans.

The default store is the Milvus 2.3 standalone server; one test runs on
`--milvus lite` so that option stays covered.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch.client import Client, ItemInput
from imgsearch.common import errors
from tests.cli.conftest import IMGSEARCH, run_cli, start_up
from tests.fixtures.processes import ChildProcess

pytestmark = pytest.mark.slow


def _process_table() -> tuple[dict[int, int], dict[int, str]]:
    """pid -> parent pid, and pid -> command line, of every process."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        commands[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return parents, commands


def all_processes() -> dict[int, str]:
    return _process_table()[1]


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children in other process groups included): pid -> cmdline."""
    parents, commands = _process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def alive(pids: dict[int, str]) -> dict[int, str]:
    """The ones still running (zombies count as gone: they hold no resources)."""
    running = {}
    for pid, command in pids.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running[pid] = command
    return running


def wait_exit(child: ChildProcess, timeout: float) -> int:
    try:
        return child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"imgsearch up did not exit within {timeout} s:\n{child.tail()}")


@pytest.mark.parametrize(
    ("sig", "milvus", "milvus_process"),
    [
        (signal.SIGINT, "lite", "milvus_lite"),
        (signal.SIGKILL, "standalone", "milvus run standalone"),
    ],
    ids=["SIGINT (Ctrl-C), Milvus Lite", "SIGKILL, Milvus standalone"],
)
def test_signal_stops_every_child(
    tmp_path: Path, sig: signal.Signals, milvus: str, milvus_process: str
) -> None:
    up, address = start_up(tmp_path / "stack", "--milvus", milvus)
    tree: dict[int, str] = {}
    try:
        tree = descendants(up.proc.pid)
        names = " ".join(tree.values())
        for expected in (
            "redis-server",
            milvus_process,
            "imgsearch_embedder",
            "imgsearch_search",
            "imgsearch_web",
        ):
            assert expected in names, tree
        assert run_cli(["health"], address).code == 0
        # SIGKILL goes to `imgsearch up` alone, as a service manager sends it;
        # SIGINT to its whole process group, as a terminal's Ctrl-C does (the
        # children are in groups of their own, so `up` stops them in order).
        # SIGKILL cannot be handled: the children's parent-death signal must
        # stop them anyway. SIGTERM: test_sigterm_during_an_ingest_loses_nothing.
        if sig == signal.SIGINT:
            os.killpg(up.proc.pid, sig)
        else:
            os.kill(up.proc.pid, sig)
        code = wait_exit(up, 90)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), up.tail()
        deadline = time.monotonic() + 30
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(tree) == {}
        assert run_cli(["health"], address).code == 3
    finally:
        up.stop()
        for pid in alive(tree):  # only when the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)


def _noise_png(seed: int) -> bytes:
    """A small PNG no other test uses (random pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class _Ingest(threading.Thread):
    """Inserts batches of 4 images until a request fails; records the acknowledged ids."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.acknowledged: list[str] = []
        self.sent = 0
        self.error: Exception | None = None
        self.three_batches_done = threading.Event()

    def run(self) -> None:
        with Client(self.address, timeout=60) as client:
            for batch in range(500):
                items = [
                    ItemInput(image=_noise_png(batch * 4 + k), id=f"ingest-{batch}-{k}")
                    for k in range(4)
                ]
                self.sent += len(items)
                try:
                    outcomes = client.insert(items)
                except errors.ImgsearchError as exc:  # the stack is stopping: expected
                    self.error = exc
                    return
                self.acknowledged += [outcome.id for outcome in outcomes if outcome.ok]
                if batch >= 2:
                    self.three_batches_done.set()


def test_sigterm_during_an_ingest_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while Inserts run: Search drains, Milvus is flushed; a restart finds every item."""
    data_dir = tmp_path / "stack"
    up, address = start_up(data_dir)
    tree = descendants(up.proc.pid)
    ingest = _Ingest(address)
    try:
        assert any("milvus run standalone" in command for command in tree.values()), tree
        ingest.start()
        assert ingest.three_batches_done.wait(120), ingest.error
        os.kill(up.proc.pid, signal.SIGTERM)
        assert wait_exit(up, 60) == 0, up.tail()
        ingest.join(60)
        assert not ingest.is_alive()
        assert alive(tree) == {}
    finally:
        up.stop()
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)
    milvus_log = (data_dir / "logs" / "milvus.log").read_text()
    assert "before stopping: flushed and released 1 collections" in milvus_log
    assert "milvus stopped with exit code 0" in milvus_log

    up, address = start_up(data_dir)
    try:
        with Client(address, timeout=60) as client:
            stored = client.get(ingest.acknowledged)
            assert stored.missing_ids == []
            # Nothing half-written: what is stored was sent, and every acknowledged item is there.
            count = client.stats().item_count
            assert len(ingest.acknowledged) <= count <= ingest.sent
    finally:
        up.stop()


def test_dead_child_is_reported_and_the_others_stopped(tmp_path: Path) -> None:
    up, address = start_up(tmp_path / "stack")
    try:
        tree = descendants(up.proc.pid)
        assert any("milvus run standalone" in command for command in tree.values()), tree
        stats = run_cli(["stats", "--json"], address)
        assert stats.code == 0, stats.stderr
        redis = [pid for pid, command in tree.items() if command.startswith("redis-server")]
        assert len(redis) == 1, tree
        os.kill(redis[0], signal.SIGKILL)
        assert wait_exit(up, 90) == 1
        output = "\n".join(up.lines)
        assert "imgsearch up: redis was killed by signal 9; last lines of" in output
        assert "redis.log" in output
        assert "stopping the other services" in output
        assert alive(tree) == {}
    finally:
        up.stop()


def test_startup_failure_names_the_child(tmp_path: Path) -> None:
    """A child that cannot start (a bad setting) is reported with its log, nothing left behind.

    (A port taken by another process is refused before anything starts:
    tests/cli/test_up_guards.py.)
    """
    data_dir = tmp_path / "stack"
    proc = subprocess.run(
        [*IMGSEARCH, "up", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EMBEDDER_MAX_BATCH_SIZE": "not-a-number"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "imgsearch up: embedder exited with code" in proc.stderr
    assert str(data_dir / "logs" / "embedder.log") in proc.stderr
    # Redis and Milvus were already running: they must be gone too.
    time.sleep(0.5)
    leftovers = {
        pid: command for pid, command in alive(all_processes()).items() if str(data_dir) in command
    }
    assert leftovers == {}


def test_external_milvus_and_redis(
    tmp_path: Path, milvus_lite_uri: str, redis_url: str, unique_collection: str
) -> None:
    """--milvus-uri and --redis-url: only the Embedder and Search are started."""
    up, address = start_up(
        tmp_path / "stack",
        "--milvus-uri",
        milvus_lite_uri,
        "--redis-url",
        redis_url,
        env={"SEARCH_COLLECTION": unique_collection},
    )
    tree: dict[int, str] = {}
    try:
        tree = descendants(up.proc.pid)
        names = " ".join(tree.values())
        assert "imgsearch_embedder" in names
        assert "imgsearch_search" in names
        assert "redis-server" not in names
        assert "milvus" not in names
        stats = run_cli(["stats", "--json"], address)
        assert stats.code == 0, stats.stderr
        assert stats.json()["collection"] == unique_collection
        os.kill(up.proc.pid, signal.SIGTERM)
        assert wait_exit(up, 90) == 0, up.tail()
        assert alive(tree) == {}
    finally:
        up.stop()
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)


def test_missing_program_is_one_clear_error(tmp_path: Path) -> None:
    """Without redis-server on PATH, `up` says what is missing and starts nothing else."""
    proc = subprocess.run(
        [*IMGSEARCH, "up", "--data-dir", str(tmp_path / "stack")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
    )
    assert proc.returncode == 1
    assert "imgsearch up: cannot start redis: redis-server:" in proc.stderr
    assert "run `make setup`" in proc.stderr
    assert "starting milvus" not in proc.stderr
