"""The evaluation's baseline is the previous default descriptor, whatever today's default is."""

from __future__ import annotations

import json

import pytest

from imgsearch.evaluation.config import BASELINE_ENV
from imgsearch_embedder.model import EmbeddingModel
from imgsearch_embedder.settings import EmbedderSettings


@pytest.mark.slow
def test_the_baseline_is_the_average_pooled_1280_d_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stack starts the baseline Embedder with BASELINE_ENV over its own environment.
    for name, value in BASELINE_ENV.items():
        monkeypatch.setenv(name, value)
    settings = EmbedderSettings(torch_threads=1)
    assert not settings.query_views
    model = EmbeddingModel(settings)
    assert model.name == "efficientnet_lite0-avg"
    assert model.dimension == 1280
    descriptor = model.descriptor
    assert descriptor["pooling"] == "avg"
    assert not descriptor.get("projection_sha256")
    assert not descriptor.get("thumbnail")
    assert not descriptor.get("mid_layer")
    json.dumps(descriptor)
