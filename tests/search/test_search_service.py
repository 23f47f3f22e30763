"""The Search service end to end: real Embedder, Redis and Milvus (each back end in turn).

Every test here runs twice, once on the `milvus-lite server` and once on the
Milvus 2.3 standalone server, through real gRPC on loopback.
"""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.embedder import default_embedding_dimension
from tests.fixtures.photos import corrupt, cropped, jpeg, load_photo, png
from tests.search.conftest import SearchUnderTest

DIMENSION = default_embedding_dimension()

pytestmark = pytest.mark.slow


def item(item_id: str, image: bytes, **labels: str) -> search_pb2.Item:
    return search_pb2.Item(id=item_id, image=image, uri=f"file:///photos/{item_id}", labels=labels)


async def insert_all(search: SearchUnderTest, photos: dict[str, bytes], **labels: str) -> None:
    response = await search.insert([item(name, data, **labels) for name, data in photos.items()])
    assert [r.code for r in response.results] == [0] * len(photos), response
    assert response.inserted == len(photos)


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()
    return info.value.details() or ""


async def test_health_is_serving_and_stats_describe_the_collection(search: SearchUnderTest):
    health = health_pb2_grpc.HealthStub(search.channel)
    for service in ("", "imgsearch.v1.Search"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stats = await search.stub.Stats(search_pb2.StatsRequest(), timeout=10)
    assert stats.item_count == 0
    assert stats.dimension == DIMENSION
    assert stats.model.startswith("efficientnet_lite0")
    assert stats.index_type
    assert stats.metric_type in ("COSINE", "IP")
    assert stats.collection == search.server.settings.collection
    assert stats.cache_available


async def test_inserted_photo_is_found_first_and_so_are_its_edited_copies(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    await insert_all(search, photos)
    assert await search.count() == len(photos)

    exact = await search.stub.Search(search_pb2.SearchRequest(image=photos["astronaut"], top_k=5))
    assert exact.hits[0].id == "astronaut"
    assert exact.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert exact.hits[0].uri == "file:///photos/astronaut"
    scores = [hit.score for hit in exact.hits]
    assert scores == sorted(scores, reverse=True)
    assert len(exact.hits) == 5

    for name in ("astronaut", "coffee", "rocket"):
        original = load_photo(name)
        edits = {
            "crop 80%": jpeg(cropped(original, 0.8)),
            "recompressed q=35": jpeg(original, quality=35),
            "half size png": png(original.resize((original.width // 2, original.height // 2))),
        }
        for edit, data in edits.items():
            reply = await search.stub.Search(search_pb2.SearchRequest(image=data, top_k=3))
            assert reply.hits[0].id == name, (edit, [(h.id, h.score) for h in reply.hits])
            assert reply.hits[0].score > reply.hits[1].score


async def test_search_by_id_vector_min_score_and_top_k(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    await insert_all(search, photos)
    by_id = await search.stub.Search(search_pb2.SearchRequest(id="coffee", top_k=4))
    assert by_id.hits[0].id == "coffee"
    assert by_id.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(by_id.hits) == 4
    assert len({hit.id for hit in by_id.hits}) == 4

    got = await search.stub.Get(search_pb2.GetRequest(ids=["rocket"], include_vectors=True))
    vector = list(got.items[0].vector)
    assert len(vector) == DIMENSION
    scaled = [value * 3.0 for value in vector]  # the server normalises query vectors
    by_vector = await search.stub.Search(
        search_pb2.SearchRequest(vector=search_pb2.Vector(values=scaled), top_k=len(photos))
    )
    assert by_vector.hits[0].id == "rocket"
    assert len(by_vector.hits) == len(photos)

    threshold = by_vector.hits[3].score
    above = await search.stub.Search(
        search_pb2.SearchRequest(
            vector=search_pb2.Vector(values=vector), top_k=len(photos), min_score=threshold
        )
    )
    assert [hit.id for hit in above.hits] == [hit.id for hit in by_vector.hits[:4]]
    assert all(hit.score >= threshold for hit in above.hits)

    default = await search.stub.Search(search_pb2.SearchRequest(id="rocket"))
    assert len(default.hits) == 10  # top_k 0 means 10


async def test_bad_queries_get_clear_statuses(search: SearchUnderTest, photos: dict[str, bytes]):
    await insert_all(search, {"clock": photos["clock"]})
    stub = search.stub
    code = grpc.StatusCode
    await expect_error(
        stub.Search(search_pb2.SearchRequest(id="clock", top_k=1001)),
        code.INVALID_ARGUMENT,
        "top_k",
    )
    await expect_error(
        stub.Search(search_pb2.SearchRequest(id="no-such-item")), code.NOT_FOUND, "no-such-item"
    )
    await expect_error(stub.Search(search_pb2.SearchRequest()), code.INVALID_ARGUMENT, "query")
    await expect_error(
        stub.Search(search_pb2.SearchRequest(image=b"this is not an image")),
        code.INVALID_ARGUMENT,
        "image",
    )
    await expect_error(
        stub.Search(search_pb2.SearchRequest(vector=search_pb2.Vector(values=[0.1] * 7))),
        code.INVALID_ARGUMENT,
        str(DIMENSION),
    )
    await expect_error(
        stub.Search(search_pb2.SearchRequest(vector=search_pb2.Vector(values=[0.0] * DIMENSION))),
        code.INVALID_ARGUMENT,
        "zero",
    )
    for bad_filter in (
        'kind = "x"',
        'kind == "x" or kind == "y"',
        "kind == x",
        'labels["kind"] == "x"',
        'kind == "x" and',
        'id == "clock") or (id != "',
        'kind in ["a", ]',
        'kind == "x\\"',
    ):
        await expect_error(
            stub.Search(search_pb2.SearchRequest(id="clock", filter=bad_filter)),
            code.INVALID_ARGUMENT,
            "filter",
        )
    await expect_error(stub.Insert(search_pb2.InsertRequest()), code.INVALID_ARGUMENT, "items")
    await expect_error(stub.Get(search_pb2.GetRequest()), code.INVALID_ARGUMENT, "ids")
    await expect_error(stub.Delete(search_pb2.DeleteRequest()), code.INVALID_ARGUMENT, "ids")


async def test_filters_on_labels(search: SearchUnderTest, photos: dict[str, bytes]):
    kinds = {
        "astronaut": {"kind": "photo", "color": "yes"},
        "coffee": {"kind": "photo", "color": "yes"},
        "rocket": {"kind": "photo", "color": "yes"},
        "camera": {"kind": "photo", "color": "no"},
        "page": {"kind": "scan", "color": "no", "note": 'say "hi" \\ bye'},
        "text": {"kind": "scan"},  # no color label
        "coins": {"kind": "object", "color": "no"},
    }
    await search.insert([item(name, photos[name], **labels) for name, labels in kinds.items()])

    async def ids(filter_text: str) -> set[str]:
        reply = await search.stub.Search(
            search_pb2.SearchRequest(id="astronaut", top_k=50, filter=filter_text)
        )
        for hit in reply.hits:
            assert dict(hit.labels) == kinds[hit.id]
        return {hit.id for hit in reply.hits}

    everything = set(kinds)
    assert await ids("") == everything
    assert await ids('kind == "photo"') == {"astronaut", "coffee", "rocket", "camera"}
    assert await ids('kind == "photo" and color == "yes"') == {"astronaut", "coffee", "rocket"}
    assert await ids('kind in ["scan", "object"]') == {"page", "text", "coins"}
    # != also matches items that do not have the label at all.
    assert await ids('color != "yes"') == {"camera", "page", "text", "coins"}
    assert await ids('kind != "photo" and color in ["no"]') == {"page", "coins"}
    assert await ids('note == "say \\"hi\\" \\\\ bye"') == {"page"}
    assert await ids('kind == "photo\\" or kind != \\"x"') == set()  # quotes stay inside
    assert await ids('kind == "nothing"') == set()
    # The query item itself is left out when the filter excludes it.
    reply = await search.stub.Search(
        search_pb2.SearchRequest(id="astronaut", top_k=50, filter='kind == "scan"')
    )
    assert {hit.id for hit in reply.hits} == {"page", "text"}


async def test_repeated_query_is_cached_and_insert_invalidates_it(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    first_batch = {name: photos[name] for name in ("astronaut", "coffee", "rocket", "moon")}
    await insert_all(search, first_batch)
    query = search_pb2.SearchRequest(image=photos["chelsea"], top_k=5)

    first = await search.stub.Search(query)
    assert not first.cached
    second = await search.stub.Search(query)
    assert second.cached
    assert list(second.hits) == list(first.hits)
    stats = await search.stub.Stats(search_pb2.StatsRequest())
    assert stats.cache_hits >= 1
    assert stats.cache_misses >= 1

    # Another filter, top_k or min_score is another query.
    other = await search.stub.Search(search_pb2.SearchRequest(image=photos["chelsea"], top_k=4))
    assert not other.cached

    await insert_all(search, {"chelsea": photos["chelsea"]})
    after_insert = await search.stub.Search(query)
    assert not after_insert.cached
    assert after_insert.hits[0].id == "chelsea"
    assert (await search.stub.Search(query)).cached


async def test_delete_removes_items_from_results_and_cached_results(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    await insert_all(search, photos)
    query = search_pb2.SearchRequest(image=photos["coins"], top_k=5)
    before = await search.stub.Search(query)
    assert before.hits[0].id == "coins"
    assert (await search.stub.Search(query)).cached

    deleted = await search.stub.Delete(search_pb2.DeleteRequest(ids=["coins", "not-there"]))
    assert deleted.deleted == 1
    after = await search.stub.Search(query)
    assert not after.cached
    assert "coins" not in {hit.id for hit in after.hits}
    assert len(after.hits) == 5
    got = await search.stub.Get(search_pb2.GetRequest(ids=["coins", "coffee"]))
    assert list(got.missing_ids) == ["coins"]
    assert [stored.id for stored in got.items] == ["coffee"]
    await expect_error(
        search.stub.Search(search_pb2.SearchRequest(id="coins")), grpc.StatusCode.NOT_FOUND
    )
    assert await search.count() == len(photos) - 1
    again = await search.stub.Delete(search_pb2.DeleteRequest(ids=["coins"]))
    assert again.deleted == 0


async def test_reinserting_the_same_ids_replaces_and_never_duplicates(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    await insert_all(search, photos)
    await insert_all(search, photos, version="2")
    assert await search.count() == len(photos)
    got = await search.stub.Get(search_pb2.GetRequest(ids=["astronaut"]))
    assert dict(got.items[0].labels) == {"version": "2"}

    # An empty id becomes the SHA-256 of the image, so the same bytes share one item.
    anonymous = [search_pb2.Item(image=photos["horse"]), search_pb2.Item(image=photos["brick"])]
    first = await search.insert(anonymous)
    second = await search.insert(anonymous)
    assert [r.id for r in first.results] == [r.id for r in second.results]
    assert all(len(r.id) == 64 for r in first.results)
    assert await search.count() == len(photos) + 2
    reply = await search.stub.Search(search_pb2.SearchRequest(image=photos["horse"], top_k=3))
    assert [hit.id for hit in reply.hits].count(first.results[0].id) == 1


async def test_one_corrupt_image_fails_alone(search: SearchUnderTest, photos: dict[str, bytes]):
    truncated_png = png(load_photo("rocket"))[:200]
    items = [
        item("good-1", photos["astronaut"]),
        item("bad-truncated", corrupt(photos["coffee"])),
        item("good-2", photos["moon"]),
        item("bad-text", b"definitely not an image"),
        item("bad-png", truncated_png),
        item("good-3", photos["grass"]),
        item("bad-empty", b""),
        item("good-4", photos["clock"]),
    ]
    response = await search.insert(items)
    codes = {result.id: result.code for result in response.results}
    assert [result.id for result in response.results] == [i.id for i in items]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert codes == {
        "good-1": 0,
        "bad-truncated": invalid,
        "good-2": 0,
        "bad-text": invalid,
        "bad-png": invalid,
        "good-3": 0,
        "bad-empty": invalid,
        "good-4": 0,
    }
    for result in response.results:
        assert bool(result.message) == (result.code != 0)
    bad = next(r for r in response.results if r.id == "bad-text")
    assert "items[3]" in bad.message
    assert response.inserted == 4
    got = await search.stub.Get(
        search_pb2.GetRequest(ids=[i.id for i in items if i.id.startswith("bad")])
    )
    assert not got.items  # a failed item is never written
    assert await search.count() == 4

    labelled = await search.insert(
        [
            search_pb2.Item(id="bad-key", image=photos["coins"], labels={"no spaces": "x"}),
            item("good-5", photos["coins"]),
        ]
    )
    assert [r.code for r in labelled.results] == [invalid, 0]
    assert "labels" in labelled.results[0].message


async def test_concurrent_inserts_and_searches_end_with_the_exact_count(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    # 8 writers insert 6 items each (48 distinct ids), some ids written twice by
    # two writers; searches run all the while.
    names = list(photos)
    base = Image.open(io.BytesIO(photos["astronaut"]))

    def variant(index: int) -> bytes:
        return jpeg(base.rotate(index * 7, expand=False), quality=80)

    writers = [
        [item(f"w{w}-{k}", photos[names[(w * 6 + k) % len(names)]]) for k in range(5)]
        + [item(f"shared-{w % 4}", variant(w))]
        for w in range(8)
    ]

    async def write(items: list[search_pb2.Item]) -> int:
        response = await search.insert(items)
        assert all(result.code == 0 for result in response.results), response
        return response.inserted

    async def read(round_index: int) -> None:
        reply = await search.stub.Search(
            search_pb2.SearchRequest(image=photos[names[round_index % len(names)]], top_k=5)
        )
        assert len(reply.hits) <= 5

    results = await asyncio.gather(
        *(write(items) for items in writers), *(read(i) for i in range(16))
    )
    assert sum(r for r in results if isinstance(r, int)) == 48
    assert await search.count() == 8 * 5 + 4


async def test_searches_survive_a_redis_outage_and_use_redis_again_after(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    await insert_all(search, {n: photos[n] for n in ("astronaut", "coffee", "rocket")})
    query = search_pb2.SearchRequest(image=photos["coffee"], top_k=3)
    assert not (await search.stub.Search(query)).cached
    assert (await search.stub.Search(query)).cached

    search.redis.kill()
    for _ in range(3):
        reply = await search.stub.Search(query, timeout=10)
        assert reply.hits[0].id == "coffee"
        assert not reply.cached
    # Writes work too, and must not leave stale results behind once Redis is back.
    await insert_all(search, {"moon": photos["moon"]})
    stats = await search.stub.Stats(search_pb2.StatsRequest())
    assert not stats.cache_available
    assert stats.item_count == 4

    search.redis.restart()
    settings = search.server.settings
    deadline = asyncio.get_running_loop().time() + settings.redis_retry_after_s + 10
    while True:
        first = await search.stub.Search(query)
        second = await search.stub.Search(query)
        if second.cached:
            break
        assert asyncio.get_running_loop().time() < deadline, "the cache never came back"
        await asyncio.sleep(0.2)
    assert second.hits[0].id == "coffee"
    assert list(second.hits) == list(first.hits)
    assert (await search.stub.Stats(search_pb2.StatsRequest())).cache_available


async def test_limits_stored_vectors_metrics_and_reflection(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    limit = search.server.settings.max_insert_items
    too_many = [item(f"x{i}", photos["clock"]) for i in range(limit + 1)]
    await expect_error(search.insert(too_many), grpc.StatusCode.INVALID_ARGUMENT, str(limit))
    assert await search.count() == 0  # refused as a whole: nothing written

    await insert_all(search, photos)
    got = await search.stub.Get(search_pb2.GetRequest(ids=["moon", "grass"], include_vectors=True))
    for stored in got.items:
        assert stored.model == (await search.stub.Stats(search_pb2.StatsRequest())).model
        assert len(stored.content_sha256) == 64
        assert np.linalg.norm(np.asarray(stored.vector)) == pytest.approx(1.0, abs=1e-4)
    everything = await search.stub.Search(search_pb2.SearchRequest(id="moon", top_k=1000))
    assert len(everything.hits) == len(photos)

    query = search_pb2.SearchRequest(image=photos["grass"], top_k=3)
    await search.stub.Search(query)
    await search.stub.Search(query)
    port = search.server.metrics_server.port
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    text = body.decode()
    assert 'search_cache_lookups_total{kind="result",outcome="hit"}' in text
    assert 'grpc_server_handled_total{code="OK",method="/imgsearch.v1.Search/Search"}' in text

    reflection = reflection_pb2_grpc.ServerReflectionStub(search.channel)

    async def list_services() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in reflection.ServerReflectionInfo(list_services()):
        names = {service.name for service in reply.list_services_response.service}
        assert "imgsearch.v1.Search" in names
        assert "grpc.health.v1.Health" in names
        break


async def test_ids_and_labels_with_quotes_backslashes_and_unicode_round_trip(
    search: SearchUnderTest, photos: dict[str, bytes]
):
    awkward = {
        'say "cheese"': photos["astronaut"],
        "back\\slash\\": photos["coffee"],
        "it's ] or id != 'x": photos["rocket"],
        "café ☕ 東京": photos["moon"],
        "x" * 512: photos["coins"],
    }
    labels = {"place": 'Zürich "old town" \\ ☕'}
    response = await search.insert(
        [search_pb2.Item(id=key, image=data, labels=labels) for key, data in awkward.items()]
        + [search_pb2.Item(id="y" * 513, image=photos["clock"])]
    )
    assert [r.code for r in response.results] == [0] * 5 + [3]
    assert "512" in response.results[-1].message

    got = await search.stub.Get(search_pb2.GetRequest(ids=[*awkward, "missing"]))
    assert [stored.id for stored in got.items] == list(awkward)
    assert all(dict(stored.labels) == labels for stored in got.items)
    assert list(got.missing_ids) == ["missing"]

    for key in awkward:
        reply = await search.stub.Search(search_pb2.SearchRequest(id=key, top_k=2))
        assert reply.hits[0].id == key
    matching = await search.stub.Search(
        search_pb2.SearchRequest(
            id="café ☕ 東京", top_k=10, filter='place == "Zürich \\"old town\\" \\\\ ☕"'
        )
    )
    assert {hit.id for hit in matching.hits} == set(awkward)

    deleted = await search.stub.Delete(
        search_pb2.DeleteRequest(ids=['say "cheese"', "it's ] or id != 'x"])
    )
    assert deleted.deleted == 2
    assert await search.count() == 3  # nothing else was deleted


async def test_the_default_embedded_milvus_lite_keeps_items_across_restarts(
    tmp_path: Path,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    photos: dict[str, bytes],
):
    """The shipped default: a local path, Milvus Lite inside the service's process."""
    uri = str(tmp_path / "not-yet-created" / "milvus.db")
    names = ("astronaut", "coffee", "rocket")
    first = await search_service_factory(
        milvus_uri=uri, redis_url=redis_url, embedder_address=embedder_address, collection="images"
    )
    async with grpc.aio.insecure_channel(search_address(first)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        reply = await stub.Insert(
            search_pb2.InsertRequest(items=[item(name, photos[name]) for name in names])
        )
        assert reply.inserted == 3
    await first.stop(drain_delay_s=0, grace_s=1)

    # A new process on the same path finds the collection (released on disk) and serves it.
    second = await search_service_factory(
        milvus_uri=uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        collection="images",
        cache_enabled=False,
    )
    async with grpc.aio.insecure_channel(search_address(second)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        assert (await stub.Stats(search_pb2.StatsRequest())).item_count == 3
        found = await stub.Search(search_pb2.SearchRequest(image=photos["coffee"], top_k=3))
        assert found.hits[0].id == "coffee"
        assert {hit.id for hit in found.hits} == set(names)
