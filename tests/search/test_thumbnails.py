"""Thumbnails: made within their bounds from every kind of accepted image, stored, and missing
only with a reason; a collection from before thumbnails is served with a clear message."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from pymilvus import DataType, MilvusClient

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc
from imgsearch_search.thumbnails import (
    ThumbnailSpec,
    from_stored,
    make_thumbnail,
    mime_type,
    to_stored,
)
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.photos import encode, jpeg, load_photo, png

SPEC = ThumbnailSpec()


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _noise(side: int) -> Image.Image:
    rng = np.random.default_rng(side)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("camera-sized JPEG", jpeg(load_photo("astronaut", None).resize((3000, 2000)))),
        ("PNG", png(load_photo("coffee"))),
        ("PNG with alpha", encode(load_photo("rocket").convert("RGBA"), "PNG")),
        ("16-bit greyscale PNG", encode(Image.fromarray(
            (np.arange(200 * 300).reshape(200, 300) % 65536).astype(np.uint16)), "PNG")),
        ("WebP", encode(load_photo("chelsea"), "WEBP")),
        ("GIF", encode(load_photo("horse").convert("P"), "GIF")),
        ("BMP", encode(load_photo("moon"), "BMP")),
        ("TIFF", encode(load_photo("coins"), "TIFF")),
        ("tall JPEG", jpeg(load_photo("text").rotate(90, expand=True))),
        ("noise (hard to compress)", png(_noise(700))),
    ],
)  # fmt: skip
def test_thumbnails_fit_their_bounds(name: str, data: bytes) -> None:
    thumb = make_thumbnail(data, SPEC)
    assert len(thumb) <= SPEC.max_bytes, name
    assert mime_type(thumb) == "image/webp"
    image = _open(thumb)
    assert image.format == "WEBP"
    assert max(image.size) <= SPEC.max_side
    original = _open(data)
    if max(original.size) >= SPEC.max_side and name != "noise (hard to compress)":
        assert max(image.size) == SPEC.max_side, name
        # The aspect ratio survives (within a pixel of rounding).
        ratio = original.width / original.height
        assert abs(image.width - image.height * ratio) <= 1.5, name
    assert from_stored(to_stored(thumb)) == thumb


def test_small_images_keep_their_size_and_jpeg_and_tight_limits_work() -> None:
    tiny = Image.fromarray(np.full((28, 28), 200, dtype=np.uint8))  # Fashion-MNIST size
    assert _open(make_thumbnail(png(tiny), SPEC)).size == (28, 28)
    as_jpeg = make_thumbnail(jpeg(load_photo("camera")), ThumbnailSpec(image_format="JPEG"))
    assert mime_type(as_jpeg) == "image/jpeg"
    tight = make_thumbnail(png(_noise(600)), ThumbnailSpec(max_bytes=3000))
    assert len(tight) <= 3000
    assert max(_open(tight).size) < SPEC.max_side  # had to shrink as well as lower quality


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", jpeg(load_photo("camera"))[:300], b"RIFF\x00\x00\x00\x00WEBPVP8 "],
)
def test_undecodable_images_are_invalid_arguments(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^image"):
        make_thumbnail(data, SPEC)


def test_oversized_images_are_refused_before_decoding() -> None:
    with pytest.raises(InvalidArgumentError, match="exceeds the limit"):
        make_thumbnail(png(_noise(300)), ThumbnailSpec(max_image_pixels=300 * 299))


def test_stored_text_round_trips_and_garbage_reads_as_none() -> None:
    assert from_stored("") == b""
    assert from_stored(None) == b""
    assert from_stored("***") == b""
    assert mime_type(b"") == ""


@pytest.mark.slow
async def test_an_item_whose_thumbnail_cannot_be_made_is_stored_with_a_warning(
    search_service_factory: SearchServiceFactory,
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
) -> None:
    """Search's decoding limit below the Embedder's: the image embeds, the thumbnail fails."""
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        thumbnail_max_image_pixels=100_000,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        big, small = jpeg(load_photo("astronaut")), jpeg(load_photo("horse", 300))
        reply = await stub.Insert(
            search_pb2.InsertRequest(
                items=[
                    search_pb2.Item(id="big", image=big),
                    search_pb2.Item(id="small", image=small),
                ]
            ),
            timeout=120,
        )
        assert [r.code for r in reply.results] == [0, 0]
        assert reply.inserted == 2
        assert reply.results[0].message.startswith("stored without a thumbnail: image:")
        assert "exceeds the limit" in reply.results[0].message
        assert reply.results[1].message == ""
        got = await stub.Get(
            search_pb2.GetRequest(ids=["big", "small"], include_thumbnails=True), timeout=30
        )
        assert [(i.id, bool(i.thumbnail), i.thumbnail_mime_type) for i in got.items] == [
            ("big", False, ""),
            ("small", True, "image/webp"),
        ]
        hits = await stub.Search(search_pb2.SearchRequest(image=big, top_k=1), timeout=60)
        assert hits.hits[0].id == "big"


@pytest.mark.slow
async def test_a_collection_from_before_thumbnails_is_served_and_says_how_to_reindex(
    search_service_factory: SearchServiceFactory,
    milvus_uri: str,
    redis_url: str,
    embedder_address: str,
    unique_collection: str,
) -> None:
    async with grpc.aio.insecure_channel(embedder_address) as channel:
        model = await embedder_pb2_grpc.EmbedderStub(channel).GetModel(
            embedder_pb2.GetModelRequest(), timeout=30
        )
    # The schema imgsearch created before thumbnails (schema 1).
    client = MilvusClient(uri=milvus_uri, timeout=60)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=model.dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=2048)
    schema.add_field("labels", DataType.JSON)
    schema.add_field("content_sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("model", DataType.VARCHAR, max_length=256)
    client.create_collection(
        unique_collection,
        schema=schema,
        consistency_level="Session",
        properties={
            "imgsearch.model": model.model,
            "imgsearch.fingerprint": model.fingerprint,
            "imgsearch.schema": "1",
        },
    )
    client.close()

    server = await search_service_factory(
        milvus_uri=milvus_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        collection=unique_collection,
    )
    assert server.store.info.thumbnails is False
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        photo = jpeg(load_photo("coffee"))
        reply = await stub.Insert(
            search_pb2.InsertRequest(items=[search_pb2.Item(id="coffee", image=photo)]), timeout=120
        )
        assert [(r.code, r.message) for r in reply.results] == [(0, "")]
        hits = await stub.Search(search_pb2.SearchRequest(image=photo, top_k=1), timeout=60)
        assert hits.hits[0].id == "coffee"
        listed = await stub.List(search_pb2.ListRequest(), timeout=30)
        assert [item.id for item in listed.items] == ["coffee"]
        for call in (
            stub.Get(search_pb2.GetRequest(ids=["coffee"], include_thumbnails=True), timeout=30),
            stub.List(search_pb2.ListRequest(include_thumbnails=True), timeout=30),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "without thumbnails" in info.value.details()
            assert "ingest the images again into a new collection" in info.value.details()


@pytest.mark.slow
async def test_thumbnails_turned_off_store_none_and_warn_nothing(
    search_service_factory: SearchServiceFactory,
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
) -> None:
    """SEARCH_THUMBNAILS_ENABLED=false, for collections too large to keep them in memory."""
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        thumbnails_enabled=False,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        horse = jpeg(load_photo("horse", 300))
        reply = await stub.Insert(
            search_pb2.InsertRequest(items=[search_pb2.Item(id="horse", image=horse)]),
            timeout=120,
        )
        assert [(r.code, r.message) for r in reply.results] == [(0, "")]
        got = await stub.Get(
            search_pb2.GetRequest(ids=["horse"], include_thumbnails=True), timeout=30
        )
        assert [(i.id, i.thumbnail, i.thumbnail_mime_type) for i in got.items] == [
            ("horse", b"", "")
        ]
        listed = await stub.List(search_pb2.ListRequest(include_thumbnails=True), timeout=30)
        assert [(i.id, i.thumbnail) for i in listed.items] == [("horse", b"")]
        hits = await stub.Search(search_pb2.SearchRequest(image=horse, top_k=1), timeout=60)
        assert hits.hits[0].id == "horse"
