"""The README's configuration table matches the services' settings classes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.processes import PYTHON

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "settings_table.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_readme_table_is_current() -> None:
    result = run_script("--check")
    assert result.returncode == 0, result.stderr


def test_table_lists_every_field_of_every_service() -> None:
    from imgsearch_embedder.settings import EmbedderSettings
    from imgsearch_search.settings import SearchSettings

    table = run_script().stdout
    for prefix, cls in (("EMBEDDER_", EmbedderSettings), ("SEARCH_", SearchSettings)):
        for name in cls.model_fields:
            assert f"| `{prefix}{name.upper()}` |" in table, name
    default_uri = SearchSettings.model_fields["milvus_uri"].default
    assert f"| `SEARCH_MILVUS_URI` | `{default_uri}` |" in table


@pytest.mark.parametrize("edit", ["drop_row", "change_default"])
def test_check_fails_on_a_stale_table(tmp_path: Path, edit: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith("| Embedder | `EMBEDDER_PORT`"))
    if edit == "drop_row":
        del lines[row]
    else:
        lines[row] = lines[row].replace("`50051`", "`50050`")
    stale = tmp_path / "README.md"
    stale.write_text("".join(lines), encoding="utf-8")
    result = run_script("--check", "--readme", str(stale))
    assert result.returncode == 1
    assert "stale" in result.stderr
    assert run_script("--write", "--readme", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == readme
