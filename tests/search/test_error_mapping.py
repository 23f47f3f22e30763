"""Failures of the Embedder and of Milvus become statuses by cause; only retriable ones are retried.

- `milvus_error` is checked on the exception objects pymilvus itself raises
  (built from server statuses as pymilvus builds them, and real transport
  errors), then on real input and internal errors of both Milvus back ends
  through the store.
- The Embedder side runs Search against a stand-in Embedder (a real gRPC server
  on loopback): the real Embedder cannot be made to answer INTERNAL or
  UNIMPLEMENTED on demand, which is what these tests are about.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry
from pymilvus.exceptions import DataNotMatchException, MilvusException, ParamError
from pymilvus.grpc_gen import common_pb2

from imgsearch.common.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    ImgsearchError,
    InternalError,
    InvalidArgumentError,
    RequestTooLargeError,
    ResourceExhaustedError,
    UnavailableError,
)
from imgsearch.common.grpc_runtime import HealthState
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc
from imgsearch_search.cache import _parse_embedding
from imgsearch_search.embedder_client import (
    MAX_QUERY_VIEWS,
    Deadline,
    EmbedderClient,
    checked_query_embedding,
)
from imgsearch_search.metrics import DependencyMetrics
from imgsearch_search.milvus_errors import milvus_error
from imgsearch_search.settings import SearchSettings
from imgsearch_search.store import MilvusStore
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.processes import free_port
from tests.fixtures.waiting import eventually


def server_status(code: int, legacy: int = 0, **extra: object) -> MilvusException:
    """The exception pymilvus raises for a failed server Status (its `check_status` path)."""
    status = common_pb2.Status(code=code, error_code=legacy, reason=f"reason {code}", **extra)
    return MilvusException.from_status(status)


def transport_error(code: grpc.StatusCode) -> grpc.RpcError:
    """A real failed gRPC call of the sync stack pymilvus uses."""
    port = free_port()  # nothing listens: UNAVAILABLE, or DEADLINE_EXCEEDED while waiting
    waits = code == grpc.StatusCode.DEADLINE_EXCEEDED
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary("/x.Y/Z")(b"", timeout=0.001 if waits else 5, wait_for_ready=waits)
    error = info.value
    assert error.code() == code  # type: ignore[attr-defined]
    return error


MILVUS_CASES: list[tuple[str, BaseException, type[ImgsearchError]]] = [
    # Input errors: the server's flag, its codes (2.3: 1100, Lite: 6), pymilvus' own checks.
    ("is_input_error", server_status(65535, extra_info={"is_input_error": "true"}),
     InvalidArgumentError),
    ("parameter invalid (2.3)", server_status(1100, 5), InvalidArgumentError),
    ("illegal argument (Lite)", server_status(6, 6), InvalidArgumentError),
    ("parameter too large", server_status(1102), InvalidArgumentError),
    ("client-side ParamError", ParamError(message="bad"), InvalidArgumentError),
    ("client-side schema mismatch", DataNotMatchException(message="bad row"),
     InvalidArgumentError),
    # Load shed or quota: retry later.
    ("rate limit", server_status(8, 49), ResourceExhaustedError),
    ("memory quota (legacy)", server_status(0, 53), ResourceExhaustedError),
    ("request limit", server_status(4), ResourceExhaustedError),
    # Cannot serve now: retriable.
    ("retriable flag", server_status(65535, retriable=True), UnavailableError),
    ("service unavailable", server_status(2), UnavailableError),
    ("collection not loaded (restart)", server_status(101, 101), UnavailableError),
    ("channel not available", server_status(503), UnavailableError),
    ("node not found", server_status(901), UnavailableError),
    ("legacy not ready", server_status(0, 56), UnavailableError),
    ("pymilvus retries ran out", MilvusException(grpc.StatusCode.UNAVAILABLE, "Retry timeout"),
     UnavailableError),
    ("transport unavailable", transport_error(grpc.StatusCode.UNAVAILABLE), UnavailableError),
    # Timeouts.
    ("transport deadline", transport_error(grpc.StatusCode.DEADLINE_EXCEEDED),
     DeadlineExceededError),
    ("Milvus timeout code", server_status(10001), DeadlineExceededError),
    # Not retriable: gone, refused, internal.
    ("collection dropped", server_status(100, 4), FailedPreconditionError),
    ("database dropped", server_status(800), FailedPreconditionError),
    ("credentials refused", server_status(1401), FailedPreconditionError),
    ("unimplemented", server_status(10), FailedPreconditionError),
    ("plan a query node cannot run (2.3)", server_status(65535, 1), InternalError),
    ("segcore error", server_status(2000), InternalError),
    ("Lite unexpected error", server_status(1, 0), InternalError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "expected"),
    [case[1:] for case in MILVUS_CASES],
    ids=[case[0] for case in MILVUS_CASES],
)
def test_milvus_failures_are_classified_by_cause(
    error: BaseException, expected: type[ImgsearchError]
) -> None:
    translated = milvus_error("Milvus at x", "the search", error)
    assert type(translated) is expected, translated.message
    assert translated.message.startswith("Milvus at x")
    # Only what a retry can fix is retriable, so clients retry only that.
    retriable = expected in (UnavailableError, ResourceExhaustedError)
    assert translated.retriable is retriable


# --- real back ends -------------------------------------------------------------------------


@pytest.fixture
async def store(milvus_uri: str) -> AsyncIterator[MilvusStore]:
    settings = SearchSettings(
        milvus_uri=milvus_uri, collection=f"t_{uuid.uuid4().hex[:16]}", milvus_timeout_s=10
    )
    opened = MilvusStore(settings, DependencyMetrics(CollectorRegistry()))
    await opened.connect()
    await opened.ensure_collection("test-model", "f" * 64, 8)
    try:
        yield opened
    finally:
        await opened.close()


def row(item_id: str) -> dict[str, object]:
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    return {"id": item_id, "vector": vector.tolist(), "uri": "", "labels": {},
            "content_sha256": "0" * 64, "model": "test-model", "thumbnail": ""}  # fmt: skip


@pytest.mark.slow
async def test_real_milvus_errors_are_not_unavailable(store: MilvusStore) -> None:
    await store.upsert([row("ok")], 10)
    # An id over the schema's length (Search validates ids before, so here on purpose).
    with pytest.raises(InvalidArgumentError) as too_long:
        await store.upsert([row("x" * 600)], 10)
    assert "Milvus" in too_long.value.message
    # A query vector of the wrong dimension: Milvus fails it, retrying would too.
    with pytest.raises((InvalidArgumentError, InternalError)):
        await store.search([0.5] * 3, 5, "", 10)
    assert [hit.id for hit in await store.search([1.0] * 8, 5, "", 10)] == ["ok"]

    client = store._require_client()
    client.drop_collection(store._require_info().name)
    with pytest.raises(FailedPreconditionError) as gone:
        await store.search([1.0] * 8, 5, "", 10)
    assert "restart Search" in gone.value.message


# --- the Embedder ---------------------------------------------------------------------------

MODEL, DIMENSION = "stand-in-model", 8
FINGERPRINT = "f" * 64
POISON = b"poison"


class StandInEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """Answers Embed with unit vectors, or fails with `code`: on every call, or on POISON."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.final = False  # send a negative retry pushback: "do not retry"
        self.calls = 0
        self.images = 0  # images received in Embed calls
        self.views: list[embedder_pb2.View] = []  # views returned with every embedding
        self.nan_for: bytes | None = None  # an image whose vector comes back all NaN
        self.asked_views: list[bool] = []  # EmbedRequest.query_views of each call
        # GetModelResponse.query_views: fresh, so no other test's cached views apply.
        self.detectors = f"stand-in-{uuid.uuid4().hex}"

    async def GetModel(self, request, context):
        return embedder_pb2.GetModelResponse(
            model=MODEL, fingerprint=FINGERPRINT, dimension=DIMENSION,
            max_images_per_request=16, max_request_bytes=1 << 20, query_views=self.detectors,
        )  # fmt: skip

    async def Embed(self, request, context):
        self.calls += 1
        self.images += len(request.images)
        self.asked_views.append(request.query_views)
        if self.code is not None and (
            POISON in request.images or self.code != grpc.StatusCode.INTERNAL
        ):
            pushback = (("grpc-retry-pushback-ms", "-1"),) if self.final else ()
            await context.abort(
                self.code, f"stand-in failure {self.code.name}", trailing_metadata=pushback
            )
        rng = np.random.default_rng(len(request.images))
        embeddings = []
        for image in request.images:
            vector = rng.normal(size=DIMENSION) + len(image)
            if image == self.nan_for:
                vector[:] = np.nan
            embeddings.append(
                embedder_pb2.Embedding(
                    vector=(vector / np.linalg.norm(vector)).tolist(), views=self.views
                )
            )
        return embedder_pb2.EmbedResponse(
            embeddings=embeddings,
            model=MODEL,
            fingerprint=FINGERPRINT,
            query_views=self.detectors if request.query_views else "",
        )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandInEmbedder, str]]:
    servicer = StandInEmbedder()
    server = grpc.aio.server()
    embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, server)
    # Health SERVING, as a real Embedder's: Search's health monitor probes it, then GetModel.
    health_state = HealthState(["imgsearch.v1.Embedder"])
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_state.set_serving(True)
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


class StandInSearch(NamedTuple):
    """A Search service in front of the stand-in Embedder, and a stub to call it."""

    servicer: StandInEmbedder
    server: Any  # imgsearch_search.server.SearchServer
    stub: search_pb2_grpc.SearchStub


StartStandInSearch = Callable[..., Awaitable[StandInSearch]]


@pytest.fixture
async def stand_in_search(
    milvus_lite_uri: str,
    redis_url: str,
    stand_in: tuple[StandInEmbedder, str],
    search_service_factory: SearchServiceFactory,
) -> AsyncIterator[StartStandInSearch]:
    """Starts Search (real Milvus Lite, Redis and gRPC) against the stand-in Embedder;
    keyword arguments are further SearchSettings fields."""
    servicer, address = stand_in
    channels: list[grpc.aio.Channel] = []

    async def start(**settings: Any) -> StandInSearch:
        server = await search_service_factory(
            milvus_uri=milvus_lite_uri, redis_url=redis_url, embedder_address=address, **settings
        )
        channels.append(grpc.aio.insecure_channel(search_address(server)))
        return StandInSearch(servicer, server, search_pb2_grpc.SearchStub(channels[-1]))

    try:
        yield start
    finally:
        for channel in channels:
            await channel.close()


@pytest.mark.parametrize(
    ("code", "final", "expected", "calls"),
    [
        (grpc.StatusCode.INTERNAL, False, InternalError, 1),
        (grpc.StatusCode.UNKNOWN, False, InternalError, 1),
        (grpc.StatusCode.UNIMPLEMENTED, False, FailedPreconditionError, 1),
        (grpc.StatusCode.PERMISSION_DENIED, False, FailedPreconditionError, 1),
        (grpc.StatusCode.INVALID_ARGUMENT, False, InvalidArgumentError, 1),
        (grpc.StatusCode.UNAVAILABLE, False, UnavailableError, 3),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False, ResourceExhaustedError, 3),
        # Over a per-request limit: the Embedder says not to retry.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True, RequestTooLargeError, 1),
    ],
)
async def test_only_retriable_embedder_failures_are_retried(
    stand_in: tuple[StandInEmbedder, str],
    code: grpc.StatusCode,
    final: bool,
    expected: type[ImgsearchError],
    calls: int,
) -> None:
    servicer, address = stand_in
    client = EmbedderClient(address, 2, 1 << 20, DependencyMetrics(CollectorRegistry()))
    try:
        await client.get_model(Deadline(5))
        servicer.code, servicer.final = code, final
        with pytest.raises(expected):
            await client.embed([POISON], Deadline(10))
        assert servicer.calls == calls
    finally:
        await client.close()


async def test_query_views_are_asked_for_only_when_wanted_and_checked(
    stand_in: tuple[StandInEmbedder, str],
) -> None:
    """The stand-in returns views whether asked or not: the client must ask for them
    only when told, keep them only then, and refuse vectors of another length."""
    servicer, address = stand_in
    client = EmbedderClient(address, 0, 1 << 20, DependencyMetrics(CollectorRegistry()))
    good = embedder_pb2.View(kind="inset", vector=[1.0] + [0.0] * (DIMENSION - 1))
    nameless = embedder_pb2.View(kind="", vector=[1.0] + [0.0] * (DIMENSION - 1))
    try:
        await client.get_model(Deadline(5))
        servicer.views = [good, nameless]
        first = servicer.detectors
        assert client.views_identity == first  # from GetModel
        embedded = await client.embed_query(b"q", Deadline(10), views=True)
        assert embedded.fingerprint == FINGERPRINT
        assert embedded.query_views == first
        assert [view.kind for view in embedded.embedding.views] == ["inset"]
        plain = await client.embed_query(b"q", Deadline(10), views=False)
        assert list(plain.embedding.views) == []
        assert plain.query_views == ""
        # A reply with views from other detectors (an Embedder replaced between calls).
        servicer.detectors = "stand-in-replaced"
        await client.embed_query(b"q", Deadline(10), views=True)
        assert client.views_identity == "stand-in-replaced"
        assert servicer.asked_views == [True, False, True]
        # A view of another length than the model's: the Embedder does not fit (UNAVAILABLE).
        servicer.views = [embedder_pb2.View(kind="inset", vector=[1.0] * (DIMENSION + 1))]
        with pytest.raises(UnavailableError, match="has its model changed"):
            await client.embed_query(b"q", Deadline(10), views=True)
    finally:
        await client.close()


@pytest.mark.slow
async def test_an_embedder_failure_on_one_image_is_that_items_error(
    stand_in_search: StartStandInSearch,
) -> None:
    servicer, _, stub = await stand_in_search()
    servicer.code = grpc.StatusCode.INTERNAL  # fails calls holding POISON only
    unique = uuid.uuid4().hex.encode()
    items = [
        search_pb2.Item(id="good-1", image=b"one" + unique),
        search_pb2.Item(id="bad", image=POISON),
        search_pb2.Item(id="good-2", image=b"two" + unique),
        search_pb2.Item(id="bad-again", image=POISON),  # the same bytes: the same error
    ]
    reply = await stub.Insert(search_pb2.InsertRequest(items=items), timeout=30)
    codes = [result.code for result in reply.results]
    internal = grpc.StatusCode.INTERNAL.value[0]
    assert codes == [0, internal, 0, internal]
    assert "items[1].image" in reply.results[1].message
    assert "items[3].image" in reply.results[3].message
    assert reply.inserted == 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Search(search_pb2.SearchRequest(image=POISON), timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL  # not UNAVAILABLE: no retry helps

    # The same image under several ids is embedded once.
    servicer.code, before = None, servicer.images
    same = b"same" + unique
    copies = [search_pb2.Item(id=f"copy-{index}", image=same) for index in range(3)]
    reply = await stub.Insert(search_pb2.InsertRequest(items=copies), timeout=30)
    assert reply.inserted == 3
    assert servicer.images - before == 1

    servicer.code = grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Search(search_pb2.SearchRequest(image=b"three" + unique), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Embedder" in (info.value.details() or "")


def _view(kind: str, values: list[float]) -> embedder_pb2.View:
    return embedder_pb2.View(kind=kind, vector=values, box=[0, 0, 1, 1], score=0.9)


async def test_query_vectors_are_unit_norm_and_views_without_a_direction_are_dropped(
    stand_in: tuple[StandInEmbedder, str],
) -> None:
    """What the Embedder returns for a query is searched only as the contract says: unit
    vectors, one view of each kind; a NaN, infinite or zero view is dropped, not searched."""
    servicer, address = stand_in
    client = EmbedderClient(address, 0, 1 << 20, DependencyMetrics(CollectorRegistry()))
    axis = [1.0] + [0.0] * (DIMENSION - 1)
    try:
        await client.get_model(Deadline(5))
        servicer.views = [
            _view("inset", [float("nan")] * DIMENSION),
            _view("straightened", [0.0] * DIMENSION),
            _view("uncaptioned", [float("inf")] + [0.0] * (DIMENSION - 1)),
            _view("uncaptioned", [1e30] * DIMENSION),  # its square overflows float32
            _view("inset", [1000.0] + [0.0] * (DIMENSION - 1)),
            _view("inset", axis),  # a second inset: the first kept one is the most confident
            *(_view(f"future-{n}", axis) for n in range(20)),
        ]
        embedding = (await client.embed_query(b"q", Deadline(10), views=True)).embedding
        kinds = [view.kind for view in embedding.views]
        assert kinds[:2] == ["uncaptioned", "inset"]
        assert len(kinds) == len(set(kinds)) == MAX_QUERY_VIEWS
        assert np.allclose(list(embedding.views[1].vector), axis)
        for vector in (embedding.vector, *(view.vector for view in embedding.views)):
            values = np.asarray(list(vector), dtype=np.float64)
            assert np.linalg.norm(values) == pytest.approx(1.0, abs=1e-6)
        # A whole-image vector without a direction is the Embedder failing on the image.
        for bad in ([float("nan")] * DIMENSION, [0.0] * DIMENSION):
            embedding = embedder_pb2.Embedding(vector=bad)
            with pytest.raises(InternalError, match="NaN or infinite values, or all zeros"):
                checked_query_embedding(embedding, DIMENSION)
    finally:
        await client.close()


def test_a_cached_query_embedding_is_checked_like_a_fresh_one() -> None:
    """A query-views entry read back from Redis (shared, possibly written by another
    version) goes through the same checks: bad views dropped, vectors unit norm."""
    axis = [2.0] + [0.0] * (DIMENSION - 1)
    entry = embedder_pb2.Embedding(
        vector=axis, views=[_view("inset", [float("nan")] * DIMENSION), _view("inset", axis)]
    )
    parsed = _parse_embedding(entry.SerializeToString(), DIMENSION)
    assert parsed is not None
    assert list(parsed.vector) == [1.0] + [0.0] * (DIMENSION - 1)
    assert [(view.kind, view.vector[0]) for view in parsed.views] == [("inset", 1.0)]
    no_direction = embedder_pb2.Embedding(vector=[0.0] * DIMENSION)
    assert _parse_embedding(no_direction.SerializeToString(), DIMENSION) is None
    assert _parse_embedding(b"\xff\xff", DIMENSION) is None


@pytest.mark.slow
async def test_an_embedder_view_longer_than_unit_never_decides_the_ranking(
    stand_in_search: StartStandInSearch,
) -> None:
    """With the IP metric a view vector of norm 1000 would score 1000 x its cosine: its
    nearest item would come first "found through the inset" whatever the whole image
    matched. NaN views would add NaN scores that break the order. Both are refused."""
    servicer, server, stub = await stand_in_search(metric_type="IP", query_views=True)
    unique = uuid.uuid4().hex.encode()
    items = [search_pb2.Item(id=f"item-{n}", image=unique * (n + 1)) for n in range(6)]
    reply = await stub.Insert(search_pb2.InsertRequest(items=items), timeout=30)
    assert reply.inserted == 6
    servicer.views = [
        _view("inset", [1000.0] + [0.0] * (DIMENSION - 1)),
        _view("straightened", [float("nan")] * DIMENSION),
    ]
    query = search_pb2.SearchRequest(image=unique * 6, top_k=3)
    response = await stub.Search(query, timeout=30)
    assert len(response.hits) == 3, response
    assert response.hits[0].matched_view == "", response
    scores = [hit.score for hit in response.hits]
    assert all(np.isfinite(scores))
    assert scores == sorted(scores, reverse=True)
    assert "straightened" not in {hit.matched_view for hit in response.hits}

    # A view of a kind this Search does not know can win; the metric names it "other".
    stored = await stub.Get(search_pb2.GetRequest(ids=["item-2"], include_vectors=True))
    servicer.views = [_view("<future kind>", list(stored.items[0].vector))]
    response = await stub.Search(search_pb2.SearchRequest(image=b"q", top_k=3), timeout=30)
    assert response.hits[0].id == "item-2", response
    assert response.hits[0].matched_view == "<future kind>"
    registry = server.registry
    assert registry.get_sample_value("search_top_hit_views_total", {"view": "other"}) == 1
    assert registry.get_sample_value("search_top_hit_views_total", {"view": "whole"}) == 1
    # Views are an image query's only: id and vector queries never carry one.
    by_id = await stub.Search(search_pb2.SearchRequest(id="item-2", top_k=3), timeout=30)
    vector = search_pb2.Vector(values=list(stored.items[0].vector))
    by_vector = await stub.Search(search_pb2.SearchRequest(vector=vector, top_k=3))
    for other in (by_id, by_vector):
        assert other.hits[0].id == "item-2"
        assert [hit.matched_view for hit in other.hits] == ["", "", ""]


@pytest.mark.slow
async def test_an_embedder_nan_vector_is_that_items_error_and_never_stored(
    stand_in_search: StartStandInSearch,
) -> None:
    """A NaN vector stored in Milvus would come back as NaN scores to every query near it."""
    servicer, _, stub = await stand_in_search()
    unique = uuid.uuid4().hex.encode()
    servicer.nan_for = b"nan" + unique
    items = [
        search_pb2.Item(id="good", image=b"one" + unique),
        search_pb2.Item(id="nan", image=b"nan" + unique),
    ]
    reply = await stub.Insert(search_pb2.InsertRequest(items=items), timeout=30)
    assert [result.code for result in reply.results] == [0, grpc.StatusCode.INTERNAL.value[0]]
    assert "NaN" in reply.results[1].message
    assert reply.inserted == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Search(search_pb2.SearchRequest(image=b"nan" + unique), timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    found = await stub.Get(search_pb2.GetRequest(ids=["good", "nan"]))
    assert list(found.missing_ids) == ["nan"]


@pytest.mark.slow
async def test_views_of_replaced_detectors_are_never_served_from_the_cache(
    stand_in_search: StartStandInSearch,
) -> None:
    """Cached views (and results of image queries) are keyed by the detectors' identity
    (GetModelResponse.query_views): once the Embedder's detectors change, an image
    queried before is looked at again, learnt from GetModel within one health interval."""
    servicer, server, stub = await stand_in_search(query_views=True)  # health probes: 0.5 s
    unique = uuid.uuid4().hex.encode()
    items = [search_pb2.Item(id=f"item-{n}", image=unique * (n + 1)) for n in range(4)]
    assert (await stub.Insert(search_pb2.InsertRequest(items=items), timeout=30)).inserted == 4
    stored = await stub.Get(search_pb2.GetRequest(ids=["item-2"], include_vectors=True))
    servicer.views = [_view("inset", list(stored.items[0].vector))]
    # One byte: a whole-image vector far from the items' (the stand-in's vectors follow
    # the image's length).
    query = search_pb2.SearchRequest(image=b"s", top_k=2)
    first = await stub.Search(query, timeout=30)
    assert (first.hits[0].id, first.hits[0].matched_view) == ("item-2", "inset")
    calls = servicer.calls
    assert (await stub.Search(query, timeout=30)).cached
    assert servicer.calls == calls  # served from the cache

    # The Embedder's detectors change: they now find nothing in that image.
    servicer.detectors, servicer.views = f"stand-in-{uuid.uuid4().hex}", []

    async def looked_again() -> bool:
        reply = await stub.Search(query, timeout=30)
        return not reply.cached and reply.hits[0].matched_view == ""

    assert await eventually(looked_again)
    assert servicer.calls > calls
    assert server.embedder.views_identity == servicer.detectors
