"""The multi-layer descriptor: an intermediate map of the same forward pass joins the final one."""

from __future__ import annotations

import numpy as np
import pytest

from imgsearch_embedder.model import EmbeddingModel, ModelLoadError
from imgsearch_embedder.settings import EmbedderSettings
from tests.embedder.images import photo


def _model(**overrides: object) -> EmbeddingModel:
    # Eager (not frozen) models build faster; freezing does not change the vectors' meaning.
    values = {"cpu_freeze": False, "projection": "none", "thumbnail_side": 0, **overrides}
    return EmbeddingModel(EmbedderSettings(**values))  # type: ignore[arg-type]


def _inputs() -> list[np.ndarray]:
    from PIL import Image

    return [
        np.asarray(Image.fromarray(photo(name)).resize((224, 224)), dtype=np.uint8)
        for name in ("chelsea", "coffee", "astronaut")
    ]


@pytest.fixture(scope="module")
def multi() -> EmbeddingModel:
    return _model()


def test_the_default_model_appends_blocks_4_average_pooled(multi: EmbeddingModel) -> None:
    assert EmbedderSettings().resolved_mid_layer == "blocks.4"
    assert multi.descriptor["mid"] == {
        "layer": "blocks.4", "pooling": "avg", "gem_p": None, "weight": 3.0,
    }  # fmt: skip
    assert multi.spec.dimension == 1280 + 112
    assert "mlb4" in multi.name
    vectors = multi.embed_batch(_inputs())
    assert vectors.shape == (3, 1392)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_the_parts_are_normalised_and_weighted_as_documented(multi: EmbeddingModel) -> None:
    # Without a projection the vector is [final ; w * mid] / norm, each part a unit vector:
    # the mid part's share of the squared norm is w^2 / (1 + w^2).
    vectors = multi.embed_batch(_inputs())
    share = (vectors[:, 1280:] ** 2).sum(axis=1)
    np.testing.assert_allclose(share, 9.0 / 10.0, rtol=1e-4)


def test_the_fingerprint_changes_with_the_layer_pooling_and_weight(multi: EmbeddingModel) -> None:
    one_layer = _model(mid_layer="none")
    assert "mid" not in one_layer.descriptor  # one-layer fingerprints stay as they were
    assert one_layer.spec.dimension == 1280
    others = [
        one_layer,
        _model(mid_layer="blocks.5"),
        _model(mid_pooling="gem"),
        _model(mid_weight=1.0),
    ]
    prints = {multi.fingerprint, *(model.fingerprint for model in others)}
    assert len(prints) == 5
    assert _model(mid_layer="blocks.4").fingerprint == multi.fingerprint  # auto = blocks.4


def test_the_frozen_trunk_gives_the_eager_vectors(multi: EmbeddingModel) -> None:
    frozen = _model(cpu_freeze=True)
    np.testing.assert_allclose(
        frozen.embed_batch(_inputs()), multi.embed_batch(_inputs()), atol=1e-4
    )


def test_an_unknown_layer_stops_start_up_with_its_name() -> None:
    with pytest.raises(ModelLoadError, match=r"blocks\.99"):
        _model(mid_layer="blocks.99")


def test_the_shipped_projection_refuses_a_descriptor_made_otherwise() -> None:
    with pytest.raises(ModelLoadError, match="1392-d descriptors but the model gives 1280-d"):
        _model(projection="builtin", mid_layer="none")
    with pytest.raises(ModelLoadError, match="mid: fitted for"):
        _model(projection="builtin", mid_weight=1.0)
