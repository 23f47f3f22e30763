"""The Dockerfiles lint clean; `make images` builds what the manifests deploy, or says why not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.k8s.manifests import REPO

DOCKERFILES = [
    REPO / "services" / "embedder" / "Dockerfile",
    REPO / "services" / "search" / "Dockerfile",
    REPO / "services" / "web" / "Dockerfile",
]
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"


def _hadolint(tools: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "hadolint"), "--no-color", "--failure-threshold", "style", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfiles_pass_hadolint(k8s_tools: Path) -> None:
    done = _hadolint(k8s_tools, *DOCKERFILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_root_image_with_unpinned_packages(
    k8s_tools: Path, tmp_path: Path
) -> None:
    """Control: the linter does report the mistakes it is here to catch."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    done = _hadolint(k8s_tools, bad)
    assert done.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):
        assert rule in done.stdout, done.stdout


def test_dockerfiles_build_non_root_multi_stage_images_from_pinned_bases() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        stages = [line for line in text.splitlines() if line.startswith("FROM ")]
        assert len(stages) >= 2, f"{dockerfile}: not multi-stage"
        base = next(line for line in text.splitlines() if line.startswith("ARG PYTHON_IMAGE="))
        assert "@sha256:" in base, base
        assert ":3.11." in base, base
        assert "\nUSER 10001:10001\n" in text, (
            f"{dockerfile}: must run as the numeric non-root user"
        )
        assert "--constraint requirements.txt" in text, (
            f"{dockerfile}: versions must follow requirements.txt"
        )
    embedder = DOCKERFILES[0].read_text()
    assert "ARG VARIANT=cuda" in embedder
    assert "whl/cpu" in embedder
    assert "whl/cu130" in embedder
    assert '".[embedder]"' in embedder
    assert '".[search]"' in DOCKERFILES[1].read_text()
    assert '".[web]"' in DOCKERFILES[2].read_text()


def test_build_images_lists_what_it_builds() -> None:
    done = subprocess.run([str(BUILD_IMAGES), "--list"], capture_output=True, text=True, check=True)
    version = next(
        line.split('"')[1]
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    assert done.stdout.split() == [
        f"imgsearch/embedder:{version}-cuda",
        f"imgsearch/embedder:{version}-cpu",
        f"imgsearch/search:{version}",
        f"imgsearch/web:{version}",
    ]
    registry = subprocess.run(
        [str(BUILD_IMAGES), "--list"], capture_output=True, text=True, check=True,
        env={**os.environ, "REGISTRY": "ghcr.io/acme/imgsearch"},
    ).stdout.split()  # fmt: skip
    assert registry[-1] == f"ghcr.io/acme/imgsearch/web:{version}"


def test_build_images_without_a_docker_engine_says_so_and_fails(tmp_path: Path) -> None:
    if shutil.which("docker"):
        # A docker client pointed at a socket where no engine listens.
        env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
        done = subprocess.run(
            [str(BUILD_IMAGES)], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode != 0
        assert "needs a running Docker engine" in done.stderr
    # And a machine without the docker command at all.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "head", "dirname", "git"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(BUILD_IMAGES)], capture_output=True, text=True, timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs a Docker engine" in done.stderr


def test_image_and_tool_scripts_pass_shellcheck(k8s_tools: Path) -> None:
    scripts = [
        BUILD_IMAGES,
        REPO / "scripts" / "setup-k8s-tools.sh",
        REPO / "scripts" / "k8s-secrets.sh",
    ]
    done = subprocess.run(
        [str(k8s_tools / "shellcheck"), "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
