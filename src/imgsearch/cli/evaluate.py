"""`imgsearch eval`: measure retrieval quality (imgsearch.evaluation), write docs/evaluation.md."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from imgsearch.evaluation import edits


def _say(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def eval_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Markdown report to write (plots go to img/ beside it)."),
    ] = Path("docs/evaluation.md"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of every generated set.")] = 0,
    gallery: Annotated[int, typer.Option("--gallery", min=1, help="Queried pictures.")] = 300,
    distractors: Annotated[
        int, typer.Option("--distractors", min=0, help="Indexed pictures never queried.")
    ] = 2000,
    kinds: Annotated[
        str, typer.Option("--kinds", help="Comma-separated edit kinds (default: all).")
    ] = "",
    fashion_gallery: Annotated[
        int, typer.Option("--fashion-gallery", min=0, help="Fashion-MNIST gallery (0: skip).")
    ] = 10_000,
    fashion_queries: Annotated[
        int, typer.Option("--fashion-queries", min=0, help="Fashion-MNIST test queries.")
    ] = 1_000,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also measure the previous default.")
    ] = True,
    dimension_curve: Annotated[
        bool,
        typer.Option(
            "--dimension-curve/--no-dimension-curve",
            help="Also embed without the projection: recall up to the trunk's full width.",
        ),
    ] = False,
    milvus: Annotated[
        str, typer.Option("--milvus", help="'lite' or 'standalone' Milvus for the stack.")
    ] = "lite",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Cached sets and the stack's data.")
    ] = Path(".imgsearch/eval"),
    embedder_threads: Annotated[
        int,
        typer.Option(
            "--embedder-threads",
            min=0,
            help="Torch threads per Embedder it starts (0: the cores shared among them).",
        ),
    ] = 0,
    small: Annotated[
        bool, typer.Option("--small", help="Scaled-down sets: skimage.data photos only.")
    ] = False,
) -> None:
    """Measure recall per edit kind, Fashion-MNIST mAP and speed; print one JSON line."""
    from imgsearch.evaluation.datasets import DataUnavailableError
    from imgsearch.evaluation.report import headline, write_report
    from imgsearch.evaluation.runner import EvalConfig, run_evaluation
    from imgsearch.stack import StackError

    chosen = tuple(k for k in kinds.split(",") if k) or tuple(k.name for k in edits.ALL_KINDS)
    unknown = [k for k in chosen if k not in edits.KINDS_BY_NAME]
    if unknown:
        typer.echo(
            f"imgsearch: error: unknown edit kinds {unknown}; known:"
            f" {', '.join(edits.KINDS_BY_NAME)}",
            err=True,
        )
        raise typer.Exit(2)
    if milvus not in ("lite", "standalone"):
        typer.echo(f"imgsearch: error: bad --milvus {milvus!r}", err=True)
        raise typer.Exit(2)
    config = EvalConfig(
        seed=seed,
        gallery=gallery,
        distractors=distractors,
        kinds=chosen,
        fashion_gallery=fashion_gallery,
        fashion_queries=fashion_queries if fashion_gallery else 0,
        baseline=baseline,
        dimension_curve=dimension_curve,
        milvus=milvus,
        data_dir=data_dir,
        small=small,
        embedder_threads=embedder_threads,
    )
    try:
        report = run_evaluation(config, _say)
    except (DataUnavailableError, StackError) as exc:
        typer.echo(f"imgsearch: error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from None
    if out is not None:
        write_report(report, out)
        _say(f"wrote {out}")
    # Everything measured, for later analysis (the markdown shows a part of it).
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "report.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    typer.echo(json.dumps(headline(report)))
