"""Query views: a picture pasted into a screenshot, a rotated copy straightened.

The detectors run on real photos (scikit-image's samples) edited the way the
evaluation edits its queries; the service test goes through real gRPC and the
real model, and checks the views' vectors find the original picture.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder import views
from imgsearch_embedder.preprocess import Preprocessor
from imgsearch_embedder.server import EmbedderServer
from tests.embedder import odd_images
from tests.fixtures.embedder import embedder_test_settings
from tests.fixtures.photos import PHOTO_NAMES, encode, load_photo, pasted


def screenshot(
    name: str, backdrop: str, width_share: float, at: tuple[float, float]
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """Photo `name` scaled to `width_share` of a 1024x640 copy of `backdrop`, pasted at
    `at` (fractions of the free room); the picture and the inset's box (fractions)."""
    photo = load_photo(name, None)
    size = (round(1024 * width_share), round(1024 * width_share * photo.height / photo.width))
    left, top = round(at[0] * (1024 - size[0])), round(at[1] * (640 - size[1]))
    return pasted(photo, backdrop, size, (left, top), Image.Resampling.BICUBIC)


def rotated(name: str, degrees: float, quality: int = 90) -> Image.Image:
    """Photo `name` rotated with its canvas grown (black corners), saved as JPEG `quality`."""
    image = load_photo(name).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    return Image.open(io.BytesIO(encode(image, "JPEG", quality=quality))).convert("RGB")


def captioned(name: str, lines: int = 2, light: str = "white", dark: str = "black") -> Image.Image:
    """Photo `name` with meme-style captions: `lines` lines of outlined letters across it."""
    image = load_photo(name)
    draw = ImageDraw.Draw(image)
    size = image.height // 10
    font = ImageFont.load_default(size=size)
    for line in range(lines):
        y = round(image.height * (0.1 + 0.35 * line))
        draw.text((image.width // 12, y), "SO TRUE", fill=light, font=font,
                  stroke_width=max(1, size // 12), stroke_fill=dark)  # fmt: skip
    return image


def test_a_faint_inset_is_below_the_threshold() -> None:
    """The price of MIN_INSET_SCORE 0.78 (false insets in 4-11% of photos, not 15-32%):
    coffee's pale cup rim pasted on astronaut's white suit has only 71% of its weakest
    side as edge, so that screenshot is searched as a whole image only."""
    image, _ = screenshot("coffee", "astronaut", 0.3, (0.5, 0.5))
    assert views.find_inset(image) is None


@pytest.mark.parametrize(
    ("name", "backdrop", "share", "at"),
    [
        ("astronaut", "coffee", 0.4, (0.1, 0.8)),
        ("chelsea", "rocket", 0.4, (0.9, 0.2)),
        ("rocket", "chelsea", 0.6, (0.05, 0.95)),
        ("horse", "gravel", 0.35, (0.7, 0.4)),
        ("coffee", "rocket", 0.3, (0.5, 0.5)),
    ],
)
def test_a_pasted_picture_is_found_where_it_was_pasted(
    name: str, backdrop: str, share: float, at: tuple[float, float]
) -> None:
    image, truth = screenshot(name, backdrop, share, at)
    view = views.find_inset(image)
    assert view is not None
    assert view.kind == "inset"
    assert view.score >= views.MIN_INSET_SCORE
    assert np.allclose(view.box, truth, atol=0.02), (view.box, truth)
    assert view.image.size == pytest.approx(
        ((truth[2] - truth[0]) * 1024, (truth[3] - truth[1]) * 640), abs=12
    )


@pytest.mark.parametrize("degrees", [30.0, -30.0, 10.0, -15.0, 40.0])
@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_a_rotated_copy_is_straightened_by_its_angle(name: str, degrees: float) -> None:
    original = load_photo(name)
    view = views.find_rotation(rotated(name, degrees, quality=10 if degrees == -15 else 90))
    assert view is not None
    assert view.kind == "straightened"
    # Dark picture content along the outline reads as corner fill: a few degrees off at
    # worst (astronaut: 3), which a CNN descriptor shrugs off (rotate_10 edits: recall 0.99).
    assert view.angle_degrees == pytest.approx(degrees, abs=3.5)
    aspect = view.image.width / view.image.height
    assert aspect == pytest.approx(original.width / original.height, rel=0.06)


@pytest.mark.parametrize("name", [n for n in PHOTO_NAMES if n != "grass"])
def test_whole_photos_are_not_taken_for_rotated_copies(name: str) -> None:
    """Upright pictures, also with flat backgrounds (horse, page, text) or letterboxed."""
    photo = load_photo(name)
    assert views.find_rotation(photo) is None
    assert views.find_rotation(ImageOps.pad(photo, (photo.width, photo.width))) is None


def test_most_whole_photos_have_no_inset() -> None:
    """A false inset costs one forward pass and, in Search, only a view's score less a
    margin; measured on the evaluation's 2,300 pictures: 5% at the default score."""
    found = [name for name in PHOTO_NAMES if views.find_inset(load_photo(name)) is not None]
    assert len(found) <= 2, found


@pytest.mark.parametrize(
    ("name", "lines", "light", "dark"),
    [("astronaut", 2, "white", "black"), ("coffee", 3, "white", "black"),
     ("rocket", 2, "black", "white"), ("chelsea", 2, "yellow", "black")],
)  # fmt: skip
def test_outlined_captions_are_painted_over(name: str, lines: int, light: str, dark: str) -> None:
    photo = load_photo(name)
    image = captioned(name, lines, light, dark)
    view = views.find_captions(image)
    if light == "yellow":  # not light in every channel: not taken for lettering
        assert view is None
        return
    assert view is not None
    assert view.kind == "uncaptioned"
    assert 0 < view.score <= 1
    left, top, right, bottom = view.box
    assert (left, top) < (1 / 12 + 0.02, 0.1 + 0.02)
    assert right > 0.25  # "SO TRUE" from 1/12 of the width
    assert bottom > 0.1 + 0.35 * (lines - 1)
    painted = np.asarray(view.image.resize(photo.size), dtype=np.float32)
    before = np.abs(np.asarray(image, dtype=np.float32) - np.asarray(photo, dtype=np.float32))
    after = np.abs(painted - np.asarray(photo, dtype=np.float32))
    # Where the letters were, the painted view is far closer to the photo than the query.
    letters = before.max(axis=2) > 60
    assert after[letters].mean() < 0.5 * before[letters].mean()


def test_small_and_flat_images_have_no_views() -> None:
    assert views.find_views(Image.new("RGB", (20, 20), "white")) == []
    assert views.find_views(Image.new("RGB", (640, 480), (30, 60, 90))) == []
    assert views.find_captions(Image.new("RGB", (640, 480), "white")) is None


def test_pictures_under_the_smallest_side_have_no_views() -> None:
    """Fashion-MNIST's 28-px pictures (light garments on black) had caption views in 47%
    and straightened ones in 13%: forward passes for nothing. Under MIN_VIEW_SIDE, none;
    the same rotated copy just above it is still straightened."""
    from imgsearch.evaluation.datasets import load_fashion

    images, _ = load_fashion("test")
    assert all(views.find_views(Image.fromarray(a).convert("RGB")) == [] for a in images[:300])
    turned = load_photo("coffee").rotate(30, Image.Resampling.BICUBIC, expand=True)
    side = views.MIN_VIEW_SIDE
    small = turned.resize((side - 1, round((side - 1) * turned.height / turned.width)))
    assert views.find_views(small) == []
    above = turned.resize((round(2 * side * turned.width / turned.height), 2 * side))
    assert [view.kind for view in views.find_views(above)] == ["straightened"]


@pytest.mark.parametrize("name", [n for n in PHOTO_NAMES if n != "horse"])
def test_photos_without_outlined_lettering_are_not_uncaptioned(name: str) -> None:
    """Every sample photo, `page` and `text` (dark print on paper, no outline) included;
    the phantom's white rings on black were taken for lettering when a light pixel merely
    next to a dark one counted. The `horse` is a black silhouette on white whose gaps
    between legs are as narrow as a bold letter's stroke: the pattern itself, a view (a
    forward pass) that Search takes only if it scores above the whole image plus a margin."""
    assert views.find_captions(load_photo(name)) is None


@pytest.mark.parametrize("name", ["hubble_deep_field", "coins", "grass"])
def test_light_next_to_dark_is_not_lettering(name: str) -> None:
    """Brightened by 40% (an easy edit), these photos have light pixels next to dark ones
    over more than 1% of the probe (stars, coins' rims, blades), which was enough for a
    caption view, a forward pass for nothing: only the fill of a stroke with its outline
    on both sides counts now (MIN_CAPTION_SHARE)."""
    image = ImageEnhance.Brightness(load_photo(name)).enhance(1.4)
    assert views.find_captions(image) is None


def _bold_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans Bold, as matplotlib ships it (no system font needed)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
@pytest.mark.parametrize("share", [6, 8, 10])
def test_bold_captions_are_found(name: str, share: int) -> None:
    """Meme captions are bold (Impact): white strokes up to about 12 px wide on the
    probe between their black outlines. Strokes held to 3 px found these in 12-46% of
    photos; the fill counts up to _LIGHT_STROKE px from the outline on both sides."""
    photo = load_photo(name)
    image = photo.copy()
    size = image.height // share
    draw = ImageDraw.Draw(image)
    for line, words in enumerate(["WHEN YOU SEE IT", "NOBODY:"]):
        draw.text((image.width // 12, round(image.height * (0.1 + 0.6 * line))), words,
                  fill="white", font=_bold_font(size), stroke_width=max(1, size // 12),
                  stroke_fill="black")  # fmt: skip
    view = views.find_captions(image)
    assert view is not None
    assert view.kind == "uncaptioned"


def test_a_strokes_fill_is_enclosed_and_an_edge_is_not() -> None:
    outline = np.zeros((12, 12), bool)
    outline[:, 3] = outline[:, 7] = True  # a vertical stroke's outline, 3 px of fill between
    fill = np.zeros((12, 12), bool)
    fill[:, 4:7] = True
    assert views._enclosed(fill, outline, 3)[:, 4:7].all()
    assert not views._enclosed(fill, outline, 2)[:, 6].any()  # outline 3 px away on one side
    # Light over one half, dark over the other (a bright sky over a dark roof): not enclosed.
    dark = np.zeros((12, 12), bool)
    dark[6:] = True
    assert not views._enclosed(~dark, dark, 3).any()
    # A horizontal stroke: 3 rows of light between dark ones, enclosed from above and below.
    band = np.zeros((12, 12), bool)
    band[4:7] = True
    assert views._enclosed(band, ~band, 3)[4:7].all()


def test_strokes_without_lettering_next_to_them_are_no_caption() -> None:
    """Light columns with dark ones 3 px away on both sides, grey between: the strokes' fill
    counts (the outline within _DARK_STROKE px), but no light pixel is within _OUTLINE px of a
    dark one, so there is nothing to paint over: no view (it raised on the empty mask)."""
    columns = np.tile(np.array([0, 128, 128, 255, 128, 128], np.uint8), 11)[:64]
    image = Image.fromarray(np.repeat(np.tile(columns, (64, 1))[:, :, None], 3, axis=2))
    assert views.find_captions(image) is None


@pytest.fixture(scope="module")
async def channel(embedder_server: EmbedderServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{embedder_server.port}") as channel:
        yield channel


def _unit(values: object) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float32)  # type: ignore[call-overload]


async def test_embed_returns_views_that_find_the_original(channel) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    pasted, box = screenshot("astronaut", "coffee", 0.4, (0.3, 0.6))
    images = [
        encode(load_photo("astronaut"), "PNG"),
        encode(pasted, "JPEG", quality=90),
        encode(load_photo("coffee").rotate(30, Image.Resampling.BICUBIC, expand=True), "PNG"),
        encode(load_photo("coffee"), "PNG"),
        encode(captioned("rocket", 3), "JPEG", quality=90),
        encode(load_photo("rocket"), "PNG"),
    ]
    reply = await stub.Embed(embedder_pb2.EmbedRequest(images=images, query_views=True))
    original, screen, turned, coffee, meme, rocket = reply.embeddings
    assert [v.kind for v in original.views] == []
    assert [v.kind for v in screen.views] == ["inset"]
    inset = screen.views[0]
    assert np.allclose(list(inset.box), box, atol=0.02)
    assert inset.angle_degrees == 0
    assert views.MIN_INSET_SCORE <= inset.score <= 1
    target = _unit(original.vector)
    assert float(_unit(inset.vector) @ target) > 0.85 > float(_unit(screen.vector) @ target)
    assert [v.kind for v in turned.views] == ["straightened"]
    straight = turned.views[0]
    assert straight.angle_degrees == pytest.approx(30, abs=1)
    assert list(straight.box) == [0, 0, 1, 1]
    assert float(_unit(straight.vector) @ _unit(coffee.vector)) > max(
        0.9, float(_unit(turned.vector) @ _unit(coffee.vector))
    )
    assert [v.kind for v in meme.views] == ["uncaptioned"]
    clean = float(_unit(meme.views[0].vector) @ _unit(rocket.vector))
    assert clean > max(0.9, float(_unit(meme.vector) @ _unit(rocket.vector)) + 0.03)
    for vector in (inset.vector, straight.vector, meme.views[0].vector):
        assert np.linalg.norm(_unit(vector)) == pytest.approx(1, abs=1e-4)

    # The detectors' identity: a digest of their code, in GetModel and in replies with views.
    identity = (await stub.GetModel(embedder_pb2.GetModelRequest())).query_views
    assert identity == views.detectors_identity()
    assert reply.query_views == identity

    # Without the flag the same images get their whole-image vectors only, unchanged.
    plain = await stub.Embed(embedder_pb2.EmbedRequest(images=images))
    assert plain.query_views == ""
    assert all(not e.views for e in plain.embeddings)
    for with_views, without in zip(reply.embeddings, plain.embeddings, strict=True):
        assert np.allclose(list(with_views.vector), list(without.vector), atol=1e-5)


def test_the_detectors_identity_is_a_digest_of_their_code() -> None:
    code = Path(views.__file__).read_bytes()
    assert views.detectors_identity() == hashlib.sha256(code).hexdigest()[:16]


async def test_an_embedder_set_not_to_look_returns_no_views() -> None:
    server = EmbedderServer(embedder_test_settings(query_views=False))
    await server.start()
    try:
        await server.load_model()
        pasted, _ = screenshot("astronaut", "coffee", 0.4, (0.3, 0.6))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            reply = await stub.Embed(
                embedder_pb2.EmbedRequest(images=[encode(pasted, "PNG")], query_views=True)
            )
            model = await stub.GetModel(embedder_pb2.GetModelRequest())
        assert len(reply.embeddings) == 1
        assert not reply.embeddings[0].views
        # No detectors looked: Search keys this "no views" apart from a looking Embedder's.
        assert reply.query_views == model.query_views == ""
    finally:
        await server.stop(drain_delay_s=0, grace_s=1)


def odd_but_valid_images() -> dict[str, bytes]:
    """The odd-image families of tests/embedder/odd_images.py, plus tiny and extreme ones."""
    picture = odd_images.upright_picture()
    cases = {f"strip-{name}": odd_images.strip_image(name) for name in odd_images.STRIP_FAMILY}
    cases |= {f"meta-{name}": make(picture) for name, make in odd_images.METADATA_FAMILY.items()}
    cases |= {
        f"range-{name}": make(odd_images.gray_ramp())
        for name, make in odd_images.HIGH_RANGE_FAMILY.items()
    }
    cases |= {
        "1x1": encode(Image.new("RGB", (1, 1), "black"), "PNG"),
        "3x3-black": encode(Image.new("RGB", (3, 3), "black"), "PNG"),
        "black-640x480": encode(Image.new("RGB", (640, 480), "black"), "PNG"),
        "white-640x480": encode(Image.new("RGB", (640, 480), "white"), "PNG"),
        "grey-rgba": encode(Image.new("RGBA", (300, 200), (90, 90, 90, 0)), "PNG"),
        "checkerboard": encode(
            Image.fromarray(((np.indices((480, 640)).sum(0) // 16) % 2 * 255).astype(np.uint8)),
            "PNG",
        ),
        "frame-in-frame": encode(
            ImageOps.expand(
                ImageOps.expand(Image.new("RGB", (200, 150), "red"), 40, "black"), 40, "white"
            ),
            "PNG",
        ),
    }
    return cases


@pytest.mark.parametrize(("name", "data"), list(odd_but_valid_images().items()))
def test_views_of_odd_images_never_fail_the_image(name: str, data: bytes) -> None:
    """Whatever the Preprocessor accepts, looking for views accepts too, at bounded cost."""
    preprocessor = Preprocessor(224, 256, 10**8, max_aspect_ratio=8.0, crop="full",
                                trim_borders=True)  # fmt: skip
    whole = preprocessor(data, 0)
    array, found = preprocessor.with_views(data, 0)
    assert np.array_equal(array, whole)
    for view, view_array in found:
        assert view.kind in {"inset", "straightened", "uncaptioned"}
        assert view_array.shape == (224, 224, 3)
        assert all(0 <= v <= 1 for v in view.box)


def test_a_failing_detector_costs_its_view_not_the_query(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A detector bug stands in for any unforeseen failure (a fake, since none is known)."""

    def broken(image: Image.Image) -> None:
        raise ValueError("a detector bug")

    monkeypatch.setattr(views, "find_inset", broken)
    image, _ = screenshot("astronaut", "coffee", 0.4, (0.3, 0.6))
    rotated_copy = load_photo("coffee").rotate(30, expand=True)
    assert views.find_views(image) == []
    assert [v.kind for v in views.find_views(rotated_copy)] == ["straightened"]
    assert "detector broken failed" in caplog.text


def test_a_large_picture_is_searched_for_views_on_a_bounded_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within the Embedder's pixel limit (40 MP by default) a detector used to copy the
    whole picture before shrinking it, and the inset was cut from it at full size: each
    copy the size of the picture. Now no picture made on the way is larger than
    _WORK_SIDE px a side, and the inset is still found where it was pasted."""
    pasted, box = screenshot("astronaut", "coffee", 0.4, (0.3, 0.6))
    large = pasted.resize((6400, 4000), Image.Resampling.NEAREST)
    made: list[tuple[str, int, int]] = []
    for name in ("copy", "crop", "convert", "reduce", "resize", "rotate"):
        original = getattr(Image.Image, name)

        def spy(self: Image.Image, *args, _original=original, _name=name, **kwargs):
            result = _original(self, *args, **kwargs)
            made.append((_name, *result.size))
            return result

        monkeypatch.setattr(Image.Image, name, spy)
    found = views.find_views(large)
    monkeypatch.undo()
    assert [view.kind for view in found] == ["inset"]
    assert np.allclose(found[0].box, box, atol=0.02)
    assert max(width * height for _, width, height in made) <= views._WORK_SIDE**2, made
    assert min(found[0].image.size) > 224


def _broken_view(**changes: object) -> views.View:
    fields: dict[str, object] = {
        "kind": "inset",
        "box": (0.1, 0.1, 0.5, 0.5),
        "angle_degrees": 0.0,
        "score": 0.9,
        "image": Image.new("RGB", (64, 64), "red"),
    }
    return views.View(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "view",
    [
        _broken_view(box=(0.5, 0.1, 0.5, 0.5)),  # no width
        _broken_view(box=(-0.2, 0.1, 0.5, 0.5)),
        _broken_view(box=(0.1, 0.1, 0.5, 1.3)),
        _broken_view(box=(float("nan"), 0.1, 0.5, 0.5)),
        _broken_view(score=float("nan")),
        _broken_view(score=1.5),
        _broken_view(angle_degrees=float("inf")),
        _broken_view(image=Image.new("RGB", (0, 0))),
    ],
    ids=["empty-box", "box-left", "box-below", "nan-box", "nan-score", "score", "angle", "empty"],
)
def test_a_malformed_view_costs_itself_not_the_query(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, view: views.View
) -> None:
    """No input is known to make a detector break View's contract (the detectors were
    fuzzed with 1,900 random pictures); a fake detector stands in for a future bug. A
    0 x 0 picture was the worst: the model input made of it is a black square."""
    monkeypatch.setattr(views, "find_inset", lambda image: view)
    picture = load_photo("coffee").rotate(30, expand=True)
    assert [found.kind for found in views.find_views(picture)] == ["straightened"]
    assert "malformed view" in caplog.text


@pytest.mark.parametrize("image", [Image.new("L", (64, 64)), None], ids=["grey", "not-a-picture"])
def test_a_view_without_a_model_input_of_the_images_shape_is_skipped(
    monkeypatch: pytest.MonkeyPatch, image: Image.Image | None
) -> None:
    """A view's model input that cannot be made, or is not (size, size, 3) like the
    image's (it would fail the whole batch it is stacked into), costs only that view."""
    monkeypatch.setattr(views, "find_inset", lambda found: _broken_view(image=image))
    # As if it were well formed (raising=False: also before `_malformed` existed).
    monkeypatch.setattr(views, "_malformed", lambda view: "", raising=False)
    preprocessor = Preprocessor(224, 256, 10**8, crop="full")
    data = encode(load_photo("coffee").rotate(30, expand=True), "PNG")
    array, found = preprocessor.with_views(data, 0)
    assert np.array_equal(array, preprocessor(data, 0))
    assert [(view.kind, model_input.shape) for view, model_input in found] == [
        ("straightened", (224, 224, 3))
    ]


async def test_admission_and_the_memory_bound_count_the_views_model_inputs(
    channel, embedder_server: EmbedderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each view is one more model input held between decoding and its result: a request
    of max_images_per_request images with query_views held up to 4 times the inputs that
    admission and the stated memory bound allowed for."""
    admission = embedder_server.servicer._ready().admission
    counts: list[int] = []
    admit = admission.admit

    def spy(count: int, deadline: float | None, nbytes: int = 0):
        counts.append(count)
        return admit(count, deadline, nbytes)

    monkeypatch.setattr(admission, "admit", spy)
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    images = [encode(load_photo("coffee"), "PNG")] * 2
    await stub.Embed(embedder_pb2.EmbedRequest(images=images, query_views=True))
    await stub.Embed(embedder_pb2.EmbedRequest(images=images))
    assert counts == [2 * (1 + views.MAX_VIEWS_PER_IMAGE), 2]

    with_views = embedder_test_settings(query_views=True)
    without = embedder_test_settings(query_views=False)
    extra = with_views.memory_bound_above_base() - without.memory_bound_above_base()
    input_bytes = with_views.input_size**2 * 3
    assert extra == with_views.max_images_per_request * views.MAX_VIEWS_PER_IMAGE * input_bytes


async def test_the_whole_image_is_embedded_while_its_views_are_looked_for(
    channel, embedder_server: EmbedderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detectors' time overlaps the whole image's forward pass: the whole image is
    queued for the model before the (here slowed, so the order is certain) detectors
    finish, and its vector is the one a plain Embed gives."""
    import time

    from imgsearch_embedder import preprocess

    batcher = embedder_server.servicer._ready().batcher
    submitted: list[tuple[float, int]] = []
    submit = batcher.submit

    async def spy(images, deadline):
        submitted.append((time.monotonic(), len(images)))
        return await submit(images, deadline)

    finished: list[float] = []
    real_find_views = views.find_views

    def slow_find_views(image: Image.Image) -> list[views.View]:
        time.sleep(0.3)  # detectors slower than a forward pass, as on a loaded CPU
        found = real_find_views(image)
        finished.append(time.monotonic())
        return found

    monkeypatch.setattr(batcher, "submit", spy)
    monkeypatch.setattr(preprocess, "find_views", slow_find_views)
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    turned = encode(load_photo("coffee").rotate(30, Image.Resampling.BICUBIC, expand=True), "PNG")
    reply = await stub.Embed(embedder_pb2.EmbedRequest(images=[turned], query_views=True))
    assert [view.kind for view in reply.embeddings[0].views] == ["straightened"]
    assert [count for _, count in submitted] == [1, 1]  # the whole image, then its view
    assert submitted[0][0] < finished[0] <= submitted[1][0]
    plain = await stub.Embed(embedder_pb2.EmbedRequest(images=[turned]))
    assert np.allclose(
        list(reply.embeddings[0].vector), list(plain.embeddings[0].vector), atol=1e-5
    )


async def test_a_bad_image_among_view_queries_fails_the_call_and_leaves_no_work_behind(
    channel, embedder_server: EmbedderServer
) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    good = encode(load_photo("coffee"), "PNG")
    for bad in (b"not an image", good[: len(good) // 3], b""):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(embedder_pb2.EmbedRequest(images=[good, bad, good], query_views=True))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "images[1]" in (info.value.details() or "")
    reply = await stub.Embed(embedder_pb2.EmbedRequest(images=[good], query_views=True))
    assert len(reply.embeddings) == 1
    admission = embedder_server.servicer._ready().admission
    assert (admission.in_flight, admission.pending_bytes) == (0, 0)


@pytest.mark.parametrize("radius", [1, 3, 9, 40])
def test_window_sums_agree_with_summing_each_window(radius: int) -> None:
    """The detectors' running-sum helpers against the definition, windows clipped at the
    edges: `_window_sum` along either axis, `_box_sums_at` and `_grow` on a 2-D grid."""
    rng = np.random.default_rng(radius)
    values = rng.integers(0, 256, (23, 31))
    mask = rng.random((23, 31)) < 0.05

    def window(at: int, n: int) -> slice:
        return slice(max(at - radius, 0), min(at + radius + 1, n))

    rows, cols = np.nonzero(np.ones_like(mask))
    sums, counts = views._box_sums_at(views._integral(values), rows, cols, radius)
    grown = views._grow(mask, radius)
    for row, col, total, count in zip(rows, cols, sums, counts, strict=True):
        box = (window(row, 23), window(col, 31))
        assert total == values[box].sum()
        assert count == values[box].size
        assert grown[row, col] == mask[box].any()
    across = views._window_sum(values, radius, 1)
    down = views._window_sum(values.astype(np.float64), radius, 0)
    for row in range(23):
        for col in range(31):
            assert across[row, col] == values[row, window(col, 31)].sum()
            assert down[row, col] == pytest.approx(values[window(row, 23), col].sum())
