"""Choosing the descriptor by measurement, cheaply (`make descriptor-search`).

Embeds one exploration set per input geometry, keeping several poolings of the
last feature map (average, GeM p=2/3/4, max); every other choice (power
normalisation, PCA-whitening or learned whitening, dimension, multi-scale
combinations) is then evaluated offline with exact numpy search.

The set: the evaluation's photo gallery (first 100 pictures, every edit kind),
its 2,000 distractors, Fashion-MNIST (3,000 training images, 300 test
queries), and the training pictures (disjoint sources) with random edits, on
which whitening is fitted. Prints a table, one JSON line, and writes
docs/descriptor-search.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".imgsearch" / "eval" / "explore"
POOLINGS = ("avg", "gem2", "gem3", "gem4", "max")
GEOMETRIES = {
    # name: (crop policy, input size, trim borders)
    "centre224": ("centre", 224, False),
    "full224": ("full", 224, False),
    "full224trim": ("full", 224, True),
    "full256trim": ("full", 256, True),
    "full288trim": ("full", 288, True),
    "full192trim": ("full", 192, True),
}


def build_inputs(
    seed: int, query_pictures: int, train_edits: int, distractors: int, fashion: int
) -> dict[str, object]:
    from imgsearch.evaluation import augment, datasets, edits

    pictures = datasets.cached_pictures(ROOT / ".imgsearch" / "eval")
    sets = datasets.photo_sets(pictures, 300, distractors, seed)
    backdrops = [p.image() for p in sets.train[:60]]
    queries, answers, kinds = [], [], []
    for kind in edits.ALL_KINDS:
        for index, picture in enumerate(sets.gallery[:query_pictures]):
            queries.append(edits.edited_query(picture.image(), kind, seed, index, backdrops))
            answers.append(index)
            kinds.append(kind.name)
    train_images = [p.image() for p in sets.train]
    train_pairs_a, train_pairs_b = [], []
    rng = np.random.default_rng(seed + 1)
    for index, image in enumerate(train_images):
        for _ in range(train_edits):
            train_pairs_a.append(index)
            train_pairs_b.append(augment.random_edit(image, rng, train_images[:80]))
    fashion_train, fashion_train_labels = datasets.load_fashion("train")
    fashion_test, fashion_test_labels = datasets.load_fashion("test")
    pick = np.random.default_rng(seed)
    g = pick.choice(len(fashion_train), fashion, replace=False)
    q = pick.choice(len(fashion_test), fashion // 10, replace=False)
    return {
        "indexed": [p.jpeg for p in sets.indexed],
        "queries": queries,
        "answers": np.array(answers),
        "kinds": np.array(kinds),
        "train": [p.jpeg for p in sets.train],
        "train_edits": train_pairs_b,
        "train_pairs": np.array(train_pairs_a),
        "fashion_gallery": [datasets.png(fashion_train[i]) for i in g],
        "fashion_gallery_labels": fashion_train_labels[g],
        "fashion_queries": [datasets.png(fashion_test[i]) for i in q],
        "fashion_query_labels": fashion_test_labels[q],
    }


def pooled_descriptors(
    geometry: str, groups: dict[str, Sequence[bytes]], batch: int = 16, threads: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """{group: {pooling: (N, 1280) float32, not normalised}} for one input geometry."""
    import torch

    from imgsearch_embedder.model import EmbeddingModel, gem_pool
    from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
    from imgsearch_embedder.settings import EmbedderSettings

    crop, size, trim = GEOMETRIES[geometry]
    configure_pillow(10**8)
    model = EmbeddingModel(
        EmbedderSettings(
            input_size=size,
            resize_size=max(size, round(size * 8 / 7)),
            torch_threads=threads,
            projection="none",
        )
    )
    pre = Preprocessor(size, max(size, round(size * 8 / 7)), 10**8, crop=crop, trim_borders=trim)
    pool = ThreadPoolExecutor(2)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, images in groups.items():
        parts: dict[str, list[np.ndarray]] = {p: [] for p in POOLINGS}
        for start in range(0, len(images), batch):
            arrays = list(pool.map(pre, images[start : start + batch], range(batch)))
            with torch.inference_mode():
                maps = model.trunk(model._to_input(arrays)).float().clamp(min=1e-6)
            parts["avg"].append(maps.mean(dim=(2, 3)).numpy())
            parts["max"].append(maps.amax(dim=(2, 3)).numpy())
            for p in (2, 3, 4):
                parts[f"gem{p}"].append(gem_pool(maps, float(p)).numpy())
        out[name] = {p: np.concatenate(v) for p, v in parts.items()}
        print(f"  {geometry} {name}: {len(images)} images", flush=True)
    pool.shutdown()
    return out


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_pca_whitening(
    x: np.ndarray, dim: int, shrink: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    cov = np.cov((x - mean).T)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(-values)[:dim]
    values, vectors = values[order], vectors[:, order]
    scale = (values + shrink * values.mean()) ** -0.5
    return mean, vectors * scale


def fit_learned_whitening(
    x: np.ndarray, pairs_a: np.ndarray, pairs_b: np.ndarray, dim: int, reg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Radenović et al.'s learned whitening: whiten matching-pair differences, then PCA."""
    mean = x.mean(0)
    diff = pairs_a - pairs_b
    cs = diff.T @ diff / len(diff)
    cs += reg * np.trace(cs) / cs.shape[0] * np.eye(cs.shape[0])
    values, vectors = np.linalg.eigh(cs)
    p1 = vectors @ np.diag(values**-0.5) @ vectors.T
    whitened = (x - mean) @ p1
    cd = np.cov(whitened.T)
    values2, vectors2 = np.linalg.eigh(cd)
    order = np.argsort(-values2)[:dim]
    return mean, p1 @ vectors2[:, order]


def top1(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    return np.argmax(queries @ gallery.T, axis=1)


def evaluate(desc: dict[str, np.ndarray], data: dict[str, object]) -> dict[str, float]:
    from imgsearch.evaluation.edits import EASY, HARD
    from imgsearch.evaluation.metrics import class_retrieval, exact_top_k

    hit = top1(desc["queries"], desc["indexed"]) == data["answers"]
    kinds = data["kinds"]
    per_kind = {k.name: float(hit[kinds == k.name].mean()) for k in (*EASY, *HARD)}
    hits = exact_top_k(desc["fashion_queries"], desc["fashion_gallery"], 100)
    fashion = class_retrieval(
        hits, data["fashion_query_labels"], data["fashion_gallery_labels"], 100, 10
    )
    return {
        "easy": float(np.mean([per_kind[k.name] for k in EASY])),
        "hard": float(np.mean([per_kind[k.name] for k in HARD])),
        "worst": min(per_kind.values()),
        "worst_kind": min(per_kind, key=per_kind.get),
        "fashion_map100": fashion["map@100"],
        **{f"kind:{k}": v for k, v in per_kind.items()},
    }


def variants(
    pooled: dict[str, dict[str, np.ndarray]], data: dict[str, object], dims: Iterable[int]
) -> Iterable[tuple[str, dict[str, np.ndarray]]]:
    """(name, {group: unit descriptors}) for every post-processing variant."""
    groups = ("indexed", "queries", "fashion_gallery", "fashion_queries")
    for pooling in POOLINGS:
        raw = {g: pooled[g][pooling] for g in (*groups, "train", "train_edits")}
        yield f"{pooling}", {g: l2n(raw[g]) for g in groups}
        for power in (1.0, 0.5):
            t = {g: l2n(np.sign(v) * np.abs(v) ** power) for g, v in raw.items()}
            train_all = np.concatenate([t["train"], t["train_edits"]])
            a = t["train"][data["train_pairs"]]
            b = t["train_edits"]
            for dim in dims:
                for reg in (0.05, 0.2):
                    mean, proj = fit_learned_whitening(train_all, a, b, dim, reg)
                    yield (
                        f"{pooling} pow{power} Lw{dim} reg{reg}",
                        {g: l2n((t[g] - mean) @ proj) for g in groups},
                    )
                mean, proj = fit_pca_whitening(train_all, dim, shrink=1.0)
                yield (
                    f"{pooling} pow{power} PCAw{dim}",
                    {g: l2n((t[g] - mean) @ proj) for g in groups},
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", action="append", choices=sorted(GEOMETRIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query-pictures", type=int, default=100)
    parser.add_argument("--train-edits", type=int, default=3)
    parser.add_argument("--dims", default="1280,512,256,128")
    parser.add_argument("--distractors", type=int, default=2000)
    parser.add_argument("--fashion", type=int, default=3000, help="gallery; a tenth as queries")
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = build_inputs(
        args.seed, args.query_pictures, args.train_edits, args.distractors, args.fashion
    )
    print(f"inputs built in {time.time() - started:.0f} s", flush=True)
    groups = {
        g: data[g]
        for g in (
            "indexed",
            "queries",
            "train",
            "train_edits",
            "fashion_gallery",
            "fashion_queries",
        )
    }
    results = {}
    for geometry in args.geometry or list(GEOMETRIES):
        from imgsearch.evaluation.datasets import PICTURES_VERSION

        path = CACHE / (
            f"{geometry}-v{PICTURES_VERSION}-s{args.seed}-q{args.query_pictures}"
            f"-t{args.train_edits}-d{args.distractors}-f{args.fashion}.npz"
        )
        if path.is_file():
            loaded = np.load(path)
            pooled = {g: {p: loaded[f"{g}/{p}"] for p in POOLINGS} for g in groups}
        else:
            begin = time.time()
            pooled = pooled_descriptors(geometry, groups, threads=args.threads)
            np.savez(path, **{f"{g}/{p}": v for g, d in pooled.items() for p, v in d.items()})
            print(f"{geometry}: embedded in {time.time() - begin:.0f} s", flush=True)
        if args.embed_only:
            continue
        dims = [int(d) for d in args.dims.split(",")]
        for name, desc in variants(pooled, data, dims):
            scores = evaluate(desc, data)
            results[f"{geometry} {name}"] = scores
            print(
                f"{geometry:12s} {name:28s} easy {scores['easy']:.3f} hard {scores['hard']:.3f}"
                f" worst {scores['worst']:.2f} ({scores['worst_kind']})"
                f" fashion {scores['fashion_map100']:.3f}",
                flush=True,
            )
    out = CACHE / f"results-s{args.seed}.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    merged = {**previous, **results}
    out.write_text(json.dumps(merged, indent=1))
    if merged and not args.embed_only:
        write_markdown(merged, args, ROOT / "docs" / "descriptor-search.md")
        best = max(merged, key=lambda name: merged[name]["hard"])
        print(json.dumps({"best_hard": best, **{k: v for k, v in merged[best].items()
                                                   if not k.startswith("kind:")}}))  # fmt: skip
    return 0


def write_markdown(results: dict[str, dict], args: argparse.Namespace, path: Path) -> None:
    """docs/descriptor-search.md: every variant, best hard-edit recall first."""
    from imgsearch.evaluation.datasets import PICTURES_VERSION
    from imgsearch.evaluation.edits import ALL_KINDS

    rows = sorted(results.items(), key=lambda item: -item[1]["hard"])
    lines = [
        "# Descriptor search",
        "",
        "Written by `make descriptor-search` (`bench/descriptor_search.py`); the numbers choose",
        "the Embedder's default descriptor, which [evaluation.md](evaluation.md) then measures",
        "end to end on the full sets.",
        "",
        f"Exploration set (seed {args.seed}, pictures version {PICTURES_VERSION}): the first"
        f" {args.query_pictures} gallery pictures"
        f" in every edit kind against the gallery and {args.distractors} distractors; Fashion-MNIST"
        f" {args.fashion} gallery images and {args.fashion // 10} queries; whitening fitted on"
        f" the training pictures (disjoint sources) and {args.train_edits} random edits of each."
        " Exact search, recall@1. Geometry: `centre224` is the previous default (short side to"
        " 256, centre 224 crop); `full224` resizes the whole picture to 224x224; `trim` removes"
        " flat borders first. Pooling: average, GeM p, max. `pow0.5`: signed square root."
        " `Lw`: learned whitening (reg: shrinkage); `PCAw`: PCA-whitening; the number is the"
        " dimension.",
        "",
        "| geometry and variant | easy | hard | worst kind | Fashion mAP@100 | "
        + " | ".join(kind.name for kind in ALL_KINDS)
        + " |",
        "|---|---:|---:|---|---:|" + "---:|" * len(ALL_KINDS),
    ]
    for name, scores in rows:
        per_kind = " | ".join(f"{scores[f'kind:{kind.name}']:.2f}" for kind in ALL_KINDS)
        lines.append(
            f"| {name} | {scores['easy']:.3f} | {scores['hard']:.3f} |"
            f" {scores['worst_kind']} {scores['worst']:.2f} | {scores['fashion_map100']:.3f} |"
            f" {per_kind} |"
        )
    # Sections written by bench/region_search.py follow the table: keep them.
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    mark = "<!-- region-search:"
    kept = previous[previous.find(mark) :] if mark in previous else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
