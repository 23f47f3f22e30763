"""Choosing a multi-layer descriptor by measurement, offline (`make layer-search`).

One forward pass of the default trunk (EfficientNet-Lite0, the default
geometry) gives several feature maps: the outputs of stages 3-6 (80, 112, 192,
320 channels, before `conv_head`), the expanded activations inside stage 6
(1152 channels, ReLU6) and the final map (1280 channels). Each is pooled
(average, GeM, max) and cached, for

- the evaluation's near-duplicate sets (`imgsearch.evaluation.sets.build_data`,
  default `EvalConfig`: the same seed, gallery, distractors and edited queries
  as `make eval`), main view and the 48-px thumbnail view;
- Fashion-MNIST, the full gallery of 10,000 training images and 1,000 test
  queries (as `make eval`), both views;
- the whitening's training photos (the 'train' split, `datasets.split_of`)
  and 4 random edits of each, seed 0, as `make whitening` makes them.

A candidate descriptor concatenates some pooled parts, each signed-square-
rooted, L2-normalised and weighted, then L2-normalises; learned whitening is
refitted on the training photos only (never on Fashion-MNIST or the eval's
sets), and the thumbnail view is added with its weight, as the Embedder does.
Scores: exact recall@1 per edit kind, easy and hard means (as `make eval`'s
exact search), Fashion-MNIST mAP@100 (`metrics.class_retrieval`).

Prints a table and one JSON line; writes a section of docs/descriptor-search.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".imgsearch" / "eval" / "layers"
# Stage outputs tapped (timm `blocks` indexes) and the expanded activations of stage 6.
STAGES = (3, 4, 5, 6)
PARTS = ("s3", "s4", "s5", "s6", "x6", "final")
HEADLINE = ("easy", "hard", "fashion")


def _multi_trunk(model):  # type: ignore[no-untyped-def]
    """A module mapping normalised images to the tuple of tapped maps (PARTS order)."""
    from torch import nn

    class MultiTrunk(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):  # type: ignore[no-untyped-def]
            net = self.net
            x = net.bn1(net.conv_stem(x))
            outs = []
            for index, stage in enumerate(net.blocks):
                if index == 6:
                    first = stage[0]
                    expanded = first.bn1(first.conv_pw(x))
                x = stage(x)
                if index in STAGES:
                    outs.append(x)
            outs.append(expanded)
            outs.append(net.bn2(net.conv_head(x)))
            return tuple(outs)

    return MultiTrunk(model)


def _pool(maps) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """avg, gem3 (of the positive part), max; gem2/gem4 too for the final map."""
    import torch

    out = {}
    for name, fmap in zip(PARTS, maps, strict=True):
        fmap = fmap.float()
        out[f"{name}.avg"] = fmap.mean(dim=(2, 3))
        out[f"{name}.max"] = fmap.amax(dim=(2, 3))
        ps = (2.0, 3.0, 4.0) if name == "final" else (3.0,)
        for p in ps:
            pooled = fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
            out[f"{name}.gem{p:g}"] = pooled
    return {k: v.to(torch.float32).numpy() for k, v in out.items()}


class Extractor:
    """Pooled parts of the main and thumbnail views of encoded images, in one trunk pass each."""

    def __init__(self, threads: int, geometry: str) -> None:
        import timm
        import torch

        from imgsearch_embedder import model as model_module
        from imgsearch_embedder.model import EmbeddingModel, _freeze_for_cpu
        from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
        from imgsearch_embedder.settings import EmbedderSettings

        settings = EmbedderSettings(torch_threads=threads, cpu_freeze=False)
        configure_pillow(10**8)
        self.model = EmbeddingModel(settings)
        net = timm.create_model(model_module.DEFAULT_MODEL, pretrained=False)
        model_module.load_by_order(
            net, model_module._load_state_dict(model_module._default_lite0_weights()), "lite0"
        )
        self.trunk = _freeze_for_cpu(_multi_trunk(net.eval()), settings.input_size)
        self.pre = Preprocessor(settings.input_size, settings.resize_size, 10**8,
                                crop=settings.crop, trim_borders=settings.trim_borders)  # fmt: skip
        if geometry == "pad":
            self.pre = PadPreprocessor(settings.input_size, settings.resize_size, 10**8,
                                       crop="full", trim_borders=True)  # fmt: skip
        self.side, self.size = settings.thumbnail_side, settings.thumbnail_input_size
        self.torch = torch

    def __call__(
        self, images: Sequence[bytes], say: Callable[[str], None]
    ) -> dict[str, np.ndarray]:
        import torch.nn.functional as F

        torch = self.torch
        parts: dict[str, list[np.ndarray]] = {}
        started = time.time()
        with ThreadPoolExecutor(2) as pool:
            for start in range(0, len(images), 16):
                chunk = images[start : start + 16]
                arrays = list(pool.map(self.pre, chunk, range(len(chunk))))
                with torch.inference_mode():
                    x = self.model._to_input(arrays)
                    main = _pool(self.trunk(x))
                    small = F.interpolate(x, size=(self.side, self.side), mode="area")
                    small = F.interpolate(small, size=(self.size, self.size), mode="bilinear",
                                          align_corners=False)  # fmt: skip
                    thumb = _pool(self.trunk(small))
                for key, value in main.items():
                    parts.setdefault(key, []).append(value)
                for key, value in thumb.items():
                    parts.setdefault("t:" + key, []).append(value)
                if start % 1600 == 0:
                    say(f"    {start}/{len(images)} in {time.time() - started:.0f} s")
        return {k: np.concatenate(v).astype(np.float16) for k, v in parts.items()}


class PadPreprocessor:
    """Trim flat borders, then pad to a square with the border colour (aspect preserved)."""

    def __init__(self, input_size: int, resize_size: int, pixels: int, crop: str,
                 trim_borders: bool) -> None:  # fmt: skip
        from imgsearch_embedder.preprocess import Preprocessor

        self.inner = Preprocessor(input_size, resize_size, pixels, crop="full", trim_borders=False)
        self.inner = _PadGeometry(self.inner)

    def __call__(self, data: bytes, index: int) -> np.ndarray:
        return self.inner(data, index)


class _PadGeometry:
    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def __call__(self, data: bytes, index: int) -> np.ndarray:
        from imgsearch.common.imaging import DecodeLimits, decode_then

        limits = DecodeLimits(10**8, draft_size=self.inner.resize_size)
        return decode_then(data, f"images[{index}]", limits, self.geometry)

    def geometry(self, image):  # type: ignore[no-untyped-def]
        from PIL import Image

        from imgsearch_embedder.preprocess import trim_uniform_borders

        image = trim_uniform_borders(image)
        w, h = image.size
        if w != h:
            edge = np.asarray(image, dtype=np.uint8)
            ring = np.concatenate([edge[0], edge[-1], edge[:, 0], edge[:, -1]])
            colour = tuple(int(v) for v in np.median(ring, axis=0))
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), colour)
            canvas.paste(image, ((side - w) // 2, (side - h) // 2))
            image = canvas
        return self.inner._resize_full(image)


def cached(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if path.is_file():
        with np.load(path) as loaded:
            return {k: loaded[k] for k in loaded.files}
    value = make()
    np.savez(path, **value)
    return value


def resumable(
    directory: Path, images: Sequence[bytes], extract, chunk: int = 320, limit: int | None = None
):  # type: ignore[no-untyped-def]
    """Pooled parts of `images`, extracted in chunks saved under `directory` (resumable).

    Returns what the saved chunks hold (a prefix of `images`) once `limit` seconds passed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for index, start in enumerate(range(0, len(images), chunk)):
        path = directory / f"{index:04d}.npz"
        if not path.is_file():
            if limit is not None and time.time() - started > limit:
                break
            np.savez(path, **extract(images[start : start + chunk]))
    parts = [dict(np.load(p)) for p in sorted(directory.glob("*.npz"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def training_images(data_dir: Path, seed: int, edits: int) -> tuple[list[bytes], np.ndarray, int]:
    """The whitening's training photos and their edited copies (as `make whitening`):
    (originals then copies, each copy's original, number of originals)."""
    from imgsearch.evaluation.whitening import training_set

    training = training_set(data_dir, seed, edits)
    return training.originals + training.edited, training.owners, len(training.originals)


def signed_sqrt_l2(x: np.ndarray, power: float = 0.5) -> np.ndarray:
    x = np.sign(x) * np.abs(x) ** power
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def combine(store: dict[str, np.ndarray], recipe: Sequence[tuple[str, float]], prefix: str = "",
            power: float = 0.5) -> np.ndarray:  # fmt: skip
    """Concatenation of weighted, power-normalised, L2-normalised parts, L2-normalised."""
    blocks = [w * signed_sqrt_l2(store[prefix + key].astype(np.float32), power)
              for key, w in recipe]  # fmt: skip
    return l2n(np.concatenate(blocks, axis=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--geometry", default="trim", choices=("trim", "pad"))
    parser.add_argument("--only", default="", help="comma list of sets to embed: train,nd,fashion")
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument(
        "--nd-limit",
        type=float,
        default=None,
        help="seconds to spend embedding near-duplicate chunks (0: use the saved ones)",
    )
    parser.add_argument("--write-doc", action="store_true")
    parser.add_argument("--round", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--shipped",
        action="store_true",
        help="score the shipped default (settings and projection file) only",
    )
    parser.add_argument("--doc-only", action="store_true", help="write the doc from saved results")
    parser.add_argument(
        "--fashion-sweep",
        action="store_true",
        help="more variants, Fashion-MNIST only (no near-duplicate sets)",
    )
    parser.add_argument("--verdict", default="", help="the conclusion, appended to the note")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from imgsearch.evaluation import datasets
    from imgsearch.evaluation.config import EvalConfig
    from imgsearch.evaluation.sets import build_data

    CACHE.mkdir(parents=True, exist_ok=True)
    say = print
    saved = CACHE / (
        f"sweep-{args.geometry}-s{args.seed}.json"
        if args.fashion_sweep
        else f"shipped-{args.geometry}-s{args.seed}.json"
        if args.shipped
        else f"results{args.round}-{args.geometry}-s{args.seed}.json"
    )
    if args.doc_only:
        write_doc(json.loads(saved.read_text()), args, args.verdict)
        return 0
    extractor: Extractor | None = None

    def extract(images: Sequence[bytes]) -> dict[str, np.ndarray]:
        nonlocal extractor
        if extractor is None:
            extractor = Extractor(args.threads, args.geometry)
        return extractor(images, lambda s: print(s, flush=True))

    tag = f"{args.geometry}-s{args.seed}"
    sets = args.only.split(",") if args.only else ["train", "fashion", "nd"]
    stores = {}
    if "train" in sets:
        images, owners, n_train = training_images(Path(".imgsearch/eval"), args.seed, 4)
        say(f"training: {n_train} photos, {len(images) - n_train} edited copies")
        stores["train"] = cached(CACHE / f"train-{tag}.npz", lambda: extract(images))
    if "fashion" in sets:
        train, train_labels = datasets.load_fashion("train")
        test, test_labels = datasets.load_fashion("test")
        rng = np.random.default_rng(args.seed)
        g = np.sort(rng.choice(len(train), 10_000, replace=False))
        q = np.sort(rng.choice(len(test), 1_000, replace=False))
        f_images = [datasets.png(a) for a in train[g]] + [datasets.png(a) for a in test[q]]
        stores["fashion"] = cached(CACHE / f"fashion-{tag}.npz", lambda: extract(f_images))
        fashion_labels = (train_labels[g], test_labels[q])
    if args.fashion_sweep:
        sets = [s for s in sets if s != "nd"]
    if "nd" in sets:
        config = EvalConfig(seed=args.seed, fashion_gallery=0, fashion_queries=0)
        data = build_data(config, say)
        # Picture-major order: a prefix of the queries covers every edit kind alike, so a
        # run stopped early still measures every kind (on the first gallery pictures).
        queries = sorted(data.queries, key=lambda q: q.answer)
        nd_images = [p.jpeg for p in data.indexed] + [q.image for q in queries]
        stores["nd"] = resumable(CACHE / f"nd-{tag}", nd_images, extract, limit=args.nd_limit)
        n_indexed = len(data.indexed)
        done = len(next(iter(stores["nd"].values()))) - n_indexed
        done -= done % len(config.kinds)
        stores["nd"] = {k: v[: n_indexed + done] for k, v in stores["nd"].items()}
        kinds = np.array([q.kind for q in queries[:done]])
        answers = np.array([q.answer for q in queries[:done]])
        args.nd_pictures = done // len(config.kinds)
        say(f"near-duplicates: {done} queries ({args.nd_pictures} pictures per kind)")
    if args.embed_only or len(stores) < (2 if args.fashion_sweep else 3):
        return 0
    nd = None if args.fashion_sweep else (kinds, answers, n_indexed)
    results = evaluate(stores, owners, n_train, fashion_labels, nd, args)
    saved.write_text(json.dumps(results, indent=1))
    print(json.dumps({"layer_search": {k: {m: round(v[m], 4) for m in v if m in HEADLINE}
                                       for k, v in results.items()}}))  # fmt: skip
    if args.write_doc:
        write_doc(results, args, args.verdict)
    return 0


# name -> (recipe of main parts, thumbnail weight, whitening dim, reg, power)
Candidate = tuple[list[tuple[str, float]], float, int, float, float]


F3 = ("final.gem3", 1.0)


def candidates() -> dict[str, Candidate]:
    """Measured on both the near-duplicate sets and Fashion-MNIST."""
    return {
        "default (final gem3, Lw256, thumb 0.5)": ([F3], 0.5, 256, 0.2, 0.5),
        "final gem3, Lw512": ([F3], 0.5, 512, 0.2, 0.5),
        "final gem3 + 1.0 s4 avg, Lw256": ([F3, ("s4.avg", 1.0)], 0.5, 256, 0.2, 0.5),
        "final gem3 + 2.0 s4 avg, Lw256": ([F3, ("s4.avg", 2.0)], 0.5, 256, 0.2, 0.5),
        "final gem3 + 3.0 s4 avg, Lw256": ([F3, ("s4.avg", 3.0)], 0.5, 256, 0.2, 0.5),
        "final gem3 + 1.5 s4 avg, Lw512": ([F3, ("s4.avg", 1.5)], 0.5, 512, 0.2, 0.5),
        "final gem3 + 2.0 s4 avg, Lw512": ([F3, ("s4.avg", 2.0)], 0.5, 512, 0.2, 0.5),
        "final gem3 + 3.0 s4 avg, Lw512": ([F3, ("s4.avg", 3.0)], 0.5, 512, 0.2, 0.5),
        "final gem3 + 1.0 s5 avg, Lw256": ([F3, ("s5.avg", 1.0)], 0.5, 256, 0.2, 0.5),
        "s4 gem3 alone, Lw256": ([("s4.gem3", 1.0)], 0.5, 256, 0.2, 0.5),
        "x6 avg alone, Lw256": ([("x6.avg", 1.0)], 0.5, 256, 0.2, 0.5),
    }


def regularised() -> dict[str, Candidate]:
    """Second round (`--round 2`): the whitening's shrinkage and the thumbnail's weight."""
    out: dict[str, Candidate] = {}
    for w, dim in ((2.0, 256), (3.0, 256), (3.0, 512), (4.0, 512)):
        for reg in (0.5, 1.0):
            recipe = [F3, ("s4.avg", w)]
            out[f"final gem3 + {w} s4 avg, Lw{dim} reg {reg}"] = (recipe, 0.5, dim, reg, 0.5)
    out["final gem3 + 2.0 s4 avg, Lw256 reg 0.5 thumb 0.3"] = (
        [F3, ("s4.avg", 2.0)], 0.3, 256, 0.5, 0.5)  # fmt: skip
    out["final gem3 + 3.0 s4 avg, Lw512 reg 0.5 thumb 0.3"] = (
        [F3, ("s4.avg", 3.0)], 0.3, 512, 0.5, 0.5)  # fmt: skip
    out["final gem3 + 2.0 s4 avg + 1.0 x6 avg, Lw512 reg 0.5"] = (
        [F3, ("s4.avg", 2.0), ("x6.avg", 1.0)], 0.5, 512, 0.5, 0.5)  # fmt: skip
    return out


def sweep() -> dict[str, Candidate]:
    """Fashion-MNIST only (`--fashion-sweep`): every part, pooling and weight."""
    out: dict[str, Candidate] = {
        "final avg, Lw256": ([("final.avg", 1.0)], 0.5, 256, 0.2, 0.5),
        "final gem2, Lw256": ([("final.gem2", 1.0)], 0.5, 256, 0.2, 0.5),
        "final gem4, Lw256": ([("final.gem4", 1.0)], 0.5, 256, 0.2, 0.5),
        "final gem3, Lw256, thumb 0.3": ([F3], 0.3, 256, 0.2, 0.5),
        "final gem3, Lw256, reg 0.5": ([F3], 0.5, 256, 0.5, 0.5),
        "final gem3, Lw256, reg 1.0": ([F3], 0.5, 256, 1.0, 0.5),
    }
    for part in ("s3", "s4", "s5", "s6", "x6"):
        for pool in ("avg", "gem3", "max"):
            out[f"{part} {pool} alone, Lw256"] = ([(f"{part}.{pool}", 1.0)], 0.5, 256, 0.2, 0.5)
            if part != "s3":
                for w in (0.5, 1.0):
                    recipe = [F3, (f"{part}.{pool}", w)]
                    out[f"final gem3 + {w} {part} {pool}, Lw256"] = (recipe, 0.5, 256, 0.2, 0.5)
    return out


SHIPPED = "shipped default (Embedder settings and projection file)"


def shipped_recipe() -> Candidate:
    """The Embedder's default descriptor as a recipe of cached parts (its settings' values)."""
    from imgsearch_embedder.settings import EmbedderSettings

    settings = EmbedderSettings()
    if (settings.resolved_mid_layer, settings.mid_pooling) != ("blocks.4", "avg"):
        raise SystemExit("--shipped knows the blocks.4 avg part only")
    recipe = [(f"final.gem{settings.gem_p:g}", 1.0), ("s4.avg", settings.mid_weight)]
    return recipe, settings.thumbnail_weight, 0, 0.0, settings.power


def shipped_projection(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) of the shipped projection, cut to its default dimension."""
    from imgsearch_embedder.projection import BUILTIN_PROJECTION, load_projection

    projection = load_projection(BUILTIN_PROJECTION)
    width = int(projection.meta["default_dimension"])
    return projection.mean, projection.matrix[:, :width]


def evaluate(stores, owners, n_train, fashion_labels, nd, args):  # type: ignore[no-untyped-def]
    from imgsearch.evaluation.metrics import class_retrieval, exact_top_k
    from imgsearch.evaluation.whitening import fit_learned_whitening

    sys.path.insert(0, str(ROOT))
    from bench.region_search import per_kind, print_row

    kinds, answers, n_indexed = nd if nd is not None else (None, None, 0)
    results = {}
    chosen = sweep() if args.fashion_sweep else candidates()
    if args.round == 2:
        chosen = regularised()
    if args.shipped:
        chosen = {SHIPPED: shipped_recipe()}
    for name, (recipe, thumb_w, dim, reg, power) in chosen.items():

        def views(store, recipe=recipe, power=power):  # type: ignore[no-untyped-def]
            return combine(store, recipe, "", power), combine(store, recipe, "t:", power)

        if name == SHIPPED:
            mean, matrix = shipped_projection(dim)
        else:
            train_main, _ = views(stores["train"])
            mean, matrix = fit_learned_whitening(train_main, train_main[owners],
                                                 train_main[n_train:], dim, reg)  # fmt: skip

        def project(store, mean=mean, matrix=matrix, thumb_w=thumb_w, views=views):  # type: ignore[no-untyped-def]
            main, thumb = views(store)
            main, thumb = l2n((main - mean) @ matrix), l2n((thumb - mean) @ matrix)
            return l2n(main + thumb_w * thumb) if thumb_w else main

        table: dict[str, float] = {}
        if not args.fashion_sweep:
            nd_vectors = project(stores["nd"])
            table = per_kind(nd_vectors[n_indexed:] @ nd_vectors[:n_indexed].T, answers, kinds)
        f_vectors = project(stores["fashion"])
        hits = exact_top_k(f_vectors[10_000:], f_vectors[:10_000], 100)
        table["fashion"] = class_retrieval(hits, fashion_labels[1], fashion_labels[0], 100, 10)[
            "map@100"
        ]
        results[name] = table
        if args.fashion_sweep:
            print(f"{name:44s} fashion {table['fashion']:.4f}", flush=True)
        else:
            print_row(name, table)
    return results


SECTION_MARK = "<!-- layer-search:"
NOTE = (
    "One trunk pass gives several feature maps of EfficientNet-Lite0: the outputs of stages"
    " 4, 5 and 6 (`s4` 112 channels at 14x14, `s5` 192 at 7x7, `s6` 320 at 7x7, linear"
    " bottlenecks, before `conv_head`), the expanded ReLU6 activations inside stage 6 (`x6`,"
    " 1152 at 7x7) and the final map (1280 at 7x7). A candidate concatenates pooled parts,"
    " each signed-square-rooted, L2-normalised and weighted (`+ 0.5 s5 avg`: the stage-5"
    " output, average-pooled, weight 0.5), then L2-normalises; learned whitening (`Lw`,"
    " shrinkage `reg`) is refitted for each candidate on the 'train' photos and 4 random"
    " edits of each (never on Fashion-MNIST or the eval's sets), and the 48-px thumbnail"
    " view is added with weight `thumb`, as the Embedder does."
)


def write_doc(results, args, verdict: str) -> None:  # type: ignore[no-untyped-def]
    """Replace (or append) this experiment's section of docs/descriptor-search.md."""
    from imgsearch.evaluation.edits import ALL_KINDS

    title = f"Multi-layer descriptors (geometry `{args.geometry}`)"
    mark = f"{SECTION_MARK} {args.geometry} -->"
    if args.round == 2:
        title, mark = title + ", round 2", f"{SECTION_MARK} {args.geometry} round 2 -->"
    if args.fashion_sweep:
        title, mark = title + ": Fashion-MNIST sweep", f"{SECTION_MARK} {args.geometry} sweep -->"
    names = [k.name for k in ALL_KINDS]
    lines = [
        mark,
        f"## {title}",
        "",
        f"Written by `make layer-search` (`bench/layer_search.py`) on the evaluation's own sets"
        f" (seed {args.seed}: {getattr(args, 'nd_pictures', 300)} of the 300 gallery pictures"
        " in every edit kind against all 300 and 2000 distractors), exact search, recall@1, and"
        " Fashion-MNIST on the full sets (10,000 gallery, 1,000 queries)."
        f" {NOTE} {verdict}",
        "",
    ]
    if args.fashion_sweep:
        lines += ["| variant | Fashion mAP@100 |", "|---|---:|"]
    else:
        lines += [
            "| variant | easy | hard | worst kind | Fashion mAP@100 | " + " | ".join(names) + " |",
            "|---|---:|---:|---|---:|" + "---:|" * len(names),
        ]
    for name, table in sorted(results.items(), key=lambda item: -item[1]["fashion"]):
        if args.fashion_sweep:
            lines.append(f"| {name} | {table['fashion']:.3f} |")
            continue
        worst = min(names, key=lambda k: table[k])
        lines.append(
            f"| {name} | {table['easy']:.3f} | {table['hard']:.3f} | {worst} {table[worst]:.2f}"
            f" | {table['fashion']:.3f} | " + " | ".join(f"{table[k]:.2f}" for k in names) + " |"
        )
    section = "\n".join(lines) + "\n"
    doc = ROOT / "docs" / "descriptor-search.md"
    text = doc.read_text(encoding="utf-8")
    start = text.find(mark)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("<!-- ", start + len(mark))
        text = text[:start] + section + ("\n" + text[end:] if end >= 0 else "")
    doc.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
