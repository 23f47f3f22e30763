"""Query views end to end: real Embedder (its inset and straightening detectors), real Redis,
each Milvus back end in turn, real gRPC.

A screenshot holding a stored photo pasted small, and a rotated copy of one with its
canvas grown, must find the photo first, through the view that says so
(`Hit.matched_view`); the photo itself is found by the whole image; a Search with
SEARCH_QUERY_VIEWS=false asks for no views (no hit says a view found it) and does not
share cached results with one that asks for them.
"""

from __future__ import annotations

import grpc
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.photos import jpeg, load_photo, rotated, screenshot
from tests.search.conftest import SearchUnderTest

pytestmark = pytest.mark.slow

STORED = ("astronaut", "coffee", "rocket", "chelsea")


async def insert_stored(search: SearchUnderTest) -> None:
    items = [search_pb2.Item(id=name, image=jpeg(load_photo(name))) for name in STORED]
    response = await search.insert(items)
    assert [result.code for result in response.results] == [0] * len(STORED), response


async def test_a_screenshot_and_a_rotated_copy_are_found_through_their_views(
    search: SearchUnderTest,
) -> None:
    await insert_stored(search)
    pasted = await search.stub.Search(
        search_pb2.SearchRequest(image=screenshot("astronaut"), top_k=3), timeout=60
    )
    assert pasted.hits[0].id == "astronaut", pasted
    assert pasted.hits[0].matched_view == "inset"

    turned = await search.stub.Search(
        search_pb2.SearchRequest(image=rotated("coffee"), top_k=3), timeout=60
    )
    assert turned.hits[0].id == "coffee", turned
    assert turned.hits[0].matched_view == "straightened"

    itself = await search.stub.Search(
        search_pb2.SearchRequest(image=jpeg(load_photo("rocket")), top_k=3), timeout=60
    )
    assert itself.hits[0].id == "rocket"
    assert itself.hits[0].matched_view == ""
    assert itself.hits[0].score == pytest.approx(1.0, abs=1e-3)
    # Operators see how often each view finds the first hit.
    registry = search.server.registry
    for view in ("inset", "straightened", "whole"):
        assert registry.get_sample_value("search_top_hit_views_total", {"view": view}) == 1.0
    # Every list is best first, each item once.
    for response in (pasted, turned, itself):
        scores = [hit.score for hit in response.hits]
        assert scores == sorted(scores, reverse=True)
        assert len({hit.id for hit in response.hits}) == len(response.hits)


async def test_without_query_views_no_view_is_asked_for_and_results_are_not_shared(
    search: SearchUnderTest,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
) -> None:
    await insert_stored(search)
    plain = await search_service_factory(
        milvus_uri=search.milvus_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        collection=search.server.settings.collection,
        query_views=False,
    )
    query = search_pb2.SearchRequest(image=screenshot("astronaut"), top_k=4)
    with_views = await search.stub.Search(query, timeout=60)
    assert with_views.hits[0].matched_view == "inset"
    async with grpc.aio.insecure_channel(search_address(plain)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        # The same query: another result key (not the views Search's cached result).
        same = await stub.Search(query, timeout=60)
        assert not same.cached
        assert [hit.matched_view for hit in same.hits] == [""] * len(same.hits)
        # Other bytes, so no cached embedding can answer: the Embedder is asked, without
        # query_views, and no hit says a view found it.
        fresh = await stub.Search(
            search_pb2.SearchRequest(image=screenshot("astronaut", quality=80), top_k=4),
            timeout=60,
        )
        assert not fresh.cached
        assert fresh.hits
        assert [hit.matched_view for hit in fresh.hits] == [""] * len(fresh.hits)
    # The views Search still serves its own cached result, views and all.
    again = await search.stub.Search(query, timeout=60)
    assert again.cached
    assert again.hits[0].matched_view == "inset"
