"""A fitted linear projection of descriptors (PCA- or learned whitening), stored as a small file.

A projection file is a NumPy `.npz` holding `mean` (D_in,), `matrix`
(D_in, D_out) with its columns in decreasing order of importance (so the
first d columns are the best d-dimensional projection), and `meta`, a JSON
document saying what it was fitted for (model, weights digest, input
geometry, pooling) and how (data, method). The Embedder refuses to apply a
projection to descriptors it was not fitted for: the numbers would be
meaningless.

The built-in projection of the default model lives in `projections/` beside
this module; `imgsearch eval fit-whitening` (`make whitening`) rebuilds it
reproducibly from the training pictures.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_DIR = Path(__file__).resolve().parent / "projections"
# The shipped projection of the default model (efficientnet_lite0).
BUILTIN_PROJECTION = BUILTIN_DIR / "efficientnet_lite0-lw-v2.npz"
# Keys of `meta["fitted_for"]` that must equal the Embedder's own settings.
MATCHED_KEYS = ("model", "weights_sha256", "crop", "input_size", "trim_borders", "pooling",
                "gem_p", "power", "mid")  # fmt: skip


class ProjectionError(ValueError):
    """The projection file is unreadable or does not fit the model's descriptors."""


@dataclass(frozen=True)
class Projection:
    """mean (D_in,), matrix (D_in, D_out) float32, what it was fitted for, and its file digest."""

    mean: np.ndarray
    matrix: np.ndarray
    meta: dict[str, Any]
    sha256: str  # content_digest: of the numbers and metadata
    path: Path

    @property
    def input_dimension(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def max_dimension(self) -> int:
        return int(self.matrix.shape[1])

    def check_fits(self, actual: dict[str, Any]) -> None:
        """Raise ProjectionError naming every setting that differs from the fitted ones."""
        fitted = self.meta.get("fitted_for", {})
        wrong = [
            f"{key}: fitted for {fitted.get(key)!r}, the model has {actual.get(key)!r}"
            for key in MATCHED_KEYS
            if fitted.get(key) != actual.get(key)
        ]
        if wrong:
            raise ProjectionError(f"projection {self.path.name} does not fit: " + "; ".join(wrong))


def load_projection(path: Path) -> Projection:
    """Read a projection file (see the module docstring); ProjectionError when malformed."""
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            mean = np.asarray(arrays["mean"], dtype=np.float32)
            matrix = np.asarray(arrays["matrix"], dtype=np.float32)
            meta = json.loads(str(arrays["meta"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ProjectionError(f"cannot read projection {path}: {exc}") from None
    if matrix.ndim != 2 or mean.shape != (matrix.shape[0],):
        raise ProjectionError(
            f"projection {path}: mean {mean.shape} and matrix {matrix.shape} do not line up"
        )
    return Projection(mean, matrix, meta, content_digest(mean, matrix, meta), path)


def content_digest(mean: np.ndarray, matrix: np.ndarray, meta: dict[str, Any]) -> str:
    """SHA-256 of the numbers and the metadata (not of the file: zip headers hold dates)."""
    digest = hashlib.sha256()
    for array in (mean, matrix):
        array = np.ascontiguousarray(array, dtype="<f4")
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def save_projection(path: Path, mean: np.ndarray, matrix: np.ndarray, meta: dict[str, Any]) -> None:
    """Write a projection file (compressed; its content digest is independent of the zip)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        mean=np.asarray(mean, dtype=np.float32),
        matrix=np.asarray(matrix, dtype=np.float32),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
