"""Fitting the Embedder's whitening projection (`make whitening`), reproducibly.

    python -m imgsearch.evaluation.whitening [--out FILE] [--edits 4] [--seed 0]

Learned whitening (Radenović, Tolias and Chum, "Fine-tuning CNN image retrieval
with no human annotation", 2018): the descriptors of matching pairs (a
training picture and a randomly edited copy, `augment.random_edit`) give the
covariance of what should be ignored, C_S; descriptors are whitened by
C_S^(-1/2) (shrunk towards the identity by `reg` for stability), then rotated
onto the principal components of the whitened training descriptors, so the
first d columns are the best d-dimensional projection.

The training pictures come from sources disjoint from the evaluation's
gallery and distractors (`datasets.split_of`). The descriptor it is fitted
for is the Embedder's default one without a projection; the file records it,
and the Embedder refuses the projection for any other.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsearch.evaluation import augment, datasets

DEFAULT_REG = 0.5


def fit_learned_whitening(
    x: np.ndarray, pairs_a: np.ndarray, pairs_b: np.ndarray, dim: int, reg: float = DEFAULT_REG
) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), projection (D, dim)) from descriptors `x` and matching pairs (rows a_i ~ b_i)."""
    mean = x.mean(axis=0)
    diff = (pairs_a - pairs_b).astype(np.float64)
    cs = diff.T @ diff / len(diff)
    cs += reg * np.trace(cs) / cs.shape[0] * np.eye(cs.shape[0])
    values, vectors = np.linalg.eigh(cs)
    inverse_sqrt = (vectors * values**-0.5) @ vectors.T
    whitened = (x - mean) @ inverse_sqrt
    values2, vectors2 = np.linalg.eigh(np.cov(whitened.T))
    order = np.argsort(-values2)[:dim]
    return mean.astype(np.float32), (inverse_sqrt @ vectors2[:, order]).astype(np.float32)


def fit_pca_whitening(
    x: np.ndarray, dim: int, shrink: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) of PCA-whitening, eigenvalues shrunk by `shrink` x their mean."""
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((x - mean).T))
    order = np.argsort(-values)[:dim]
    scale = (values[order] + shrink * values.mean()) ** -0.5
    return mean.astype(np.float32), (vectors[:, order] * scale).astype(np.float32)


@dataclass(frozen=True)
class TrainingSet:
    """The whitening's training photos (the 'train' split, `datasets.split_of`, disjoint
    from the evaluation's sources) and random edited copies of them (`augment`)."""

    originals: list[bytes]  # each training picture, as encoded in the set
    edited: list[bytes]  # `edits_per_picture` edited copies of each picture, in order
    owners: np.ndarray  # (len(edited),) int: index into `originals` of each copy
    sources: int  # packages the pictures come from


def training_set(data_dir: Path, seed: int, edits_per_picture: int) -> TrainingSet:
    """The training pictures and their edited copies, deterministically from `seed`."""
    pictures = [p for p in datasets.cached_pictures(data_dir) if p.split == "train"]
    images = [p.image() for p in pictures]
    rng = np.random.default_rng(seed)
    edited, owners = [], []
    for index, image in enumerate(images):
        for _ in range(edits_per_picture):
            edited.append(augment.random_edit(image, rng, images))
            owners.append(index)
    return TrainingSet(
        originals=[p.jpeg for p in pictures],
        edited=edited,
        owners=np.array(owners, dtype=np.int64),
        sources=len({p.source for p in pictures}),
    )


def _embed(model: object, preprocessor: object, images: Sequence[bytes]) -> np.ndarray:
    pool = ThreadPoolExecutor(2)
    out = []
    for start in range(0, len(images), 16):
        batch = list(pool.map(preprocessor, images[start : start + 16], range(16)))  # type: ignore[arg-type]
        out.append(model.embed_batch(batch))  # type: ignore[attr-defined]
    pool.shutdown()
    return np.concatenate(out)


def fit(
    out: Path,
    edits_per_picture: int,
    seed: int,
    dim: int,
    reg: float,
    data_dir: Path,
    threads: int = 0,
    default_dimension: int = 512,
) -> None:
    from imgsearch_embedder.model import EmbeddingModel, fitted_for
    from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
    from imgsearch_embedder.projection import save_projection
    from imgsearch_embedder.settings import EmbedderSettings

    started = time.perf_counter()
    settings = EmbedderSettings(
        projection="none", dimension=None, thumbnail_side=0, torch_threads=threads
    )
    training = training_set(data_dir, seed, edits_per_picture)
    configure_pillow(settings.max_image_pixels)
    model = EmbeddingModel(settings)
    preprocessor = Preprocessor(
        settings.input_size,
        settings.resize_size,
        settings.max_image_pixels,
        crop=settings.crop,
        trim_borders=settings.trim_borders,
    )
    originals = _embed(model, preprocessor, training.originals)
    copies = _embed(model, preprocessor, training.edited)
    everything = np.concatenate([originals, copies])
    mean, matrix = fit_learned_whitening(everything, originals[training.owners], copies, dim, reg)
    meta = {
        "method": "lw",
        "default_dimension": default_dimension,
        "fitted_for": fitted_for(settings, model.spec),
        "training": {
            "pictures": len(training.originals),
            "sources": training.sources,
            "edits_per_picture": edits_per_picture,
            "seed": seed,
            "reg": reg,
            "split": "train (datasets.split_of), disjoint from the evaluation's sources",
            "pictures_version": datasets.PICTURES_VERSION,
        },
        "command": f"python -m imgsearch.evaluation.whitening --edits {edits_per_picture}"
        f" --seed {seed} --dim {dim} --reg {reg} --default-dim {default_dimension}",
    }
    save_projection(out, mean, matrix, meta)
    print(
        f"fitted {matrix.shape[0]}x{matrix.shape[1]} learned whitening on"
        f" {len(training.originals)} pictures and {len(training.edited)} edited copies in"
        f" {time.perf_counter() - started:.0f} s: wrote {out}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from imgsearch_embedder.projection import BUILTIN_PROJECTION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN_PROJECTION)
    parser.add_argument("--edits", type=int, default=4, help="edited copies per training picture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=512, help="columns kept")
    parser.add_argument("--reg", type=float, default=DEFAULT_REG)
    parser.add_argument("--data-dir", type=Path, default=Path(".imgsearch/eval"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument(
        "--default-dim", type=int, default=512, help="dimension served when none is configured"
    )
    args = parser.parse_args(argv)
    fit(
        args.out,
        args.edits,
        args.seed,
        args.dim,
        args.reg,
        args.data_dir,
        args.threads,
        args.default_dim,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
