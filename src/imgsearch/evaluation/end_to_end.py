"""The live stack: inserting the indexed pictures through Search and sending every query to it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

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


def search_end_to_end(
    client: Client, data: EvalData, concurrency: int
) -> tuple[list[int | None], list[float], list[list[str]]]:
    """Every query through Search.Search: (rank of the answer, latency ms, top-3 ids)."""

    def one(query: Query) -> tuple[int | None, float, list[str]]:
        started = time.perf_counter()
        result = client.search(query.image, k=SEARCH_TOP_K)
        latency = (time.perf_counter() - started) * 1000
        ids = [hit.id for hit in result.hits]
        return rank_of(ids, item_id(query.answer)), latency, ids[:3]

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, data.queries))
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]
