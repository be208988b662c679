"""Pictures with Pillow: checked, upright and small enough for OpenAI vision, a small copy for
conversation history, and a PNG for the image edit API.

The functions are synchronous and CPU-bound; the engine runs them with ``asyncio.to_thread``.
Only the formats named in the error message are opened (no EPS, PDF or other decoders).
``core.media.pillow_pictures`` is the port on these functions; it imports this module (and
so Pillow) with the first picture.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import ExifTags, Image, ImageChops, ImageFile, ImageOps

from core.errors import MediaTooLarge, UnsupportedMedia
from core.media.ports import PreparedImage

_UNREADABLE = (
    "I couldn't read that picture. Please send a PNG, JPEG, WebP, GIF, HEIC, BMP or TIFF image."
)
# Pillow format ids. JPEG includes the multi-picture JPEGs (MPO) some cameras write.
_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
# Formats OpenAI vision takes as they are, in the modes every decoder reads.
_PASS_THROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_PASS_THROUGH_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
# Modes whose ICC profile (if any) describes RGB colours, so it stays valid in RGB(A).
_RGB_MODES = frozenset({"P", "PA", "RGB", "RGBA", "RGBX"})
_WHITE = (255, 255, 255, 255)
_MEGABYTE = 1024 * 1024


def prepare_image(
    data: bytes,
    *,
    max_input_bytes: int = 20 * _MEGABYTE,
    max_side: int = 2048,
    max_pixels: int = 50_000_000,
) -> PreparedImage:
    """Check and convert a picture the user sent into one OpenAI vision takes.

    A PNG, JPEG, WebP or still GIF that already fits ``max_side`` and needs no EXIF rotation
    is returned byte for byte. Anything else (HEIC, BMP, TIFF, animations, unusual modes,
    big or rotated pictures) is turned upright, scaled to fit ``max_side`` square and written
    as PNG if it has transparency, else as JPEG (quality 90), without its metadata.

    Raises ``MediaTooLarge`` over ``max_input_bytes`` or ``max_pixels`` (checked from the
    header, before decoding) and ``UnsupportedMedia`` for anything that does not decode.
    """
    if len(data) > max_input_bytes:
        raise MediaTooLarge(
            f"That picture is too large ({_megabytes(len(data), up=True)}); "
            f"the limit is {_megabytes(max_input_bytes, up=False)}."
        )
    with _reading(max_pixels), _open(data) as image:
        if image.width * image.height > max_pixels:
            raise MediaTooLarge(_too_many_pixels(max_pixels))
        if _passes_through(image, max_side):
            image.load()  # decoding in full is the only proof the file is whole
            return PreparedImage(data, _PASS_THROUGH[str(image.format)], *image.size)
        # Lets JPEG decode at a reduced scale (never below the size wanted) to save memory.
        image.draft(None, (max_side, max_side))
        upright = _eight_bit(ImageOps.exif_transpose(image))
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if _is_transparent(upright):
            return _png(upright)
        return _jpeg(upright, quality=90)


def history_copy(
    image: PreparedImage, *, max_side: int = 512, quality: int = 80, max_bytes: int = 256 * 1024
) -> PreparedImage:
    """A small copy of ``image`` to keep in conversation history.

    ``image`` itself comes back when it already fits ``max_side`` and ``max_bytes``, or when
    the copy would not be smaller. Otherwise the copy is a JPEG fitting ``max_side`` square,
    transparency flattened onto white (history only needs to show what the picture was,
    and JPEG keeps it small). With the defaults a copy is at most about 200 KB, under
    ``max_bytes``, so copying a copy returns it unchanged.
    """
    fits = max(image.width, image.height) <= max_side
    if fits and len(image.data) <= max_bytes:
        return image
    with _reading(), _open(image.data) as source:
        source.draft(None, (max_side, max_side))
        small = _eight_bit(ImageOps.exif_transpose(source))
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    copy = _jpeg(_on_white(small), quality=quality)
    if fits and len(copy.data) >= len(image.data):
        return image
    return copy


def for_edit(image: PreparedImage, *, max_bytes: int = 4 * _MEGABYTE) -> PreparedImage:
    """``image`` as an RGBA PNG of at most ``max_bytes``, as the image edit API wants it.

    An RGBA PNG already under the limit comes back unchanged; otherwise the picture is
    re-encoded and, if needed, scaled down (keeping its aspect ratio) until it fits.
    """
    with _reading(), _open(image.data) as source:
        if source.format == "PNG" and source.mode == "RGBA" and len(image.data) <= max_bytes:
            return image
        rgba = ImageOps.exif_transpose(source).convert("RGBA")
    result = _png(rgba)
    while len(result.data) > max_bytes:
        # PNG size grows roughly with the pixel count; undershoot a little to converge fast.
        factor = min(0.9, math.sqrt(max_bytes / len(result.data)))
        size = (max(1, int(result.width * factor)), max(1, int(result.height * factor)))
        if size == (result.width, result.height):
            raise MediaTooLarge(
                f"That picture cannot be made smaller than {_megabytes(max_bytes, up=False)} "
                "for editing."
            )
        result = _png(rgba.resize(size, Image.Resampling.LANCZOS))
    return result


@functools.cache
def _register_heif_opener() -> None:
    """Teach Pillow to open HEIC/HEIF, once (the registration is global to Pillow)."""
    import pillow_heif  # its decoders cost ~7 MB resident: loaded with the first picture

    pillow_heif.register_heif_opener()


def _open(data: bytes) -> ImageFile.ImageFile:
    """Open ``data`` lazily: only the header is read until the pixels are needed."""
    _register_heif_opener()
    return Image.open(io.BytesIO(data), formats=_FORMATS)


@contextmanager
def _reading(max_pixels: int | None = None) -> Iterator[None]:
    """Turn Pillow's many decoding failures into the user-facing errors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own bomb check; it fires only beyond its MAX_IMAGE_PIXELS. The warning is
        # caught too because it is raised where warnings are errors (as in the tests).
        raise MediaTooLarge(_too_many_pixels(max_pixels)) from error
    # Malformed files surface as any of these, depending on the format's decoder.
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as error:
        raise UnsupportedMedia(_UNREADABLE) from error


def _passes_through(image: ImageFile.ImageFile, max_side: int) -> bool:
    """Whether OpenAI can take the file exactly as it is."""
    return (
        image.format in _PASS_THROUGH
        and image.mode in _PASS_THROUGH_MODES
        and max(image.size) <= max_side
        and not getattr(image, "is_animated", False)
        and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
    )


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` in L, RGB or RGBA, the modes both PNG and JPEG write directly."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Wide greyscale: scale 16 bits down to 8 (a plain convert would clip to white).
        wide = image.point(lambda value: value / 257) if image.mode != "F" else image
        return _converted(wide, "L")
    if "A" in image.getbands() or "transparency" in image.info:
        return _converted(image, "RGBA")
    if image.mode in ("L", "RGB"):
        return image
    return _converted(image, "L" if image.mode == "1" else "RGB")


def _converted(image: Image.Image, mode: str) -> Image.Image:
    """``image`` converted to ``mode``, dropping an ICC profile made for other colours."""
    converted = image.convert(mode)
    if not (image.mode in _RGB_MODES and mode in _RGB_MODES):
        converted.info.pop("icc_profile", None)
    return converted


def _is_transparent(image: Image.Image) -> bool:
    """Whether any pixel of ``image`` is not fully opaque."""
    if image.mode != "RGBA":
        return False
    return ImageChops.invert(image.getchannel("A")).getbbox() is not None


def _on_white(image: Image.Image) -> Image.Image:
    """``image`` with any transparency flattened onto a white background."""
    if image.mode != "RGBA":
        return image
    background = Image.new("RGBA", image.size, _WHITE)
    flat = Image.alpha_composite(background, image).convert("RGB")
    flat.info = dict(image.info)
    return flat


def _png(image: Image.Image) -> PreparedImage:
    """``image`` (L, RGB or RGBA) written as PNG, keeping only its colour profile."""
    return _encoded(image, "PNG", "image/png")


def _jpeg(image: Image.Image, *, quality: int) -> PreparedImage:
    """``image`` (L, RGB or RGBA) written as JPEG, any alpha dropped."""
    opaque = image.convert("RGB") if image.mode == "RGBA" else image
    return _encoded(opaque, "JPEG", "image/jpeg", quality=quality, optimize=True)


def _encoded(
    image: Image.Image, format_id: str, mime_type: str, **options: object
) -> PreparedImage:
    out = io.BytesIO()
    # Only what is passed here is written: no EXIF (it may hold a location), text or XMP.
    image.save(out, format_id, icc_profile=image.info.get("icc_profile"), **options)
    return PreparedImage(out.getvalue(), mime_type, image.width, image.height)


def _megabytes(size: int, *, up: bool) -> str:
    """``size`` bytes as "N MB" to one decimal, rounded up for sizes and down for limits."""
    tenths = size * 10 / _MEGABYTE
    rounded = (math.ceil(tenths) if up else math.floor(tenths)) / 10
    return f"{rounded:g} MB"


def _too_many_pixels(max_pixels: int | None) -> str:
    if max_pixels is None:
        return "That picture has too many pixels to process."
    return (
        "That picture has too many pixels to process; "
        f"the limit is {max_pixels / 1_000_000:g} megapixels."
    )
