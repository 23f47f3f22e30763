"""The web page in a real browser: Playwright driving Debian's Chromium against the real stack.

Chromium comes from Debian (`apt-get install chromium`, done by
scripts/ensure-system-deps.sh), never from `playwright install`; Playwright
starts it with `executable_path`. Every request the page makes is recorded,
so the tests also prove that it loads nothing from another origin.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.fixtures.photos import corrupt, screenshot
from tests.web.conftest import SUITE_FILTER, WebUnderTest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert os.path.exists(CHROMIUM), (  # noqa: ASYNC240 -- once per module
        "Chromium is missing: `make setup` as root installs Debian's chromium"
        " (scripts/ensure-system-deps.sh)"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        yield browser
        await browser.close()


class PageUnderTest:
    """A page of the gateway, with every request and console error it produced."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def foreign_requests(self) -> list[str]:
        ours = urlsplit(self.base).netloc
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("blob", "data") and urlsplit(url).netloc != ours
        ]


async def open_page(browser: Browser, web: WebUnderTest, **context: object) -> PageUnderTest:
    page = await (await browser.new_context(**context)).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    under_test = PageUnderTest(page, web.url)
    await page.goto(f"{web.url}/")
    await page.fill("#filter", SUITE_FILTER)
    return under_test


async def drop_file(page: Page, selector: str, data: bytes, name: str, mime: str) -> None:
    """Drop a file on an element the way a browser does: a drop event with a DataTransfer."""
    transfer = await page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )
    await page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    await page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


async def first_tile_shows_its_thumbnail(page: Page, grid: str) -> str:
    first = page.locator(f"{grid} figure").first
    await expect(first).to_be_visible()
    image = first.locator("img.thumb")
    await expect(image).to_be_visible()
    await page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
    )
    return str(await first.get_attribute("data-id"))


async def test_drop_a_photo_then_more_like_this(browser: Browser, web: WebUnderTest) -> None:
    under_test = await open_page(browser, web)
    page = under_test.page
    photo = (web.photo_dir / "coins.jpg").read_bytes()
    await drop_file(page, "#dropzone", photo, "coins.jpg", "image/jpeg")
    await expect(page.locator("#status")).to_contain_text("hits in")
    assert await first_tile_shows_its_thumbnail(page, "#results") == "web/coins"
    await expect(page.locator("#results figure").first.locator(".score")).to_have_text("1.0000")
    await expect(page.locator("#query-caption")).to_contain_text("coins.jpg")

    # Click the second hit: "more like this" puts it first, with a new result list.
    second = page.locator("#results figure").nth(1)
    second_id = await second.get_attribute("data-id")
    await second.click()
    await expect(page.locator("#query-caption")).to_have_text(f"More like {second_id}")
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", second_id)
    assert await first_tile_shows_its_thumbnail(page, "#results") == second_id

    # Picking a file with the file input works the same way.
    await page.set_input_files("#file", str(web.photo_dir / "moon.jpg"))
    await expect(page.locator("#query-caption")).to_contain_text("moon.jpg")
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", "web/moon")
    assert under_test.foreign_requests() == []
    assert under_test.errors == []


async def test_paste_an_image_from_the_clipboard(browser: Browser, web: WebUnderTest) -> None:
    under_test = await open_page(browser, web)
    page = under_test.page
    photo = (web.photo_dir / "clock.jpg").read_bytes()
    await page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "", { type: "image/jpeg" }));
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer }));
        }""",
        base64.b64encode(photo).decode(),
    )
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", "web/clock")


async def test_an_invalid_file_shows_a_readable_error(browser: Browser, web: WebUnderTest) -> None:
    under_test = await open_page(browser, web)
    page = under_test.page
    broken = corrupt((web.photo_dir / "horse.jpg").read_bytes())
    await drop_file(page, "#dropzone", broken, "broken.jpg", "image/jpeg")
    error = page.locator("#error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("INVALID_ARGUMENT 400")
    await expect(error).to_contain_text("image")
    assert "Traceback" not in await error.inner_text()
    await expect(page.locator("#results figure")).to_have_count(0)
    # Not an image at all: said so before anything is sent.
    await drop_file(page, "#dropzone", b"hello", "notes.txt", "text/plain")
    await expect(error).to_contain_text("notes.txt is not an image")
    await page.click("#error-close")
    await expect(error).to_be_hidden()


async def test_odd_inputs_each_get_a_clear_message(browser: Browser, web: WebUnderTest) -> None:
    """A demanding user: empty and oversized files, searching before there is a query, a bad
    filter, a filter that matches nothing, a non-image upload. Each gets one readable line."""
    under_test = await open_page(browser, web)
    page = under_test.page
    error = page.locator("#error")
    # Enter in the filter box before any query: a message, not a page reload.
    await page.press("#filter", "Enter")
    await expect(error).to_contain_text("Drop a photo, pick a file or paste an image first")
    assert "?" not in page.url
    # An empty file, and one over the gateway's upload limit (16 MiB): refused
    # before anything is sent, with the sizes.
    await drop_file(page, "#dropzone", b"", "empty.png", "image/png")
    await expect(error).to_contain_text("empty.png is empty (0 bytes).")
    huge = await page.evaluate_handle(
        """() => {
            const transfer = new DataTransfer();
            const bytes = new Uint8Array(17 * 1024 * 1024);
            bytes.set([0xff, 0xd8, 0xff]);
            transfer.items.add(new File([bytes], "huge.jpg", { type: "image/jpeg" }));
            return transfer;
        }"""
    )
    await page.dispatch_event("#dropzone", "drop", {"dataTransfer": huge})
    await expect(error).to_contain_text(
        "huge.jpg is 17 MiB, over the upload limit of 16 MiB. Pick a smaller file."
    )
    assert not [url for url in under_test.requests if "/v1/search" in url]
    # Sent anyway (an API client, or the check bypassed): the browser gets the
    # gateway's 413 with its JSON body, not a broken connection.
    status = await page.evaluate(
        """async () => {
            const body = new Blob([new Uint8Array(17 * 1024 * 1024)], { type: "image/jpeg" });
            const response = await fetch("v1/search/image", { method: "POST", body });
            return [response.status, (await response.json()).code];
        }"""
    )
    assert status == [413, "RESOURCE_EXHAUSTED"]
    # A filter Search cannot parse: its message; one that matches nothing: no hits, said so.
    await page.fill("#filter", "suite ==")
    await drop_file(page, "#dropzone", (web.photo_dir / "coins.jpg").read_bytes(), "coins.jpg",
                    "image/jpeg")  # fmt: skip
    await expect(error).to_contain_text("INVALID_ARGUMENT 400")
    await expect(error).to_contain_text("filter")
    await page.fill("#filter", 'suite == "no-such-suite"')
    await page.press("#filter", "Enter")  # runs the same query again with the new filter
    await expect(page.locator("#status")).to_contain_text("No hits")
    await expect(error).to_be_hidden()
    # Another top k re-runs it too.
    await page.fill("#filter", SUITE_FILTER)
    await page.select_option("#top-k", "5")
    await expect(page.locator("#results figure")).to_have_count(5)
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", "web/coins")
    # The upload form checks the same way, and shows Search's reason for a non-image.
    await page.goto(f"{web.url}/#upload")
    await page.set_input_files(
        "#upload-file", files=[{"name": "empty.jpg", "mimeType": "image/jpeg", "buffer": b""}]
    )
    await page.click("#upload-form button[type=submit]")
    await expect(error).to_contain_text("empty.jpg is empty (0 bytes).")
    await page.set_input_files(
        "#upload-file",
        files=[{"name": "notes", "mimeType": "", "buffer": b"plain text, not a picture"}],
    )
    await page.click("#upload-form button[type=submit]")
    await expect(error).to_contain_text("INVALID_ARGUMENT 400")
    await expect(error).to_contain_text("image")
    for text in await error.all_inner_texts():
        assert "Traceback" not in text
    assert under_test.errors == []


async def test_browse_pages_through_the_collection(browser: Browser, web: WebUnderTest) -> None:
    under_test = await open_page(browser, web)
    page = under_test.page
    await page.click("nav a[data-view=browse]")
    await page.fill("#browse-filter", SUITE_FILTER)
    await page.select_option("#browse-size", "12")
    await page.click("#browse-form button[type=submit]")
    seen: list[str] = []
    for number in range(1, 10):
        await expect(page.locator("#browse-page")).to_have_text(f"page {number}")
        await expect(page.locator("#browse-status")).to_contain_text("items in id order")
        ids = await page.locator("#browse-grid figure").evaluate_all(
            "(tiles) => tiles.map((t) => t.dataset.id)"
        )
        seen.extend(ids)
        if await page.locator("#browse-next").is_disabled():
            break
        await page.click("#browse-next")
    expected = sorted([*web.ids.values(), "web/horse-small"])
    assert seen == expected
    assert number == 2
    await page.click("#browse-prev")
    await expect(page.locator("#browse-page")).to_have_text("page 1")
    await first_tile_shows_its_thumbnail(page, "#browse-grid")
    # A tile in the browse view opens "more like this".
    await page.locator("#browse-grid figure").first.click()
    await expect(page.locator("#query-caption")).to_have_text(f"More like {expected[0]}")


async def test_duplicates_view_and_upload_form(browser: Browser, web: WebUnderTest) -> None:
    under_test = await open_page(browser, web)
    page = under_test.page
    await page.goto(f"{web.url}/#duplicates")
    await page.fill("#dup-threshold", "0.9")
    await page.fill("#dup-filter", SUITE_FILTER)
    await page.click("#dup-start")
    await expect(page.locator("#dup-status")).to_contain_text("groups")
    group = page.locator("#dup-groups .group").filter(has=page.locator('[data-id="web/horse"]'))
    await expect(group.locator("figure")).to_have_count(2)

    await page.goto(f"{web.url}/#upload")
    await page.set_input_files("#upload-file", str(web.photo_dir / "text.jpg"))
    await page.fill("#upload-id", "web/uploaded-text")
    await page.fill("#upload-labels", "kind=upload\nsuite=web-upload")
    await page.click("#upload-form button[type=submit]")
    await expect(page.locator("#upload-status")).to_have_text("Stored as web/uploaded-text.")
    item = web.http.get("/v1/items/web/uploaded-text").json()
    assert item["labels"] == {"kind": "upload", "suite": "web-upload"}
    assert item["uri"] == "text.jpg"
    web.http.delete("/v1/items/web/uploaded-text")


async def test_works_on_a_phone_sized_screen(
    browser: Browser, web: WebUnderTest, tmp_path: Path
) -> None:
    under_test = await open_page(
        browser, web, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page = under_test.page
    await page.set_input_files("#file", str(web.photo_dir / "brick.jpg"))
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", "web/brick")
    overflow = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than the screen"
    columns = await page.evaluate(
        "() => getComputedStyle(document.querySelector('#results'))"
        ".gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    await page.screenshot(path=tmp_path / "phone.png", full_page=True)


async def test_hit_names_are_shown_decoded(browser: Browser, web: WebUnderTest) -> None:
    """A uri's percent-encoded file name is shown decoded; the stored uri and id are not touched."""
    data = (web.photo_dir / "coins.jpg").read_bytes()
    uris = {
        "web-names/spaces": "file:///photos/name%20with%20spaces.jpg",
        "web-names/utf8": "file:///photos/caf%C3%A9%20%E2%80%94%20menu.png",
        "web-names/not-utf8": "file:///photos/bad%FF%20byte.jpg",
        "web-names/slash": "file:///photos/a%2Fb%0A.jpg",
    }
    for item_id, uri in uris.items():
        reply = web.http.post(
            "/v1/items",
            files={"image": ("x.jpg", data, "image/jpeg")},
            data={"id": item_id, "uri": uri, "labels": json.dumps({"suite": "web-names"})},
        )
        assert reply.status_code == 201, reply.text
    try:
        under_test = await open_page(browser, web)
        page = under_test.page
        await page.click("nav a[data-view=browse]")
        await page.fill("#browse-filter", 'suite == "web-names"')
        await page.click("#browse-form button[type=submit]")
        await expect(page.locator("#browse-grid figure")).to_have_count(4)
        names = await page.locator("#browse-grid figure").evaluate_all(
            "(tiles) => Object.fromEntries(tiles.map("
            "(t) => [t.dataset.id, t.querySelector('.name').textContent]))"
        )
        assert names == {
            "web-names/spaces": "name with spaces.jpg",
            "web-names/utf8": "café — menu.png",
            "web-names/not-utf8": "bad%FF byte.jpg",
            "web-names/slash": "a%2Fb%0A.jpg",
        }
        assert web.http.get("/v1/items/web-names/spaces").json()["uri"] == uris["web-names/spaces"]
        assert under_test.errors == []
    finally:
        for item_id in uris:
            web.http.delete(f"/v1/items/{item_id}")


async def test_a_hit_found_through_a_view_says_so(browser: Browser, web: WebUnderTest) -> None:
    """A screenshot with a stored photo pasted in: its hit says it was found as that picture."""
    under_test = await open_page(browser, web)
    page = under_test.page
    await drop_file(page, "#dropzone", screenshot("clock", backdrop="coffee"), "shot.jpg",
                    "image/jpeg")  # fmt: skip
    await expect(page.locator("#status")).to_contain_text("hits in")
    first = page.locator("#results figure").first
    await expect(first).to_have_attribute("data-id", "web/clock")
    await expect(first.locator(".matched-view")).to_have_text(
        "found as the picture pasted into your image"
    )
    # A whole-image hit carries no such note.
    await drop_file(page, "#dropzone", (web.photo_dir / "moon.jpg").read_bytes(), "moon.jpg",
                    "image/jpeg")  # fmt: skip
    await expect(page.locator("#results figure").first).to_have_attribute("data-id", "web/moon")
    await expect(page.locator("#results figure").first.locator(".matched-view")).to_have_count(0)
    # A kind this page does not know is named as it is, even one named like a property
    # every JavaScript object has (it read "function Object() { [native code] }").
    for kind in ("constructor", "toString", "__proto__", "hasOwnProperty"):
        note = await page.evaluate("(kind) => viewNote(kind)", kind)
        assert note == f"found through the {kind} view of your image"
    assert under_test.errors == []
