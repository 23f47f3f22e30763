"""The multi-scale descriptor: a thumbnail view makes tiny copies find their originals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgsearch_embedder.model import EmbeddingModel
from imgsearch_embedder.preprocess import Preprocessor
from imgsearch_embedder.settings import EmbedderSettings
from tests.embedder.images import jpeg, photo

NAMES = ("chelsea", "coffee", "astronaut", "rocket")


def _thumbnail(name: str, side: int) -> bytes:
    image = Image.fromarray(photo(name))
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models() -> dict[str, EmbeddingModel]:
    # The shipped projection with both views: only the thumbnail view differs.
    return {
        "one": EmbeddingModel(EmbedderSettings(thumbnail_side=0, cpu_freeze=False)),
        "multi": EmbeddingModel(EmbedderSettings(thumbnail_side=48, cpu_freeze=False)),
    }


def _vectors(model: EmbeddingModel, images: list[bytes]) -> np.ndarray:
    settings = EmbedderSettings()
    pre = Preprocessor(settings.input_size, settings.resize_size, 10**8,
                       crop=settings.crop, trim_borders=settings.trim_borders)  # fmt: skip
    return model.embed_batch([pre(image, i) for i, image in enumerate(images)])


def test_a_thumbnail_is_closer_to_its_original_with_the_thumbnail_view(
    models: dict[str, EmbeddingModel],
) -> None:
    originals = [jpeg(name) for name in NAMES]
    thumbnails = [_thumbnail(name, 40) for name in NAMES]
    similarity = {}
    for key, model in models.items():
        scores = _vectors(model, thumbnails) @ _vectors(model, originals).T
        assert (scores.argmax(axis=1) == np.arange(len(NAMES))).all(), (key, scores)
        similarity[key] = np.diag(scores)
    assert (similarity["multi"] > similarity["one"]).all(), similarity


def test_the_multiscale_descriptor_is_unit_norm_and_one_row_per_image(
    models: dict[str, EmbeddingModel],
) -> None:
    multi = models["multi"]
    vectors = _vectors(multi, [jpeg(name) for name in NAMES])
    assert vectors.shape == (len(NAMES), multi.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batched or alone, an image's vector is the same.
    alone = _vectors(multi, [jpeg(NAMES[1])])[0]
    np.testing.assert_allclose(alone, vectors[1], atol=1e-4)
