"""Every variant's Embedder memory limit holds its stated memory bound (docs/embedder.md).

The bound is the process's RSS once warm plus `memory_bound_above_base()` of
the settings the manifests give it. The RSS once warm is measured on CPU
(EfficientNet-Lite0, ~0.95 GiB on the development machine, rounded up) and
assumed on CUDA (host memory of the CUDA runtime and cuDNN; not measured here).
"""

from __future__ import annotations

import os
import re

import pytest

from imgsearch_embedder.settings import EmbedderSettings
from tests.k8s.manifests import Rendered

BASE_RSS = {"cpu": int(1.1 * 2**30), "cuda": 3 * 2**30}
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i?)?", quantity)
    assert match, quantity
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def test_the_embedder_memory_limit_holds_its_bound(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedders = [c for _, c in rendered.containers() if c["name"] == "embedder"]
    assert embedders
    for container in embedders:
        for name in [name for name in os.environ if name.startswith("EMBEDDER_")]:
            monkeypatch.delenv(name)
        for name, value in rendered.container_env(container).items():
            monkeypatch.setenv(name, value)
        settings = EmbedderSettings()
        device = "cpu" if settings.device == "cpu" else "cuda"
        bound = BASE_RSS[device] + settings.memory_bound_above_base()
        limit = _bytes(container["resources"]["limits"]["memory"])
        assert bound <= limit, (
            f"{rendered.overlay}: memory bound {bound / 2**30:.2f} GiB over the limit"
            f" {limit / 2**30:.2f} GiB; lower EMBEDDER_MAX_CONCURRENT_RPCS or"
            " EMBEDDER_MAX_REQUEST_BYTES, or raise the limit"
        )
