"""Fixtures for the CLI tests: a real local stack started with `imgsearch up`, once per session.

The stack is exactly what a user runs: `imgsearch up` starts the default
Milvus (the Milvus 2.3 standalone server), redis-server, the Embedder (real
weights) and the Search service as child processes; the tests find the
Search address from its `search listening on HOST:PORT` line and drive it
with the `imgsearch` command, as a script would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.processes import PYTHON, ChildProcess
from tests.fixtures.stack import LocalStack

SEARCH_LINE = r"search listening on (?P<host>[^\s:]+):(?P<port>\d+)"
EMBEDDER_LINE = r"embedder listening on (?P<host>[^\s:]+):(?P<port>\d+)"
IMGSEARCH = [PYTHON, "-m", "imgsearch.cli"]


def start_up(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[ChildProcess, str]:
    """Run `imgsearch up` in the background; return it and the Search address once ready."""
    child = ChildProcess(
        "imgsearch up",
        [*IMGSEARCH, "up", "--data-dir", str(data_dir), *extra],
        env={"EMBEDDER_LOG_LEVEL": "WARNING", "SEARCH_LOG_LEVEL": "WARNING", **(env or {})},
    )
    try:
        search = child.wait_for_line(SEARCH_LINE, timeout=240)
        child.wait_for_line(EMBEDDER_LINE, timeout=10)
    except BaseException:
        child.stop()
        raise
    return child, f"{search['host']}:{search['port']}"


@dataclass(frozen=True)
class Result:
    """What one `imgsearch` invocation did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


def run_cli(args: Sequence[str], address: str | None, cwd: Path | None = None) -> Result:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("IMGSEARCH_ADDRESS", None)
    if address is not None:
        env["IMGSEARCH_ADDRESS"] = address
    proc = subprocess.run(
        [*IMGSEARCH, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def stack_address(local_stack: LocalStack) -> str:
    """Search address of the session's stack started by `imgsearch up` (tests/fixtures/stack.py)."""
    return local_stack.search


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real photos (skimage.data) in several formats, one in a subfolder."""
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg", quality=90)
    Image.fromarray(skimage.data.chelsea()).save(folder / "nested" / "chelsea.webp")
    Image.fromarray(skimage.data.rocket()).save(folder / "nested" / "rocket.bmp")
    return folder
