"""Fixtures of the web tests: the session's stack (gateway included) and a set of photos in it.

The photos are inserted through the gateway itself (POST /v1/items) with ids
under `web/` and the label `suite=web`, so these tests neither see nor disturb
what the CLI tests store in the same stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.photos import jpeg, load_photo, png
from tests.fixtures.stack import LocalStack

# Photos the CLI tests do not store, so each one's original is the only exact match.
WEB_PHOTOS = (
    "horse", "camera", "coins", "moon", "brick", "clock", "retina", "text",
    "page", "grass", "gravel", "colorwheel", "hubble_deep_field",
)  # fmt: skip
SUITE_FILTER = 'suite == "web"'


@dataclass(frozen=True)
class WebUnderTest:
    """The gateway's base URL, a client for it, and the photos stored through it."""

    url: str
    search: str  # HOST:PORT of the stack's Search gRPC service
    http: httpx.Client
    photo_dir: Path  # <name>.jpg for each of WEB_PHOTOS
    ids: dict[str, str]  # photo name -> item id


def insert(http: httpx.Client, item_id: str, data: bytes, filename: str, **labels: str) -> dict:
    reply = http.post(
        "/v1/items",
        files={"image": (filename, data, "image/jpeg")},
        data={"id": item_id, "uri": filename, "labels": json.dumps(labels)},
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.fixture(scope="session")
def web(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebUnderTest]:
    photo_dir = tmp_path_factory.mktemp("web-photos")
    ids = {}
    with httpx.Client(base_url=local_stack.web, timeout=120) as http:
        for name in WEB_PHOTOS:
            data = jpeg(load_photo(name))
            (photo_dir / f"{name}.jpg").write_bytes(data)
            ids[name] = insert(http, f"web/{name}", data, f"{name}.jpg", suite="web")["id"]
        # A near-duplicate pair for the duplicates view: a recompressed, resized horse.
        horse = load_photo("horse")
        small = png(horse.resize((horse.width // 2, horse.height // 2)))
        insert(http, "web/horse-small", small, "horse-small.png", suite="web", kind="copy")
        yield WebUnderTest(local_stack.web, local_stack.search, http, photo_dir, ids)
