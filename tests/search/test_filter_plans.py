"""Every filter the language accepts runs on both Milvus back ends; keys follow one rule.

Milvus 2.3 standalone refused a flat chain of 50 `or`s (or 48 `and`ed `!=`
conditions) with UNAVAILABLE; the Milvus Lite server accepted them. These run
the long lists, and combinations whose whole plan is large, through Search on
each back end, and check the exact items each filter selects.
"""

from __future__ import annotations

import grpc
import pytest

from imgsearch.v1 import search_pb2
from tests.search.conftest import SearchUnderTest

pytestmark = pytest.mark.slow

NAMES = ("astronaut", "coffee", "rocket", "moon", "coins", "clock")
# Item i has color c{40*i}, shape s{i} and tag y (even i) or x (odd i).
LABELS = {
    name: {"color": f"c{40 * i}", "shape": f"s{i}", "tag": "x" if i % 2 else "y"}
    for i, name in enumerate(NAMES)
}


def listing(prefix: str, count: int) -> str:
    return "[" + ", ".join(f'"{prefix}{i}"' for i in range(count)) + "]"


async def matching(search: SearchUnderTest, filter_text: str) -> set[str]:
    reply = await search.stub.Search(
        search_pb2.SearchRequest(id="coffee", top_k=50, filter=filter_text), timeout=30
    )
    return {hit.id for hit in reply.hits}


async def test_long_in_lists_and_large_combinations_run_on_every_back_end(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    items = [search_pb2.Item(id=n, image=photos[n], labels=LABELS[n]) for n in NAMES]
    assert (await search.insert(items)).inserted == len(NAMES)
    everything = set(NAMES)
    by_color = {f"c{40 * i}": name for i, name in enumerate(NAMES)}

    for count in (49, 50, 51, 256):
        expected = {name for color, name in by_color.items() if int(color[1:]) < count}
        assert await matching(search, f"color in {listing('c', count)}") == expected, count

    # 256 values over two lists: c0..c127 selects four items, s0..s127 all six.
    two_lists = f"color in {listing('c', 128)} and shape in {listing('s', 128)}"
    assert await matching(search, two_lists) == {by_color[f"c{c}"] for c in (0, 40, 80, 120)}
    # 32 conditions: 31 != on absent labels (all match) and a 225-value list.
    inequalities = " and ".join(f'k{i} != "z"' for i in range(31))
    assert await matching(search, f"{inequalities} and color in {listing('c', 225)}") == everything
    # 32 !=, one of them on a present label.
    with_tag = " and ".join([f'k{i} != "z"' for i in range(31)] + ['tag != "x"'])
    assert await matching(search, with_tag) == {n for n in NAMES if LABELS[n]["tag"] == "y"}

    # Over the whole-filter limit: refused up front, naming the limit, on every back end.
    for too_many in (
        f"color in {listing('c', 129)} and shape in {listing('s', 128)}",
        " and ".join(f"k{i} in {listing('v', 9)}" for i in range(32)),
        f'color in {listing("c", 256)} and tag == "x"',
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await matching(search, too_many)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the limit of 256" in (info.value.details() or "")


async def test_label_keys_follow_one_rule_at_insert_and_in_filters(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    items = [
        search_pb2.Item(id="reserved-in", image=photos["coins"], labels={"in": "x"}),
        search_pb2.Item(id="reserved-AND", image=photos["coins"], labels={"AND": "x"}),
        search_pb2.Item(id="reserved-Or", image=photos["coins"], labels={"ok": "1", "Or": "x"}),
        search_pb2.Item(id="lookalikes", image=photos["clock"],
                        labels={"index": "1", "order": "2", "notes": "3", "_in": "4"}),
    ]  # fmt: skip
    reply = await search.insert(items)
    assert [result.code for result in reply.results] == [invalid] * 3 + [0]
    for result, key in zip(reply.results, ("in", "AND", "Or"), strict=False):
        assert f"key {key!r} is a reserved word of the filter language" in result.message
        assert "].labels" in result.message
    got = await search.stub.Get(search_pb2.GetRequest(ids=[item.id for item in items]))
    assert [stored.id for stored in got.items] == ["lookalikes"]  # refused items not written

    for key in ("in", "AND", "Or", "not"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await search.stub.Search(
                search_pb2.SearchRequest(id="lookalikes", filter=f'{key} == "x"'), timeout=30
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reserved word" in (info.value.details() or "")
    # Every key Insert accepted can be named.
    for key, value in (("index", "1"), ("order", "2"), ("notes", "3"), ("_in", "4")):
        reply = await search.stub.Search(
            search_pb2.SearchRequest(id="lookalikes", filter=f'{key} == "{value}"'), timeout=30
        )
        assert [hit.id for hit in reply.hits] == ["lookalikes"]
