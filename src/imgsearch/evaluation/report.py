"""Rendering an evaluation `Report`: docs/evaluation.md, its plots, the one-line JSON summary."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from imgsearch.common.query_views import DEFAULT_VIEW_MARGIN, VIEW_KINDS
from imgsearch.evaluation.records import Report


def _f(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _default_label(report: Report) -> str:
    return next(iter(report.retrieval))


def _baseline_label(report: Report) -> str | None:
    labels = list(report.retrieval)
    return labels[1] if len(labels) > 1 else None


def headline(report: Report) -> dict[str, Any]:
    """The figures `imgsearch eval` prints as one JSON line."""
    default = report.retrieval[_default_label(report)]
    e2e, exact = default["end_to_end"], default.get("exact", {})
    kinds = [k["name"] for k in report.kinds]
    worst = min(kinds, key=lambda k: e2e[k]["recall@1"]) if kinds else None
    line: dict[str, Any] = {
        "model": report.model["model"],
        "fingerprint": report.model["fingerprint"],
        "dimension": report.model["dimension"],
        "easy_recall@1": e2e.get("easy", {}).get("recall@1"),
        "hard_recall@1": e2e.get("hard", {}).get("recall@1"),
        "exact_easy_recall@1": exact.get("easy", {}).get("recall@1"),
        "exact_hard_recall@1": exact.get("hard", {}).get("recall@1"),
        "exact_whole_image_hard_recall@1": default.get("exact_whole_image", {})
        .get("hard", {})
        .get("recall@1"),
        "worst_kind": worst,
        "worst_kind_recall@1": e2e[worst]["recall@1"] if worst else None,
        "map": e2e["all"]["map"],
    }
    baseline = _baseline_label(report)
    if baseline is not None:
        base = report.retrieval[baseline]["exact"]
        line["baseline_exact_easy_recall@1"] = base.get("easy", {}).get("recall@1")
        line["baseline_exact_hard_recall@1"] = base.get("hard", {}).get("recall@1")
    for label, scores in report.fashion.items():
        key = "raw_pixels" if label.startswith("raw pixels") else None
        if label == _default_label(report):
            key = "fashion"
        elif label == baseline:
            key = "baseline_fashion"
        if key:
            line[f"{key}_map@100"] = scores["map@100"]
            line[f"{key}_precision@10"] = scores["precision@10"]
    embedders = report.speed.get("embedders", {})
    if "default" in embedders:
        line["embed_p50_ms"] = embedders["default"]["embed_latency_p50_ms"]
        line["embed_whole_image_p50_ms"] = embedders["default"].get(
            "embed_whole_image_latency_p50_ms"
        )
    if "baseline" in embedders:
        line["baseline_embed_p50_ms"] = embedders["baseline"]["embed_latency_p50_ms"]
        line["embed_images_per_s_ratio"] = (
            embedders["default"]["embed_images_per_s"] / embedders["baseline"]["embed_images_per_s"]
        )
    line["insert_images_per_s"] = report.speed.get("insert_images_per_s")
    line["search_p50_ms"] = report.speed.get("search_latency_p50_ms")
    line["elapsed_s"] = round(report.elapsed_s, 1)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in line.items()}


def _kind_table(report: Report) -> list[str]:
    default = report.retrieval[_default_label(report)]
    baseline = _baseline_label(report)
    whole = default.get("exact_whole_image")
    head = (
        "| kind | group | edit | recall@1 end to end | recall@1 exact | recall@10 end to end"
        " | mAP end to end |"
    )
    sep = "|---|---|---|---:|---:|---:|---:|"
    if whole:
        head += " recall@1 exact, whole image only |"
        sep += "---:|"
    if baseline:
        head += " previous default: recall@1 exact |"
        sep += "---:|"
    rows = [head, sep]
    names = [(k["name"], k["group"], k["description"]) for k in report.kinds]
    names += [("easy", "", "mean of the easy kinds"), ("hard", "", "mean of the hard kinds"),
              ("all", "", "every query")]  # fmt: skip
    for name, group, description in names:
        e2e = default["end_to_end"].get(name)
        if e2e is None:
            continue
        exact = default.get("exact", {}).get(name, {})
        bold = "**" if name in ("easy", "hard", "all") else ""
        row = (
            f"| {bold}{name}{bold} | {group} | {description} | {_f(e2e['recall@1'])} |"
            f" {_f(exact.get('recall@1'))} | {_f(e2e['recall@10'])} | {_f(e2e['map'])} |"
        )
        if whole:
            row += f" {_f(whole.get(name, {}).get('recall@1'))} |"
        if baseline:
            row += f" {_f(report.retrieval[baseline]['exact'].get(name, {}).get('recall@1'))} |"
        rows.append(row)
    return rows


def _views_section(report: Report) -> list[str]:
    """Per edit kind: how often the Embedder found a view, and which view found the answer."""
    if not report.views:
        return []
    names = [k["name"] for k in report.kinds if k["name"] in report.views] + ["all"]
    rows = [
        "## Query views",
        "",
        "Share of each kind's queries in which the Embedder found a view (an *inset*: a"
        " picture pasted into the query; *straightened*: the query turned back upright and"
        " cropped; *uncaptioned*: outlined captions painted over), and share whose original"
        " was found through a view, that is, whose hit for the original says that"
        " `matched_view` (end to end / exact).",
        "",
        "| kind | a view found | "
        + " | ".join(f"{view} found" for view in VIEW_KINDS)
        + " | "
        + " | ".join(f"original found {view}" for view in VIEW_KINDS)
        + " |",
        "|---|" + "---:|" * (1 + 2 * len(VIEW_KINDS)),
    ]
    for name in names:
        row = report.views.get(name)
        if row is None:
            continue
        bold = "**" if name == "all" else ""
        found = [_f(row.get(f"found_{view}")) for view in VIEW_KINDS]
        answers = [
            f"{_f(row.get(f'answer_{view}_end_to_end'))} / {_f(row.get(f'answer_{view}_exact'))}"
            for view in VIEW_KINDS
        ]
        rows.append(
            f"| {bold}{name}{bold} | {_f(row['found'])} | " + " | ".join(found + answers) + " |"
        )
    return [*rows, ""]


def _fashion_table(report: Report) -> list[str]:
    rows = [
        "| descriptor | mAP@100 | mAP@100 (strict: / min(R, 100)) | precision@10 |",
        "|---|---:|---:|---:|",
    ]
    for label, scores in report.fashion.items():
        rows.append(
            f"| {label} | {_f(scores['map@100'])} | {_f(scores['map@100_strict'])} |"
            f" {_f(scores['precision@10'])} |"
        )
    return rows


def _dimension_table(report: Report) -> list[str]:
    rows = [
        "| dimension | projection | easy recall@1 | hard recall@1 | all recall@1 |"
        " Fashion mAP@100 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for point in report.dimension_curve:
        rows.append(
            f"| {int(point['dimension'])} | {'whitening' if point['projected'] else 'none'} |"
            f" {_f(point['easy_recall@1'])} | {_f(point['hard_recall@1'])} |"
            f" {_f(point['all_recall@1'])} | {_f(point.get('fashion_map@100'))} |"
        )
    return rows


def _speed_lines(report: Report) -> list[str]:
    lines = []
    embedders = report.speed.get("embedders", {})
    if embedders:
        lines += [
            "Query embedding: one query image per call, 20 spread over every edit kind; the"
            " default's with its views, as Search asks (beside it: the whole image only).",
            "",
            "| Embedder | query embedding p50 (1 image, ms) | whole image only (ms) |"
            " bulk embedding (images/s) |",
            "|---|---:|---:|---:|",
        ]
        for name, figures in embedders.items():
            lines.append(
                f"| {name} | {_f(figures['embed_latency_p50_ms'], 1)} |"
                f" {_f(figures.get('embed_whole_image_latency_p50_ms'), 1)} |"
                f" {_f(figures['embed_images_per_s'], 1)} |"
            )
        if "baseline" in embedders:
            d, b = embedders["default"], embedders["baseline"]
            lines += [
                "",
                f"Default against previous default, in the same run: query embedding"
                f" {d['embed_latency_p50_ms'] / b['embed_latency_p50_ms']:.2f}x the latency,"
                f" {d['embed_images_per_s'] / b['embed_images_per_s']:.2f}x the throughput.",
            ]
    lines += [
        "",
        f"End to end: Insert {_f(report.speed.get('insert_images_per_s'), 1)} images/s;"
        f" Search (image query, top {100}) p50 {_f(report.speed.get('search_latency_p50_ms'), 1)}"
        " ms.",
    ]
    return lines


def _intro(report: Report) -> list[str]:
    sets = report.sets
    return [
        "# Retrieval quality",
        "",
        "Written by `imgsearch eval` (`make eval`); do not edit by hand. The descriptor was",
        "chosen with `make descriptor-search` ([descriptor-search.md](descriptor-search.md)).",
        "",
        "## What is measured",
        "",
        f"- **Near-duplicates.** {sets['gallery']} gallery pictures and {sets['distractors']}"
        " distractors (see *The sets* below) are inserted through Search; each gallery picture"
        f" is queried in every edit kind below ({sets['queries']} queries). A query's answer is"
        " its original. *End to end*: the query image goes to Search.Search (the Embedder"
        " embeds it, the Milvus index finds the top 100; cache off). *Exact*: the same"
        " descriptor, brute-force cosine search in numpy.",
        "- **Query views.** Besides the whole query, the Embedder looks in an image query"
        " for a picture pasted into it (*inset*, as in a screenshot) and, when the query is"
        " a rotated copy with its canvas grown, for the picture turned back upright and"
        " cropped (*straightened*), and for the picture with outlined captions painted over"
        " (*uncaptioned*); each view found is embedded and searched too, and each"
        f" item scores max(whole-image cosine, view cosine - {DEFAULT_VIEW_MARGIN:g}), the"
        " hit saying which"
        " view gave it (`matched_view`). Search does this for every image query"
        " (`SEARCH_QUERY_VIEWS`, margin `SEARCH_VIEW_MARGIN`); exact search asks the"
        " Embedder for the same views and merges with the same function"
        " (`imgsearch.common.query_views`), so the two stay comparable. Indexed pictures"
        " have no views. *Whole image only*: exact search without the views.",
        "- **Classes.** Fashion-MNIST: a gallery of"
        f" {sets['fashion_gallery']} training images, {sets['fashion_queries']}"
        " test queries, exact search; relevant = same class.",
        "- recall@k: the original is among the first k hits. mAP: mean of 1/rank of the"
        " original (0 past rank 100). mAP@100 (classes): AP over the first 100 hits,"
        " normalised by the relevant hits among them; the strict variant divides by min(R, 100).",
        f"- Seed {report.config['seed']}; sets are rebuilt identically from it.",
        "",
    ]


def _sets_section(report: Report) -> list[str]:
    composition = report.sets.get("composition") or {}
    if not composition:
        return []
    lines = [
        "## The sets",
        "",
        "Built by `imgsearch.evaluation.datasets` from Debian packages and `skimage.data`."
        " Gallery pictures are whole pictures (at most 1024 px); distractors are whole"
        " pictures not drawn into the gallery and tiles (about 0.055 megapixels) of wallpapers"
        " that are never gallery pictures, so no distractor is a crop of a gallery picture."
        " Copies of one picture (other resolutions, aspect ratios, mirror images, packages)"
        " are dropped by perceptual hash and thumbnail correlation"
        " (`imgsearch.evaluation.near_duplicates`). Sources whose name hashes into the"
        " training split (whitening, edit backdrops) are never evaluated.",
        "",
        "| kind / package | gallery | distractors |",
        "|---|---:|---:|",
    ]
    gallery, distractors = composition.get("gallery", {}), composition.get("distractors", {})
    for key in sorted(set(gallery) | set(distractors)):
        lines.append(f"| {key} | {gallery.get(key, 0)} | {distractors.get(key, 0)} |")
    lines.append(f"| **all** | {sum(gallery.values())} | {sum(distractors.values())} |")
    return [*lines, ""]


def _headline_section(report: Report) -> list[str]:
    parts = [
        "## Headline",
        "",
        f"Default descriptor: `{report.model['model']}`, {report.model['dimension']}-d,"
        f" fingerprint `{report.model['fingerprint'][:16]}…`.",
    ]
    if _baseline_label(report) and report.baseline_model:
        parts.append(f"Previous default (baseline, same run): `{report.baseline_model['model']}`.")
    return [*parts, "", "```json", json.dumps(headline(report), indent=1), "```", ""]


def _dimension_section(report: Report, plots: dict[str, str]) -> list[str]:
    if not report.dimension_curve:
        return []
    parts = [
        "## Recall against descriptor dimension",
        "",
        "Exact search. The whitening's components are ordered, so the first d components"
        " of a served vector, re-normalised, are the d-dimensional descriptor; the"
        " unprojected descriptor (1280-d) is measured when `--dimension-curve` runs an"
        " Embedder without the projection, and in"
        " [descriptor-search.md](descriptor-search.md).",
        "",
        *_dimension_table(report),
        "",
    ]
    if "dimension" in plots:
        parts += [f"![recall against dimension]({plots['dimension']})", ""]
    if report.consistency:
        parts += [
            "The offline projection equals what the live Embedder serves: largest"
            f" difference {report.consistency['max_abs_difference']:.2e} over"
            f" {int(report.consistency['images'])} images.",
            "",
        ]
    return parts


def _speed_section(report: Report, plots: dict[str, str]) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    parts = [
        "## Speed beside quality",
        "",
        f"Measured under load (load average {load[0]:.1f} on {os.cpu_count()} cores during"
        " the write-up): compare figures within this run only.",
        "",
        *_speed_lines(report),
        "",
    ]
    if "speed" in plots:
        parts += [f"![latency beside quality]({plots['speed']})", ""]
    return parts


def _duplicates_section(report: Report) -> list[str]:
    rows = report.duplicate_thresholds
    if not rows:
        return []
    kinds = [k["name"] for k in report.kinds if k["name"] in rows[0]]
    groups = [g for g in ("easy", "hard") if g in rows[0]]
    pictures = report.sets["gallery"] + report.sets["distractors"]
    pairs = int(rows[0]["pairs_compared"])
    head = "| threshold | " + " | ".join([*kinds, *groups]) + " | false pairs | pictures in them |"
    sep = "|---:|" + "---:|" * (len(kinds) + len(groups) + 2)
    body = [
        f"| {r['threshold']:.2f} | "
        + " | ".join(_f(r[name]) for name in (*kinds, *groups))
        + f" | {int(r['false_pairs'])} | {int(r['pictures_in_false_pairs'])} |"
        for r in rows
    ]
    return [
        "## Duplicate threshold (FindDuplicates)",
        "",
        "FindDuplicates links two items whose cosine is at least its threshold. For each"
        " threshold: the share of each edit kind's copies whose whole-image vector reaches it"
        " against its original (a copy that would be grouped with it), and the pairs of"
        f" indexed pictures from different source pictures that reach it (false links; the"
        f" sets hold no copies across sources; {pictures} pictures, {pairs:,} pairs of"
        " different sources compared, tiles of one wallpaper not counted against each"
        " other). Exact cosines of the default descriptor.",
        "",
        head,
        sep,
        *body,
        "",
    ]


def _audit_section(report: Report) -> list[str]:
    parts: list[str] = []
    if report.closest_pairs:
        parts += [
            "## Closest pairs (an audit of the sets)",
            "",
            "The most similar pairs of a gallery picture and another indexed picture, by the"
            " default descriptor (exact cosine): were one a copy or crop of the other, a query"
            " would have two right answers.",
            "",
            "| gallery picture | other picture | its role | cosine |",
            "|---|---|---|---:|",
            *(
                f"| {p['gallery']} | {p['other']} | {p['role']} | {p['cosine']:.3f} |"
                for p in report.closest_pairs
            ),
            "",
        ]
    misses = report.misses[:30]
    if misses:
        parts += [
            f"## Misses end to end (first {len(misses)} of {len(report.misses)})",
            "",
            "| kind | picture | rank of the original | first hit |",
            "|---|---|---:|---|",
            *(
                f"| {m['kind']} | {m['picture']} | {m['rank'] or '>100'} |"
                f" {(m.get('top') or ['-'])[0]} |"
                for m in misses
            ),
            "",
        ]
    return parts


def render_markdown(report: Report, plots: dict[str, str]) -> str:
    """docs/evaluation.md."""
    parts = [*_intro(report), *_sets_section(report), *_headline_section(report)]
    parts += ["## Recall per edit kind", "", *_kind_table(report), ""]
    if "kinds" in plots:
        parts += [f"![recall@1 per edit kind]({plots['kinds']})", ""]
    parts += _views_section(report)
    if report.fashion:
        parts += ["## Fashion-MNIST class retrieval", "", *_fashion_table(report), ""]
    parts += _dimension_section(report, plots)
    parts += _speed_section(report, plots)
    parts += _duplicates_section(report)
    parts += _audit_section(report)
    parts += [
        "## Run",
        "",
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores;"
        f" {report.elapsed_s:.0f} s; Milvus {report.config['milvus']}; Embedders started with"
        f" {report.config.get('embedder_threads') or 'all'} torch thread(s) each. Everything"
        " measured is in `.imgsearch/eval/report.json`.",
        "",
    ]
    return "\n".join(parts)


def write_plots(report: Report, folder: Path) -> dict[str, Path]:
    """PNG plots into `folder`: recall per kind, recall against dimension, speed and quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    default = report.retrieval[_default_label(report)]
    baseline = _baseline_label(report)
    names = [k["name"] for k in report.kinds]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [default["end_to_end"][n]["recall@1"] for n in names], 0.4,
           label=f"{report.model['model']}, end to end")  # fmt: skip
    if baseline:
        ax.bar([i + 0.2 for i in x], [report.retrieval[baseline]["exact"][n]["recall@1"]
               for n in names], 0.4, label="previous default, exact")  # fmt: skip
    ax.axhline(0.85, color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(x), names, rotation=45, ha="right")
    ax.set_ylabel("recall@1")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    written["kinds"] = folder / "eval-kinds.png"
    fig.savefig(written["kinds"], dpi=90)
    plt.close(fig)
    if report.dimension_curve:
        points = sorted(report.dimension_curve, key=lambda p: p["dimension"])
        fig, ax = plt.subplots(figsize=(6, 4))
        dims = [p["dimension"] for p in points]
        for key, label in (("easy_recall@1", "easy recall@1"), ("hard_recall@1", "hard recall@1"),
                           ("fashion_map@100", "Fashion mAP@100")):  # fmt: skip
            if all(key in p for p in points):
                ax.plot(dims, [p[key] for p in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(int(d)) for d in dims])
        ax.set_xlabel("descriptor dimension (exact search)")
        ax.legend()
        fig.tight_layout()
        written["dimension"] = folder / "eval-dimension.png"
        fig.savefig(written["dimension"], dpi=90)
        plt.close(fig)
    embedders = report.speed.get("embedders", {})
    if "baseline" in embedders and baseline:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, label, recall in (
            ("default", report.model["model"], default["exact"]["hard"]["recall@1"]),
            (
                "baseline",
                "previous default",
                report.retrieval[baseline]["exact"]["hard"]["recall@1"],
            ),
        ):
            ms = embedders[name]["embed_latency_p50_ms"]
            ax.scatter([ms], [recall], s=60)
            ax.annotate(label, (ms, recall), textcoords="offset points", xytext=(6, 6))
        ax.set_xlabel("query embedding p50, ms (same run, under load)")
        ax.set_ylabel("hard edits recall@1 (exact)")
        fig.tight_layout()
        written["speed"] = folder / "eval-speed.png"
        fig.savefig(written["speed"], dpi=90)
        plt.close(fig)
    return written


def write_report(report: Report, markdown_path: Path) -> None:
    """docs/evaluation.md and its plots (in img/ beside it)."""
    plots = write_plots(report, markdown_path.parent / "img")
    relative = {k: f"img/{v.name}" for k, v in plots.items()}
    markdown_path.write_text(render_markdown(report, relative), encoding="utf-8")
