"""The model: real ImageNet weights, strict loading, pooling, and no random fallback."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data import ImageNetInfo

from imgsearch_embedder.model import EmbeddingModel, ModelLoadError, load_by_order
from imgsearch_embedder.preprocess import Preprocessor
from imgsearch_embedder.settings import EmbedderSettings
from tests.embedder.images import jpeg
from tests.fixtures.embedder import default_embedding_dimension

PRE = Preprocessor(input_size=224, resize_size=256, max_image_pixels=10**8)


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel(EmbedderSettings())


def _top_classes(model: EmbeddingModel, name: str, k: int = 3) -> list[str]:
    probabilities = model.classify([PRE(jpeg(name), 0)])[0]
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in np.argsort(-probabilities)[:k]]


def test_weights_are_real_imagenet_weights(model: EmbeddingModel) -> None:
    cat = _top_classes(model, "chelsea")
    assert cat[0] in {"tabby, tabby cat", "tiger cat", "Egyptian cat"}, cat
    coffee = _top_classes(model, "coffee")
    assert coffee[0] in {"espresso", "cup", "coffee mug"}, coffee


def test_descriptors_have_unit_norm_and_tell_photos_apart(model: EmbeddingModel) -> None:
    images = [PRE(jpeg(name), 0) for name in ("chelsea", "coffee", "astronaut")]
    vectors = model.embed_batch(images)
    assert vectors.shape == (3, default_embedding_dimension())
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    recompressed = model.embed_batch([PRE(jpeg("chelsea", quality=40), 0)])[0]
    similarities = vectors @ recompressed
    assert similarities.argmax() == 0
    assert similarities[0] > 0.9


def test_gem_pooling_is_an_option() -> None:
    gem = EmbeddingModel(EmbedderSettings(pooling="gem", gem_p=3.0))
    assert gem.spec.name == "efficientnet_lite0-gem"
    vector = gem.embed_batch([PRE(jpeg("coffee"), 0)])[0]
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_other_models_need_local_weights_never_random(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="EMBEDDER_WEIGHTS"):
        EmbeddingModel(EmbedderSettings(model="resnet18"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        EmbeddingModel(EmbedderSettings(model="resnet18", weights=tmp_path / "missing.pth"))
    with pytest.raises(ModelLoadError, match="TorchScript"):
        EmbeddingModel(EmbedderSettings(model="torchscript"))


def test_a_model_with_its_own_weights_file_loads(tmp_path: Path) -> None:
    # A timm model's state dict saved to disk, as a torch hub cache would hold it.
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = EmbeddingModel(EmbedderSettings(model="resnet18", weights=path))
    assert model.spec.dimension == 512
    assert model.embed_batch([PRE(jpeg("coffee"), 0)]).shape == (1, 512)


def test_loading_by_order_checks_count_and_every_shape() -> None:
    target = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    good = OrderedDict(a=torch.ones(3, 4), b=torch.zeros(3), c=torch.ones(2, 3), d=torch.zeros(2))
    load_by_order(target, good, "test")
    assert torch.equal(target[0].weight, torch.ones(3, 4))
    bad_shape = OrderedDict(
        a=torch.ones(4, 3), b=torch.zeros(3), c=torch.ones(2, 3), d=torch.zeros(2)
    )
    with pytest.raises(ModelLoadError, match=r"#0 a \(4, 3\) -> 0.weight \(3, 4\)"):
        load_by_order(target, bad_shape, "test")
    with pytest.raises(ModelLoadError, match="has 3 tensors but the model expects 4"):
        load_by_order(target, OrderedDict(list(good.items())[:3]), "test")


def test_frozen_cpu_model_matches_eager(model: EmbeddingModel) -> None:
    eager = EmbeddingModel(EmbedderSettings(cpu_freeze=False))
    images = [PRE(jpeg(name), 0) for name in ("rocket", "astronaut")]
    np.testing.assert_allclose(model.embed_batch(images), eager.embed_batch(images), atol=1e-4)


def test_a_torchvision_model_with_local_weights_loads(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "resnet18-tv.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = EmbeddingModel(EmbedderSettings(model="torchvision:resnet18", weights=path))
    assert (model.spec.name, model.spec.dimension) == (
        f"resnet18-{EmbedderSettings().pooling}",
        512,
    )
    vectors = model.embed_batch([PRE(jpeg("coffee"), 0), PRE(jpeg("rocket"), 0)])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_torchscript_file_loads_and_its_dimension_is_checked(tmp_path: Path) -> None:
    import timm

    trunk = timm.create_model("resnet18", pretrained=False).eval()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.trunk.forward_features(images)

    path = tmp_path / "trunk.pt"
    torch.jit.save(torch.jit.trace(Features().eval(), torch.zeros(1, 3, 224, 224)), str(path))
    model = EmbeddingModel(EmbedderSettings(model="torchscript", weights=path))
    assert model.spec.dimension == 512
    assert model.embed_batch([PRE(jpeg("coffee"), 0)]).shape == (1, 512)
    with pytest.raises(ModelLoadError, match="yields 512 features, expected 1280"):
        EmbeddingModel(
            EmbedderSettings(model="torchscript", weights=path, embedding_dimension=1280)
        )
