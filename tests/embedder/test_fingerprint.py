"""The model fingerprint: it changes with everything that shapes the vectors, and only then."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from imgsearch_embedder.model import (
    EmbeddingModel,
    ModelLoadError,
    _default_lite0_weights,
    fitted_for,
)
from imgsearch_embedder.projection import save_projection
from imgsearch_embedder.settings import EmbedderSettings


def _model(**overrides: object) -> EmbeddingModel:
    # Eager (not frozen) models build faster; freezing does not change the vectors' meaning.
    values = {"cpu_freeze": False, **overrides}
    return EmbeddingModel(EmbedderSettings(**values))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plain() -> EmbeddingModel:
    return _model(projection="none")


def _projection(tmp_path: Path, model: EmbeddingModel, seed: int, name: str) -> Path:
    rng = np.random.default_rng(seed)
    matrix, _ = np.linalg.qr(rng.standard_normal((model.spec.dimension, 64)))
    settings = EmbedderSettings(cpu_freeze=False, projection="none")
    path = tmp_path / name
    save_projection(
        path,
        rng.standard_normal(model.spec.dimension) * 0.01,
        matrix,
        {"method": "test", "fitted_for": fitted_for(settings, model.spec)},
    )
    return path


def test_the_fingerprint_is_the_digest_of_the_descriptor_and_is_stable(
    plain: EmbeddingModel,
) -> None:
    canonical = json.dumps(plain.descriptor, sort_keys=True, separators=(",", ":"))
    assert plain.fingerprint == hashlib.sha256(canonical.encode()).hexdigest()
    assert len(plain.fingerprint) == 64
    assert _model(projection="none").fingerprint == plain.fingerprint
    described = plain.descriptor
    assert described["weights_sha256"] == plain.spec.weights_sha256
    assert len(str(described["weights_sha256"])) == 64


def test_the_fingerprint_changes_with_the_weights(tmp_path: Path) -> None:
    source = _default_lite0_weights()
    same = tmp_path / "same.pth"
    shutil.copyfile(source, same)
    state = torch.load(source, map_location="cpu", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 0.001
    changed = tmp_path / "changed.pth"
    torch.save(state, changed)
    a = _model(projection="none", weights=same)
    b = _model(projection="none", weights=changed)
    assert a.spec.dimension == b.spec.dimension
    assert a.fingerprint != b.fingerprint
    assert _model(projection="none", weights=same).fingerprint == a.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"input_size": 256},
        {"crop": "full" if EmbedderSettings().crop == "centre" else "centre"},
        {"trim_borders": not EmbedderSettings().trim_borders},
        {"pooling": "gem" if EmbedderSettings().pooling == "avg" else "avg"},
        {"power": 0.5 if EmbedderSettings().power == 1.0 else 1.0},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_fingerprint_changes_with_preprocessing_and_pooling(
    plain: EmbeddingModel, change: dict[str, object]
) -> None:
    assert _model(projection="none", **change).fingerprint != plain.fingerprint


def test_the_fingerprint_changes_with_the_projection_and_its_dimension(
    plain: EmbeddingModel, tmp_path: Path
) -> None:
    first = _projection(tmp_path, plain, 1, "a.npz")
    second = _projection(tmp_path, plain, 2, "b.npz")
    # One scale: with the thumbnail view each view is projected and normalised before the
    # sum, so truncating the served vector only approximates the lower dimension.
    a = _model(projection=str(first), thumbnail_side=0)
    b = _model(projection=str(second), thumbnail_side=0)
    a32 = _model(projection=str(first), dimension=32, thumbnail_side=0)
    fingerprints = {plain.fingerprint, a.fingerprint, b.fingerprint, a32.fingerprint}
    assert len(fingerprints) == 4
    assert a.dimension == 64
    assert a32.dimension == 32
    images = [np.full((224, 224, 3), value, dtype=np.uint8) for value in (40, 200)]
    vectors = a32.embed_batch(images)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Truncating the projection is the same as keeping the first components.
    full = a.embed_batch(images)
    truncated = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, truncated, atol=1e-5)


def test_a_projection_fitted_for_other_settings_is_refused(
    plain: EmbeddingModel, tmp_path: Path
) -> None:
    path = _projection(tmp_path, plain, 3, "p.npz")
    other_pooling = "gem" if EmbedderSettings().pooling == "avg" else "avg"
    with pytest.raises(ModelLoadError, match="pooling: fitted for"):
        _model(projection=str(path), pooling=other_pooling)
    with pytest.raises(ModelLoadError, match="exceeds the projection's 64 dimensions"):
        _model(projection=str(path), dimension=128)
    with pytest.raises(ModelLoadError, match="needs a projection"):
        _model(projection="none", dimension=128)
    with pytest.raises(ModelLoadError, match="cannot read projection"):
        _model(projection=str(tmp_path / "missing.npz"))


def test_the_fingerprint_changes_with_the_thumbnail_view(plain: EmbeddingModel) -> None:
    one_scale = _model(projection="none", thumbnail_side=0)
    assert "thumbnail" not in one_scale.descriptor  # one-scale fingerprints stay as they were
    variants = [
        _model(projection="none", thumbnail_side=48),
        _model(projection="none", thumbnail_side=64),
        _model(projection="none", thumbnail_side=48, thumbnail_weight=1.0),
        _model(projection="none", thumbnail_side=48, thumbnail_input_size=128),
    ]
    prints = {one_scale.fingerprint, *(model.fingerprint for model in variants)}
    assert len(prints) == 5
    assert "-ms48" in variants[0].name
    assert "-ms" not in one_scale.name
