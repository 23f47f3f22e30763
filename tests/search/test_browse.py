"""List: keyset pagination in id order on both Milvus back ends, also under concurrent writes.

Items are seeded straight into the Search service's own store (synthetic unit
vectors, no Embedder), so a thousand items cost a second, not a minute; the
pages are read through the real List RPC over gRPC.
"""

from __future__ import annotations

import asyncio
import io
import random

import grpc
import numpy as np
import pytest
from PIL import Image

from imgsearch.v1 import search_pb2
from imgsearch_search import store as store_module
from tests.search.conftest import SearchUnderTest

pytestmark = pytest.mark.slow


def _ids(count: int, prefix: str, seed: int) -> list[str]:
    """Ids that sort differently as numbers and as text, with slashes, spaces and non-ASCII."""
    rng = random.Random(seed)
    shapes = ["{p}{n}", "{p}/dir/{n}.jpg", "{p} {n}", "{p}-é-{n}", "{p}_日本_{n}"]
    return [
        rng.choice(shapes).format(p=prefix, n=rng.randrange(10**9)) + f"#{i}" for i in range(count)
    ]


def _rows(ids: list[str], dimension: int, model: str, seed: int) -> list[dict]:
    vectors = np.random.default_rng(seed).normal(size=(len(ids), dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        {
            "id": item_id,
            "vector": vector.tolist(),
            "uri": f"file:///seed/{index}",
            "labels": {"parity": "even" if index % 2 == 0 else "odd"},
            "content_sha256": "0" * 64,
            "model": model,
            "thumbnail": "",
        }
        for index, (item_id, vector) in enumerate(zip(ids, vectors, strict=True))
    ]


async def _seed(search: SearchUnderTest, ids: list[str], seed: int) -> None:
    store = search.server.store
    rows = _rows(ids, store.info.dimension, store.info.model, seed)
    for start in range(0, len(rows), 250):
        await store.upsert(rows[start : start + 250], 60)


async def _list_all(
    search: SearchUnderTest, page_size: int, filter: str = "", between_pages=None
) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = await search.stub.List(
            search_pb2.ListRequest(page_size=page_size, page_token=token, filter=filter),
            timeout=60,
        )
        pages.append([item.id for item in reply.items])
        token = reply.next_page_token
        if not token:
            return pages
        assert len(pages) < 10_000, "the listing does not end"
        if between_pages is not None:
            await between_pages()


async def test_list_pages_through_1000_items_once_each_in_id_order(
    search: SearchUnderTest, monkeypatch: pytest.MonkeyPatch
):
    ids = _ids(1000, "item", seed=1)
    await _seed(search, ids[:500], seed=1)
    # Sealed segments as well as growing ones (Milvus standalone keeps them apart).
    await asyncio.to_thread(search.server.store._client.flush, search.server.store.info.name)
    await _seed(search, ids[500:], seed=2)

    pages = await _list_all(search, page_size=97)
    listed = [item_id for page in pages for item_id in page]
    assert listed == sorted(ids)
    assert [len(page) for page in pages] == [97] * 10 + [30]
    # A collection larger than the id sample: pages are bounded by a sample, then exact.
    monkeypatch.setattr(store_module, "PAGE_SAMPLE", 150)
    pages = await _list_all(search, page_size=97)
    assert [item_id for page in pages for item_id in page] == sorted(ids)
    monkeypatch.undo()

    # Exactly a page's worth left: the last page is full and has no token.
    assert [len(page) for page in await _list_all(search, page_size=500)] == [500, 500]
    # Filters apply before pagination.
    odd = await _list_all(search, page_size=100, filter='parity == "odd"')
    assert [i for page in odd for i in page] == sorted(ids[1::2])
    # page_size: 0 is the default 50; above the maximum it is coerced to 1000.
    first = await search.stub.List(search_pb2.ListRequest(), timeout=30)
    assert len(first.items) == 50
    assert first.next_page_token
    everything = await search.stub.List(search_pb2.ListRequest(page_size=5000), timeout=60)
    assert len(everything.items) == 1000
    assert not everything.next_page_token


async def test_list_under_concurrent_inserts_and_deletes(
    search: SearchUnderTest, monkeypatch: pytest.MonkeyPatch
):
    """Items stored throughout come exactly once; nothing comes twice; order holds.

    With a small id sample, so every page takes the two-query path (the test
    above covers the one-query path).
    """
    monkeypatch.setattr(store_module, "PAGE_SAMPLE", 200)
    stable = _ids(1000, "stable", seed=3)
    doomed = _ids(200, "doomed", seed=4)
    await _seed(search, stable + doomed, seed=5)
    newcomers = _ids(300, "new", seed=6)
    writes = {"inserted": 0, "deleted": 0}

    async def write_between_pages() -> None:
        # 30 inserts and 20 deletes between every two pages, through the real paths.
        start = writes["inserted"]
        batch = newcomers[start : start + 30]
        if batch:
            await _seed(search, batch, seed=7 + start)
            writes["inserted"] += len(batch)
        start = writes["deleted"]
        victims = doomed[start : start + 20]
        if victims:
            await search.stub.Delete(search_pb2.DeleteRequest(ids=victims), timeout=60)
            writes["deleted"] += len(victims)

    pages = await _list_all(search, page_size=60, between_pages=write_between_pages)
    listed = [item_id for page in pages for item_id in page]
    assert writes["deleted"] == 200
    assert writes["inserted"] == 300
    assert len(listed) == len(set(listed)), "an item came twice"
    assert listed == sorted(listed), "the order is not stable"
    assert set(stable) <= set(listed), "an item stored throughout was missed"
    assert set(listed) <= set(stable) | set(doomed) | set(newcomers)
    # And once the writes are over, a new listing is exactly what is stored.
    final = [i for page in await _list_all(search, page_size=250) for i in page]
    assert final == sorted(stable + newcomers)


async def test_list_tokens_are_checked_and_thumbnails_come_when_asked(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    names = ["astronaut", "coffee", "rocket"]
    reply = await search.insert(
        [search_pb2.Item(id=name, image=photos[name], labels={"set": "a"}) for name in names]
    )
    assert [r.code for r in reply.results] == [0, 0, 0], reply
    assert [r.message for r in reply.results] == ["", "", ""]

    page = await search.stub.List(
        search_pb2.ListRequest(page_size=2, include_thumbnails=True), timeout=30
    )
    assert [item.id for item in page.items] == ["astronaut", "coffee"]
    for item in page.items:
        assert item.thumbnail_mime_type == "image/webp"
        assert len(item.thumbnail) <= 24 * 1024
        with Image.open(io.BytesIO(item.thumbnail)) as thumb:
            assert thumb.format == "WEBP"
            assert max(thumb.size) == 256
        assert not item.vector
    plain = await search.stub.List(search_pb2.ListRequest(page_size=2), timeout=30)
    assert all(not item.thumbnail for item in plain.items)

    got = await search.stub.Get(
        search_pb2.GetRequest(ids=["rocket"], include_thumbnails=True), timeout=30
    )
    assert got.items[0].thumbnail[:4] == b"RIFF"

    bad_tokens = {
        "not base64 !": "not a token",
        "eyJ2IjogMn0": "not a token",  # {"v": 2}
        page.next_page_token[:-3]: "not a token",
    }
    for token, fragment in bad_tokens.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await search.stub.List(search_pb2.ListRequest(page_token=token), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.stub.List(
            search_pb2.ListRequest(page_token=page.next_page_token, filter='set == "b"'),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "another filter" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.stub.List(search_pb2.ListRequest(filter="set ~ 1"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rest = await search.stub.List(
        search_pb2.ListRequest(page_size=2, page_token=page.next_page_token), timeout=30
    )
    assert [item.id for item in rest.items] == ["rocket"]
    assert rest.next_page_token == ""
