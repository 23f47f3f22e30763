"""Running the evaluation: the sets through the live stack and, beside it, exact search.

`run_evaluation` (in `stack_control`) is the whole `imgsearch eval`; `evaluate` measures
against running services:

1. builds the sets (`sets`), deterministically from the seed;
2. inserts gallery and distractors through Search.Insert and sends every edited
   query through Search.Search (`end_to_end`: Search embeds it with its query
   views and asks the Milvus index);
3. embeds everything with the default Embedder for exact search, the queries
   with their views (EmbedRequest.query_views) as Search asks for them, merged
   by the same rule (`imgsearch.common.query_views`) (or, with
   `dimension_curve`, with an Embedder of the *unprojected* descriptor, and
   applies the shipped projection offline, so exact search can be measured at
   every dimension, checking on a sample that it equals what the live
   Embedder serves);
4. embeds everything with the previous default descriptor ("baseline") for
   comparison in the same run;
5. measures query-embedding latency and bulk throughput of the default and
   baseline Embedders, interleaved so machine load hits both alike;
6. computes recall@k and mAP per edit kind (exact search also without the
   views), how often a view was found and found the answer, Fashion-MNIST
   mAP@100 and precision@10 beside raw pixels, and returns a `Report`.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from imgsearch.client import Client
from imgsearch.evaluation import edits, scoring
from imgsearch.evaluation.config import EvalConfig, Say, Services
from imgsearch.evaluation.embedder_probe import EmbedderProbe, embed_sets, probe_speed
from imgsearch.evaluation.end_to_end import EndToEnd, insert_indexed, search_end_to_end
from imgsearch.evaluation.records import EvalData, Report, Vectors
from imgsearch.evaluation.sets import build_data

__all__ = ["EvalConfig", "Report", "Services", "evaluate", "run_evaluation"]


def run_evaluation(config: EvalConfig, say: Say = print) -> Report:
    """Start the local stack and the comparison Embedders, measure, stop them all."""
    from imgsearch.evaluation.stack_control import run_evaluation as run

    return run(config, say)


def _descriptor_label(model: dict[str, Any]) -> str:
    return f"{model['model']} ({model['dimension']}-d)"


def _projection_of(model: dict[str, Any]) -> scoring.Projection | None:
    """The mean and matrix of the projection the live Embedder applies (None without one)."""
    from imgsearch_embedder.projection import BUILTIN_PROJECTION, load_projection

    descriptor = json.loads(model["descriptor"])
    digest = descriptor.get("projection_sha256")
    if not digest:
        return None
    projection = load_projection(BUILTIN_PROJECTION)
    if projection.sha256 != digest:
        raise RuntimeError(
            f"the Embedder applies projection {digest[:12]} but this checkout ships"
            f" {projection.sha256[:12]}: run the evaluation from the Embedder's own version"
        )
    return projection.mean, projection.matrix


def _default_vectors(
    report: Report,
    probe: EmbedderProbe,
    services: Services,
    data: EvalData,
    config: EvalConfig,
    say: Say,
    probes: dict[str, EmbedderProbe],
) -> Vectors:
    """The default descriptor's vectors of every set, for exact search.

    With an Embedder of the unprojected descriptor, everything is embedded
    once by it and projected offline (also giving the dimension curve); a
    sample embedded by the live default Embedder checks that both agree.
    """
    multiscale = bool(json.loads(report.model["descriptor"]).get("thumbnail"))
    if services.raw_embedder is None or not config.dimension_curve or multiscale:
        if multiscale and config.dimension_curve:
            # Its two views are projected apart: no single unprojected vector to project.
            say("dimension curve: the multi-scale descriptor is truncated, not re-projected")
        return embed_sets(probe, data, config, say, report.model["model"], views=True)
    raw_probe = EmbedderProbe(services.raw_embedder)
    probes["raw"] = raw_probe
    say(f"exact search: the unprojected descriptor ({raw_probe.model.model})")
    raw = embed_sets(raw_probe, data, config, say, "unprojected", views=True)
    projection = _projection_of(report.model)
    report.dimension_curve = scoring.dimension_curve(data, raw, projection)
    served = scoring.projected(raw, projection, int(report.model["dimension"]))
    sample = [p.jpeg for p in data.indexed[:32]]
    live = probe.embed_all(sample, config.batch_size, 1)
    report.consistency = {
        "max_abs_difference": float(np.abs(live - served.indexed[: len(sample)]).max()),
        "images": float(len(sample)),
    }
    return served


def _new_report(config: EvalConfig, data: EvalData, probe: EmbedderProbe) -> Report:
    return Report(
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()},
        sets={
            "gallery": data.gallery_size,
            "distractors": len(data.indexed) - data.gallery_size,
            "queries": len(data.queries),
            "fashion_gallery": 0 if data.fashion_gallery is None else len(data.fashion_gallery),
            "fashion_queries": 0 if data.fashion_queries is None else len(data.fashion_queries),
            "composition": data.composition,
        },
        model=probe.describe(),
        baseline_model=None,
        kinds=[
            {"name": k.name, "group": k.group, "description": k.description}
            for k in edits.ALL_KINDS
            if k.name in config.kinds
        ],
    )


def _through_search(report: Report, services: Services, data: EvalData, config: EvalConfig,
                    say: Say) -> EndToEnd:  # fmt: skip
    """Insert, then every query end to end; fills the end-to-end table, speed and misses."""
    label = _descriptor_label(report.model)
    say(f"end to end through Search at {services.search} ({label})")
    with Client(services.search, timeout=600) as client:
        insert_rate = insert_indexed(client, data, say)
        outcome = search_end_to_end(client, data, config.concurrency)
    say("  every query searched end to end")
    ranks = outcome.ranks
    report.retrieval[label] = {"end_to_end": scoring.per_kind(ranks, data.queries)}
    report.speed["insert_images_per_s"] = insert_rate
    report.speed["search_latency_p50_ms"] = statistics.median(outcome.latencies_ms)
    report.misses = [
        {"kind": q.kind, "picture": data.indexed[q.answer].name, "rank": r, "top": t}
        for q, r, t in zip(data.queries, ranks, outcome.top3, strict=True)
        if r != 1
    ]
    return outcome


def _score_default(report: Report, data: EvalData, served: Vectors, outcome: EndToEnd) -> None:
    label = _descriptor_label(report.model)
    answers = [q.answer for q in data.queries]
    ranks, matched = scoring.exact_search(served, answers)
    report.retrieval[label]["exact"] = scoring.per_kind(ranks, data.queries)
    if served.query_views is not None:
        # The same vectors without the views: what the views add.
        whole = scoring.exact_ranks(served.indexed, served.queries, answers)
        report.retrieval[label]["exact_whole_image"] = scoring.per_kind(whole, data.queries)
        report.views = scoring.views_table(
            data.queries, served.query_views, outcome.matched_views, matched
        )
    if not report.dimension_curve:
        report.dimension_curve = scoring.truncation_curve(report.model, data, served)
    if served.fashion_gallery is not None:
        report.fashion[label] = scoring.fashion_scores(served, data)
    report.closest_pairs = scoring.closest_pairs(served, data)
    report.duplicate_thresholds = scoring.duplicate_thresholds(served, data)


def _score_baseline(report: Report, data: EvalData, vectors: Vectors) -> None:
    assert report.baseline_model is not None
    label = _descriptor_label(report.baseline_model) + ", previous default"
    report.retrieval[label] = {"exact": scoring.exact_table(vectors, data)}
    if vectors.fashion_gallery is not None:
        report.fashion[label] = scoring.fashion_scores(vectors, data)


def evaluate(
    config: EvalConfig, services: Services, say: Say = print, data: EvalData | None = None
) -> Report:
    """Measure everything against running services (see the module docstring)."""
    started = time.perf_counter()
    data = data or build_data(config, say)
    probe = EmbedderProbe(services.embedder)
    report = _new_report(config, data, probe)
    probes = {"default": probe}
    try:
        # Three independent streams at once, so they share the machine alike: the
        # previous default's vectors, the default's exact-search vectors, and
        # Insert then every query through Search.
        with ThreadPoolExecutor(3, thread_name_prefix="eval") as pool:
            baseline_job: Future[Vectors] | None = None
            if services.baseline_embedder is not None:
                probes["baseline"] = EmbedderProbe(services.baseline_embedder)
                report.baseline_model = probes["baseline"].describe()
                baseline_job = pool.submit(
                    embed_sets, probes["baseline"], data, config, say, "previous default"
                )
            served_job = pool.submit(
                _default_vectors, report, probe, services, data, config, say, probes
            )
            outcome = _through_search(report, services, data, config, say)
            _score_default(report, data, served_job.result(), outcome)
            if baseline_job is not None:
                _score_baseline(report, data, baseline_job.result())
        if data.fashion_gallery is not None and data.fashion_queries is not None:
            report.fashion["raw pixels (784-d)"] = scoring.raw_pixel_scores(data)
        if config.speed_rounds:
            say("speed: default and previous Embedders, interleaved")
            speed_probes = {k: v for k, v in probes.items() if k != "raw"}
            images = [q.image for q in data.queries]
            report.speed["embedders"] = probe_speed(
                speed_probes, images, config.speed_rounds, config.batch_size, views=("default",)
            )
    finally:
        for each in probes.values():
            each.close()
    report.elapsed_s = time.perf_counter() - started
    return report
