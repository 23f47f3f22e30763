"""The live stack: inserting the indexed pictures through Search and sending every query to it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgsearch.client import Client, ItemInput
from imgsearch.evaluation.config import SEARCH_TOP_K, Say
from imgsearch.evaluation.metrics import rank_of
from imgsearch.evaluation.records import EvalData, Query


def item_id(index: int) -> str:
    """The id an indexed picture is inserted under."""
    return f"item-{index:05d}"


def insert_indexed(client: Client, data: EvalData, say: Say) -> float:
    """Insert gallery and distractors through Search; returns images per second."""
    items = [
        ItemInput(image=p.jpeg, id=item_id(i), uri=p.name, labels={"set": "eval"})
        for i, p in enumerate(data.indexed)
    ]
    started = time.perf_counter()
    outcomes = client.insert(items, batch_size=32)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(
            f"{len(failed)} inserts failed, e.g. {failed[0].id}: {failed[0].message}"
        )
    say(f"  inserted {len(items)} pictures in {elapsed:.0f} s ({len(items) / elapsed:.1f}/s)")
    return len(items) / elapsed


@dataclass(frozen=True)
class EndToEnd:
    """Every query's outcome through Search.Search, in query order."""

    ranks: list[int | None]  # rank of the answer (None past SEARCH_TOP_K)
    latencies_ms: list[float]
    top3: list[list[str]]  # ids of the first three hits
    # Hit.matched_view of the answer's hit ("" whole image, else a view kind; None
    # when the answer was not returned).
    matched_views: list[str | None]


def search_end_to_end(client: Client, data: EvalData, concurrency: int) -> EndToEnd:
    """Every query through Search.Search (Search asks for the query's views itself)."""

    def one(query: Query) -> tuple[int | None, float, list[str], str | None]:
        started = time.perf_counter()
        result = client.search(query.image, k=SEARCH_TOP_K)
        latency = (time.perf_counter() - started) * 1000
        ids = [hit.id for hit in result.hits]
        rank = rank_of(ids, item_id(query.answer))
        view = None if rank is None else result.hits[rank - 1].matched_view
        return rank, latency, ids[:3], view

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, data.queries))
    return EndToEnd(
        ranks=[r[0] for r in results],
        latencies_ms=[r[1] for r in results],
        top3=[r[2] for r in results],
        matched_views=[r[3] for r in results],
    )
