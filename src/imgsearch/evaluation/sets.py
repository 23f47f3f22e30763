"""Building one evaluation's data: the photo sets, their edited queries, Fashion-MNIST samples."""

from __future__ import annotations

import numpy as np

from imgsearch.evaluation import datasets, edits
from imgsearch.evaluation.config import EvalConfig, Say
from imgsearch.evaluation.records import EvalData, Query


def _small_sets(config: EvalConfig) -> datasets.PhotoSets:
    """Scaled-down sets for the tests: skimage.data's photos only (no Debian packages)."""
    pictures = [
        datasets.Picture(name, name, "eval", datasets.to_jpeg(image))
        for name, image in datasets.skimage_pictures()
    ]
    return datasets.PhotoSets(
        pictures[: config.gallery],
        pictures[config.gallery : config.gallery + config.distractors],
        [],
    )


def _fashion(config: EvalConfig) -> list[np.ndarray | None]:
    """Gallery images and labels, query images and labels (Nones when skipped)."""
    if not (config.fashion_gallery and config.fashion_queries):
        return [None, None, None, None]
    train, train_labels = datasets.load_fashion("train")
    test, test_labels = datasets.load_fashion("test")
    rng = np.random.default_rng(config.seed)
    g = np.sort(rng.choice(len(train), config.fashion_gallery, replace=False))
    q = np.sort(rng.choice(len(test), config.fashion_queries, replace=False))
    return [train[g], train_labels[g], test[q], test_labels[q]]


def build_data(config: EvalConfig, say: Say) -> EvalData:
    """The sets: gallery, distractors, edited queries, Fashion-MNIST samples."""
    if config.small:
        sets = _small_sets(config)
    else:
        say("building the photo sets (cached after the first run)")
        pictures = datasets.cached_pictures(config.data_dir)
        sets = datasets.photo_sets(pictures, config.gallery, config.distractors, config.seed)
    # Unrelated pictures for banners and screenshots (none in small sets: a plain backdrop).
    backdrops = [p.image() for p in sets.train[:60]]
    queries = []
    for name in config.kinds:
        kind = edits.KINDS_BY_NAME[name]
        for index, picture in enumerate(sets.gallery):
            data = edits.edited_query(picture.image(), kind, config.seed, index, backdrops)
            queries.append(Query(name, index, data))
    say(
        f"  {len(sets.gallery)} gallery pictures, {len(sets.distractors)} distractors,"
        f" {len(queries)} edited queries in {len(config.kinds)} kinds"
    )
    composition = {
        "gallery": datasets.composition(sets.gallery),
        "distractors": datasets.composition(sets.distractors),
    }
    return EvalData(
        sets.indexed,
        len(sets.gallery),
        queries,
        *_fashion(config),
        backdrops=backdrops,
        composition=composition,
    )
