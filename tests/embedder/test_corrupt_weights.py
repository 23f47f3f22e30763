"""Corrupt weights stop start-up with one "cannot start" line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from imgsearch_embedder.model import EmbeddingModel, ModelLoadError, _default_lite0_weights
from imgsearch_embedder.settings import EmbedderSettings
from tests.fixtures.processes import PYTHON, ChildProcess


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights files broken in every way we know, next to a good one."""
    directory = tmp_path_factory.mktemp("weights")
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, directory / "good.pth")
    good = (directory / "good.pth").read_bytes()
    real_lite0 = _default_lite0_weights().read_bytes()
    files = {
        "truncated.pth": good[: len(good) // 2],
        "lite0-truncated.pth": real_lite0[: len(real_lite0) // 3],
        "garbage.pth": b"\x00not a checkpoint" * 500,
        "empty.pth": b"",
        "garbage.safetensors": b"\x20\x00\x00\x00\x00\x00\x00\x00{not json" + b"!" * 64,
        "garbage.pt": b"PK\x03\x04 not a zip",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    torch.save({key: 1 for key in state}, directory / "not-tensors.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, directory / "other-model.pth")
    torch.save({key: torch.zeros(1) for key in state}, directory / "wrong-shapes.pth")
    torch.save([1, 2, 3], directory / "a-list.pth")
    return directory


CASES = [
    ("resnet18", "truncated.pth"),
    ("resnet18", "garbage.pth"),
    ("resnet18", "empty.pth"),
    ("resnet18", "garbage.safetensors"),
    ("resnet18", "not-tensors.pth"),
    ("resnet18", "other-model.pth"),
    ("resnet18", "wrong-shapes.pth"),
    ("resnet18", "a-list.pth"),
    ("efficientnet_lite0", "lite0-truncated.pth"),
    ("torchvision:resnet18", "garbage.pth"),
    ("torchvision:resnet18", "other-model.pth"),
    ("torchvision:resnet18", "not-tensors.pth"),
    ("torchscript", "garbage.pt"),
    ("torchscript", "good.pth"),  # a state dict is not a TorchScript file
]


@pytest.mark.parametrize(("model", "file"), CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_corrupt_weights_are_a_model_load_error_naming_the_file(
    weights_dir: Path, model: str, file: str
) -> None:
    settings = EmbedderSettings(model=model, weights=weights_dir / file, cpu_freeze=False)
    with pytest.raises(ModelLoadError, match=file.replace(".", r"\.")):
        EmbeddingModel(settings)


def test_the_service_exits_1_with_cannot_start_and_no_traceback(weights_dir: Path) -> None:
    child = ChildProcess(
        "embedder",
        [
            PYTHON, "-m", "imgsearch_embedder", "--model", "resnet18",
            "--weights", str(weights_dir / "truncated.pth"), "--port", "0",
        ],
        {"EMBEDDER_METRICS_PORT": "0", "EMBEDDER_LOG_JSON": "false"},
    )  # fmt: skip
    try:
        assert child.proc.wait(120) == 1, child.tail()
        output = child.tail(200)
        assert "cannot start" in output
        assert "truncated.pth" in output
        assert "Traceback" not in output
        assert "listening" not in output
    finally:
        child.stop()
