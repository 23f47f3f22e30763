"""`FindDuplicates`: groups of near-duplicate items, streamed with progress.

How the links are found, two ways:

- exact, up to `duplicates_exact_max_items` matching items (50,000: 256 MB of
  float32 vectors for 1280-d): their vectors are read a page at a time
  (`MilvusStore.page`, the keyset pagination of List) into one matrix, and
  every pair scoring at or above the threshold is found by blocked matrix
  products on a worker thread (numpy/BLAS; each block is B x n similarities).
  Exact, and independent of Milvus's search speed: Milvus Lite scans its
  segments per query (measured: about 30 ms per query vector at 20,000 items
  on the loaded 2-core machine, so 20,000 queries take over ten minutes even
  batched), while the matrix products take seconds.
- approximate, beyond that: each batch of items' nearest neighbours come from
  one Milvus search call for the whole batch (nq = `duplicates_batch_size`,
  `max_neighbors` + 1 hits each) through the collection's index, which scales
  to collections that do not fit in memory.

Every pair at or above the threshold is a link; groups are the connected
components of the links (union-find), so near-duplicates chain: A~B and B~C
put A, B and C in one group even when A and C score below the threshold.

Why a server stream rather than a long-running operation: the scan is
bounded (minutes at most on one node), the caller wants progress while it
waits, and a stream needs no operation store shared between replicas; a
caller that goes away cancels the scan with its call. Messages: progress
(one per batch), then the groups (largest first), then one summary.

Consistency: each batch is read when it is reached, so items written during
the scan may or may not be scanned, and an item deleted during the scan is
left out of its group when its details are read at the end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from imgsearch.common.duplicates import DEFAULT_DUPLICATE_THRESHOLD
from imgsearch.common.errors import InvalidArgumentError
from imgsearch.v1 import search_pb2
from imgsearch_search.browse import MAX_PAGE_SIZE
from imgsearch_search.settings import SearchSettings
from imgsearch_search.store import MilvusStore, StoredRow
from imgsearch_search.validation import MAX_IDS_PER_REQUEST, parse_filter

_EXACT_BLOCK = 512  # rows of one block of similarities (512 x n float32)
DEFAULT_THRESHOLD = DEFAULT_DUPLICATE_THRESHOLD
# The inner product of two equal unit float32 vectors can come out a few 1e-8 under 1.0:
# a threshold is met within this much, so threshold 1 still finds identical embeddings.
ROUNDING = 1e-6
DEFAULT_MAX_NEIGHBORS = 16
MAX_NEIGHBORS = 256


class UnionFind:
    """Disjoint sets of ids (union by size, path halving), with each set's weakest link."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}
        self.weakest: dict[str, float] = {}  # root -> lowest link score inside its set

    def find(self, item: str) -> str:
        parent = self._parent
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    def union(self, a: str, b: str, score: float) -> None:
        root_a, root_b = self.find(a), self.find(b)
        weakest = min(score, self.weakest.get(root_a, math.inf), self.weakest.get(root_b, math.inf))
        if root_a != root_b:
            if self._size.get(root_a, 1) < self._size.get(root_b, 1):
                root_a, root_b = root_b, root_a
            self._parent[root_b] = root_a
            self._size[root_a] = self._size.get(root_a, 1) + self._size.pop(root_b, 1)
            self.weakest.pop(root_b, None)
        self.weakest[root_a] = weakest

    def groups(self) -> dict[str, list[str]]:
        """Sets of two or more ids, by root, each in ascending id order."""
        members: dict[str, list[str]] = {}
        for item in self._parent:
            members.setdefault(self.find(item), []).append(item)
        return {root: sorted(ids) for root, ids in members.items() if len(ids) > 1}


@dataclass
class _Links:
    """What the scan found: the sets, and each item's strongest link."""

    forest: UnionFind = field(default_factory=UnionFind)
    best: dict[str, tuple[float, str]] = field(default_factory=dict)

    def add(self, a: str, b: str, score: float) -> None:
        self.forest.union(a, b, score)
        for one, other in ((a, b), (b, a)):
            if one not in self.best or score > self.best[one][0]:
                self.best[one] = (score, other)


def pairs_above(matrix: np.ndarray, start: int, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity) with i in the block at `start`, j > i, similarity >= threshold.

    `matrix` holds unit rows; one block costs _EXACT_BLOCK x (n - start) dot products.
    """
    block = matrix[start : start + _EXACT_BLOCK]
    similarities = block @ matrix[start:].T  # column c is row start + c
    rows, columns = np.nonzero(similarities >= threshold - ROUNDING)
    keep = columns > rows  # j > i: each pair once, never an item with itself
    rows, columns = rows[keep], columns[keep]
    scores = similarities[rows, columns]
    return [
        (start + int(i), start + int(j), min(float(score), 1.0))
        for i, j, score in zip(rows, columns, scores, strict=True)
    ]


def parse_request(request: search_pb2.FindDuplicatesRequest) -> tuple[float, int, str]:
    """(threshold, max_neighbors, Milvus filter expression); InvalidArgumentError when bad."""
    threshold = request.threshold or DEFAULT_THRESHOLD
    if not math.isfinite(threshold) or not 0.0 < threshold <= 1.0:
        raise InvalidArgumentError(
            f"threshold is {request.threshold}; give a cosine similarity in (0, 1]"
            f" (0 means {DEFAULT_THRESHOLD})"
        )
    neighbors = request.max_neighbors or DEFAULT_MAX_NEIGHBORS
    if neighbors > MAX_NEIGHBORS:
        raise InvalidArgumentError(
            f"max_neighbors is {neighbors}, over the limit of {MAX_NEIGHBORS}"
        )
    label_filter = parse_filter(request.filter)
    return threshold, neighbors, label_filter.milvus_expression() if label_filter else ""


def _progress(done: int, total: int) -> search_pb2.FindDuplicatesResponse:
    return search_pb2.FindDuplicatesResponse(
        progress=search_pb2.DuplicatesProgress(items_done=done, items_total=max(total, done))
    )


class DuplicateFinder:
    """Answers FindDuplicates from the store."""

    def __init__(self, settings: SearchSettings, store: MilvusStore) -> None:
        self._batch_size = settings.duplicates_batch_size
        self._exact_max_items = settings.duplicates_exact_max_items
        self._call_timeout_s = settings.duplicates_call_timeout_s
        self._store = store

    async def find(
        self, request: search_pb2.FindDuplicatesRequest
    ) -> AsyncIterator[search_pb2.FindDuplicatesResponse]:
        """The whole stream: progress per batch, the groups, then the summary."""
        threshold, neighbors, expression = parse_request(request)
        started = time.perf_counter()
        total = await self._store.count_matching(expression, None)
        yield _progress(0, total)
        links = _Links()
        done = 0
        if total <= self._exact_max_items:
            scan = self._exact(expression, threshold, links)
        else:
            scan = self._approximate(expression, threshold, neighbors, links)
        async for done in scan:
            yield _progress(done, total)
        groups = await self._groups(links)
        for group in groups:
            yield search_pb2.FindDuplicatesResponse(group=group)
        yield search_pb2.FindDuplicatesResponse(
            summary=search_pb2.DuplicatesSummary(
                items_scanned=done,
                groups=len(groups),
                items_in_groups=sum(len(group.items) for group in groups),
                elapsed_s=time.perf_counter() - started,
            )
        )

    async def _approximate(
        self, expression: str, threshold: float, neighbors: int, links: _Links
    ) -> AsyncIterator[int]:
        """Links from Milvus searches, a batch of query vectors per call; yields items done."""
        done = 0
        async for batch in self._batches(expression, self._batch_size):
            found = await self._store.neighbours(
                [row.vector or [] for row in batch], neighbors + 1, expression, self._call_timeout_s
            )
            for row, hits in zip(batch, found, strict=True):
                for hit_id, score in hits:
                    if hit_id != row.id and score >= threshold - ROUNDING:
                        links.add(row.id, hit_id, min(score, 1.0))
            done += len(batch)
            yield done

    async def _exact(self, expression: str, threshold: float, links: _Links) -> AsyncIterator[int]:
        """Links from all pairwise similarities (blocked matrix products); yields items done."""
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        async for batch in self._batches(expression, MAX_PAGE_SIZE):
            ids.extend(row.id for row in batch)
            blocks.append(np.asarray([row.vector or [] for row in batch], dtype=np.float32))
        if not ids:
            return
        matrix = np.concatenate(blocks)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        loop = asyncio.get_running_loop()
        for start in range(0, len(ids), _EXACT_BLOCK):
            pairs = await loop.run_in_executor(None, pairs_above, matrix, start, threshold)
            for i, j, score in pairs:
                links.add(ids[i], ids[j], min(score, 1.0))
            yield min(start + _EXACT_BLOCK, len(ids))

    async def _batches(self, expression: str, size: int) -> AsyncIterator[list[StoredRow]]:
        """The matching items with vectors, `size` at a time; the next batch is read ahead."""

        def read(after: str | None) -> asyncio.Task[list[StoredRow]]:
            return asyncio.ensure_future(
                self._store.page(expression, after, size, None, with_vectors=True)
            )

        pending = read(None)
        try:
            while True:
                batch = await pending
                if not batch:
                    return
                pending = read(batch[-1].id) if len(batch) == size else None
                yield batch
                if pending is None:
                    return
        finally:
            if pending is not None and not pending.done():
                pending.cancel()

    async def _groups(self, links: _Links) -> list[search_pb2.DuplicateGroup]:
        """The groups with their members' uris and labels, largest first."""
        sets = links.forest.groups()
        rows = await self._details([item for ids in sets.values() for item in ids])
        groups = []
        for root, ids in sets.items():
            present = [item for item in ids if item in rows]  # deleted meanwhile: left out
            if len(present) < 2:
                continue
            members = [
                search_pb2.DuplicateMember(
                    id=item,
                    uri=rows[item].uri,
                    labels=rows[item].labels,
                    best_score=links.best[item][0],
                    best_match_id=links.best[item][1],
                )
                for item in present
            ]
            groups.append(
                search_pb2.DuplicateGroup(items=members, min_score=links.forest.weakest[root])
            )
        groups.sort(key=lambda group: (-len(group.items), group.items[0].id))
        return groups

    async def _details(self, ids: Sequence[str]) -> dict[str, StoredRow]:
        rows: dict[str, StoredRow] = {}
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            rows.update(
                await self._store.get(ids[start : start + MAX_IDS_PER_REQUEST], False, None)
            )
        return rows
