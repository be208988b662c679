"""``core.media.pillow_images`` on real files: what passes through untouched, what is converted
and how, and how broken, hostile and oversized pictures are turned away."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from core.errors import MediaTooLarge, UnsupportedMedia, user_message
from core.media.pillow_images import for_edit, history_copy, prepare_image
from core.media.ports import PreparedImage
from tests import make_images

UNREADABLE = (
    "I couldn't read that picture. Please send a PNG, JPEG, WebP, GIF, HEIC, BMP or TIFF image."
)
FORMAT_OF_MIME = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}


def decoded(image: PreparedImage) -> Image.Image:
    """Decode ``image``, checking that its bytes agree with its mime type and size."""
    opened = Image.open(io.BytesIO(image.data))
    opened.load()
    assert opened.format == FORMAT_OF_MIME[image.mime_type]
    assert opened.size == (image.width, image.height)
    return opened


def close(colour: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour[:3], expected, strict=True))


# --- pass-through -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime_type"),
    [
        (make_images.png(640, 480), "image/png"),
        (make_images.png(300, 200, alpha=True), "image/png"),
        (make_images.palette_png(100, 80), "image/png"),
        (make_images.jpeg(2048, 1024), "image/jpeg"),
        (make_images.webp(320, 240), "image/webp"),
        (make_images.gif(120, 90), "image/gif"),
    ],
    ids=["png", "png-alpha", "png-palette", "jpeg-at-limit", "webp", "gif"],
)
def test_small_common_formats_pass_through_byte_for_byte(data: bytes, mime_type: str) -> None:
    prepared = prepare_image(data)
    assert prepared.data == data
    assert prepared.mime_type == mime_type
    decoded(prepared)


def test_upright_exif_orientation_still_passes_through() -> None:
    data = make_images.jpeg_with_exif_orientation(1)
    assert prepare_image(data).data == data


# --- conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        make_images.bmp(200, 150),
        make_images.tiff(200, 150),
        make_images.gif(200, 150, animated=True),
    ],
    ids=["bmp", "tiff", "animated-gif"],
)
def test_other_formats_become_jpeg(data: bytes) -> None:
    prepared = prepare_image(data)
    assert prepared.mime_type == "image/jpeg"
    assert (prepared.width, prepared.height) == (200, 150)
    assert decoded(prepared).mode == "RGB"


def test_heic_becomes_jpeg() -> None:
    if not make_images.can_write_heic():
        pytest.skip("this pillow-heif build has no HEIF encoder to make a test file with")
    prepared = prepare_image(make_images.heic(320, 240))
    assert prepared.mime_type == "image/jpeg"
    assert (prepared.width, prepared.height) == (320, 240)
    decoded(prepared)


@pytest.mark.parametrize(
    "data", [make_images.gif(64, 64, animated=True), make_images.mpo(64, 64)], ids=["gif", "mpo"]
)
def test_multi_frame_pictures_keep_their_first_frame(data: bytes) -> None:
    prepared = prepare_image(data)
    assert prepared.mime_type == "image/jpeg"
    assert close(decoded(prepared).getpixel((32, 32)), make_images.RED)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (make_images.png(4096, 3072), (2048, 1536)),
        (make_images.jpeg(4400, 4400), (2048, 2048)),  # decoded at half scale first
        (make_images.jpeg(1000, 5000), (410, 2048)),
        (make_images.webp(2500, 100), (2048, 82)),
    ],
    ids=["png-4:3", "jpeg-square", "jpeg-tall", "webp-wide"],
)
def test_big_pictures_are_scaled_to_fit_2048_keeping_aspect(
    data: bytes, size: tuple[int, int]
) -> None:
    prepared = prepare_image(data)
    assert (prepared.width, prepared.height) == size
    assert prepared.mime_type == "image/jpeg"
    decoded(prepared)


def test_max_side_is_configurable() -> None:
    prepared = prepare_image(make_images.png(800, 400), max_side=200)
    assert (prepared.width, prepared.height) == (200, 100)


def test_exif_rotation_is_applied() -> None:
    # Stored 120 by 80, left half red; orientation 6 means "turn 90° clockwise to display".
    prepared = prepare_image(make_images.jpeg_with_exif_orientation(6, 120, 80))
    image = decoded(prepared)
    assert image.size == (80, 120)
    assert close(image.getpixel((40, 10)), make_images.RED)  # type: ignore[arg-type]
    assert close(image.getpixel((40, 110)), make_images.BLUE)  # type: ignore[arg-type]
    assert image.getexif().get(0x0112) is None  # nothing left to rotate it a second time


def test_transparent_pictures_stay_png_with_their_alpha() -> None:
    for data in (make_images.png(3000, 1500, alpha=True), make_images.tiff(60, 40, alpha=True)):
        prepared = prepare_image(data)
        assert prepared.mime_type == "image/png"
        image = decoded(prepared)
        assert image.mode == "RGBA"
        centre = image.getpixel((image.width // 2, image.height // 2))
        assert isinstance(centre, tuple)
        assert centre[3] == 255
        assert image.getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    prepared = prepare_image(make_images.cmyk_jpeg(64, 48))
    image = decoded(prepared)
    assert prepared.mime_type == "image/jpeg"
    assert image.mode == "RGB"
    assert close(image.getpixel((32, 24)), make_images.RED)  # type: ignore[arg-type]


def test_16_bit_greyscale_is_scaled_down_not_clipped() -> None:
    prepared = prepare_image(make_images.grey16_png(32, 32, 32768))
    image = decoded(prepared)
    assert prepared.mime_type == "image/jpeg"
    assert image.mode == "L"
    assert abs(image.getpixel((16, 16)) - 128) <= 2  # type: ignore[operator]


def test_conversion_drops_metadata() -> None:
    data = make_images.jpeg_with_exif_orientation(6)
    assert b"Exif" in data
    assert b"Exif" not in prepare_image(data).data


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        make_images.corrupt(),
        b"",
        b"Hello! This is a text message, not a picture.\n",
        make_images.ico(32, 32),
    ],
    ids=["truncated-png", "empty", "text", "ico"],
)
def test_unreadable_pictures_are_refused(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia) as caught:
        prepare_image(data)
    assert user_message(caught.value) == UNREADABLE


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(MediaTooLarge, match=r"^That picture is too large \(20\.1 MB\); the limit"):
        prepare_image(b"\0" * (20 * 1024 * 1024 + 50_000))
    with pytest.raises(MediaTooLarge, match=r"the limit is 0 MB\.$"):
        prepare_image(make_images.png(64, 64), max_input_bytes=100)


@pytest.mark.parametrize(
    ("width", "height"),
    [(8_000, 8_000), (10_000, 10_000), (100_000, 100_000), (1, 2**31 - 1)],
    ids=["64MP", "100MP", "10GP", "one-pixel-wide"],
)
def test_decompression_bombs_are_refused_quickly(width: int, height: int) -> None:
    bomb = make_images.huge_dimensions(width, height)
    assert len(bomb) < 100
    started = time.perf_counter()
    with pytest.raises(MediaTooLarge) as caught:
        prepare_image(bomb)
    assert time.perf_counter() - started < 1.0
    assert user_message(caught.value) == (
        "That picture has too many pixels to process; the limit is 50 megapixels."
    )


def test_max_pixels_is_configurable() -> None:
    with pytest.raises(MediaTooLarge, match=r"the limit is 0\.01 megapixels"):
        prepare_image(make_images.png(200, 100), max_pixels=10_000)


# --- history copies -----------------------------------------------------------------------


def test_history_copy_is_a_small_jpeg() -> None:
    original = prepare_image(make_images.noisy_png(1600, 1200))
    copy = history_copy(original)
    assert copy.mime_type == "image/jpeg"
    assert (copy.width, copy.height) == (512, 384)
    assert len(copy.data) < 256 * 1024
    assert len(copy.data) < len(original.data)
    decoded(copy)


def test_history_copy_flattens_transparency_onto_white() -> None:
    original = prepare_image(make_images.png(2000, 1000, alpha=True))
    copy = history_copy(original)
    image = decoded(copy)
    assert copy.mime_type == "image/jpeg"
    assert (copy.width, copy.height) == (512, 256)
    assert close(image.getpixel((0, 0)), (255, 255, 255), tolerance=8)  # type: ignore[arg-type]


def test_history_copy_keeps_small_pictures_and_copies_as_they_are() -> None:
    small = prepare_image(make_images.jpeg(400, 300))
    assert history_copy(small) is small
    copy = history_copy(prepare_image(make_images.noisy_png(1024, 1024)))
    assert history_copy(copy) is copy


def test_history_copy_is_never_bigger_than_the_picture() -> None:
    stripes = prepare_image(make_images.stripes_png(500, 500))
    assert history_copy(stripes, max_bytes=0) is stripes


# --- edits --------------------------------------------------------------------------------


def test_for_edit_gives_an_rgba_png() -> None:
    prepared = prepare_image(make_images.jpeg(640, 480))
    edit = for_edit(prepared)
    assert edit.mime_type == "image/png"
    assert (edit.width, edit.height) == (640, 480)
    assert decoded(edit).mode == "RGBA"
    assert len(edit.data) <= 4 * 1024 * 1024


def test_for_edit_keeps_an_rgba_png_that_fits() -> None:
    prepared = prepare_image(make_images.png(300, 200, alpha=True))
    assert for_edit(prepared) is prepared


def test_for_edit_scales_down_until_under_the_limit() -> None:
    prepared = prepare_image(make_images.noisy_png(1000, 500))
    assert len(prepared.data) > 1_000_000
    edit = for_edit(prepared, max_bytes=200_000)
    assert len(edit.data) <= 200_000
    assert edit.width < 1000
    assert abs(edit.width / edit.height - 2) < 0.02
    assert decoded(edit).mode == "RGBA"
