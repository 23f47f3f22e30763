"""FindDuplicates: exactly the groups of a set built with known near-duplicates, with progress.

Real photos through the real Embedder; the near-duplicates are edits a
collection picks up in practice (recompressed, resized, re-encoded, lightly
cropped). The distinct photos of the sample set score well below the
threshold against each other, so any extra group would be a mistake.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from PIL import Image

from imgsearch.v1 import search_pb2
from imgsearch_search.duplicates import UnionFind, pairs_above
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.photos import cropped, jpeg, load_photo, png
from tests.search.conftest import SearchUnderTest

# Below the JPEG q35 copies' similarity to their originals (0.887 for rocket with the
# 512-d multi-layer descriptor), above any two distinct photos'.
THRESHOLD = 0.85
DISTINCT = ("chelsea", "camera", "horse", "moon", "coins", "brick", "clock", "colorwheel")


def _half(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)


def known_set() -> tuple[dict[str, bytes], list[list[str]]]:
    """Images by id, and the groups of near-duplicates among them."""
    images: dict[str, bytes] = {}
    groups: list[list[str]] = []
    for name in ("astronaut", "coffee", "rocket"):
        original = load_photo(name)
        copies = {
            name: jpeg(original),
            f"{name}.q35": jpeg(original, quality=35),
            f"{name}.half.png": png(_half(original)),
            f"{name}.crop95": jpeg(cropped(original, 0.95)),
        }
        images.update(copies)
        groups.append(sorted(copies))
    # An exact copy under another id is a duplicate too.
    images["retina"] = jpeg(load_photo("retina"))
    images["retina-copy"] = images["retina"]
    groups.append(["retina", "retina-copy"])
    for name in DISTINCT:
        images[name] = jpeg(load_photo(name))
    return images, groups


async def _scan(stub, **fields) -> list[search_pb2.FindDuplicatesResponse]:
    return [
        m
        async for m in stub.FindDuplicates(search_pb2.FindDuplicatesRequest(**fields), timeout=120)
    ]


def _check_stream(messages: list[search_pb2.FindDuplicatesResponse], total: int) -> list[list[str]]:
    kinds = [m.WhichOneof("event") for m in messages]
    # progress..., group..., summary: in that order, one summary, last.
    assert kinds == sorted(kinds, key=["progress", "group", "summary"].index)
    assert kinds.count("summary") == 1
    progress = [m.progress for m in messages if m.HasField("progress")]
    assert progress[0].items_done == 0
    assert [p.items_done for p in progress] == sorted(p.items_done for p in progress)
    assert progress[-1].items_done == progress[-1].items_total == total
    groups = [[member.id for member in m.group.items] for m in messages if m.HasField("group")]
    summary = messages[-1].summary
    assert summary.items_scanned == total
    assert summary.groups == len(groups)
    assert summary.items_in_groups == sum(len(g) for g in groups)
    return groups


@pytest.mark.parametrize("exact_max_items", [50_000, 0], ids=["exact", "milvus-neighbours"])
async def test_finds_exactly_the_known_groups(
    search_service_factory: SearchServiceFactory,
    milvus_uri: str,
    redis_url: str,
    embedder_address: str,
    exact_max_items: int,
):
    # A small batch size: several batches, so the read-ahead and paging are exercised.
    server = await search_service_factory(
        milvus_uri=milvus_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        duplicates_batch_size=7,
        duplicates_exact_max_items=exact_max_items,
    )
    channel = grpc.aio.insecure_channel(
        search_address(server), options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    from imgsearch.v1 import search_pb2_grpc

    stub = search_pb2_grpc.SearchStub(channel)
    try:
        images, expected = known_set()
        reply = await stub.Insert(
            search_pb2.InsertRequest(
                items=[
                    search_pb2.Item(
                        id=i, image=data, uri=f"file:///{i}", labels={"half": i.split(".")[0]}
                    )
                    for i, data in images.items()
                ]
            ),
            timeout=180,
        )
        assert [r.code for r in reply.results] == [0] * len(images), reply

        messages = await _scan(stub, threshold=THRESHOLD)
        groups = _check_stream(messages, total=len(images))
        # Largest first, then by first id; members in id order.
        assert groups == sorted(expected, key=lambda g: (-len(g), g[0]))
        for message in messages:
            if message.HasField("group"):
                group = message.group
                assert THRESHOLD <= group.min_score <= 1.0
                ids = {member.id for member in group.items}
                for member in group.items:
                    assert member.best_match_id in ids - {member.id}
                    assert group.min_score <= member.best_score <= 1.0
                    assert member.uri == f"file:///{member.id}"
        exact = [
            m.group for m in messages if m.HasField("group") and m.group.items[0].id == "retina"
        ]
        assert exact[0].min_score == pytest.approx(1.0, abs=1e-4)

        # A filter scans and links only the matching items.
        filtered = await _scan(stub, threshold=THRESHOLD, filter='half in ["coffee", "chelsea"]')
        assert _check_stream(filtered, total=5) == [
            sorted(i for i in images if i.startswith("coffee"))
        ]
        # Threshold 1: identical embeddings only.
        assert _check_stream(await _scan(stub, threshold=1.0), len(images)) == [
            ["retina", "retina-copy"]
        ]
    finally:
        await channel.close()


async def test_bad_requests_and_an_empty_collection(search: SearchUnderTest):
    for fields, fragment in (
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"max_neighbors": 10_000}, "max_neighbors"),
        ({"filter": "kind ~ 1"}, "filter"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _scan(search.stub, **fields)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert fragment in info.value.details()
    messages = await _scan(search.stub)
    assert _check_stream(messages, total=0) == []


def test_union_find_joins_chains_and_keeps_the_weakest_link():
    forest = UnionFind()
    forest.union("a", "b", 0.99)
    forest.union("c", "d", 0.95)
    forest.union("b", "c", 0.91)  # joins the two pairs through a weaker link
    forest.union("x", "y", 0.97)
    forest.union("a", "d", 0.93)  # already joined: only the weakest link may change
    groups = forest.groups()
    assert sorted(groups.values()) == [["a", "b", "c", "d"], ["x", "y"]]
    weakest = {tuple(ids): forest.weakest[root] for root, ids in groups.items()}
    assert weakest == {("a", "b", "c", "d"): 0.91, ("x", "y"): 0.97}
    many = UnionFind()
    for index in range(1, 10_000):
        many.union(str(index - 1), str(index), 0.96)
    assert [len(ids) for ids in many.groups().values()] == [10_000]


def test_exact_pairs_match_brute_force_across_blocks():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(1100, 16)).astype(np.float32)
    matrix[700] = matrix[5] + 0.01  # near-duplicates in different blocks
    matrix[1099] = matrix[5]
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    threshold = 0.8
    found = {
        (i, j) for start in range(0, 1100, 512) for i, j, _ in pairs_above(matrix, start, threshold)
    }
    similarities = matrix @ matrix.T
    expected = {
        (i, j) for i in range(1100) for j in range(i + 1, 1100) if similarities[i, j] >= threshold
    }
    assert found == expected
    assert {(5, 700), (5, 1099), (700, 1099)} <= found
