"""Real image files made with Pillow for the image tests, as bytes: every common format,
rotated, CMYK and 16-bit pictures, and broken or hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache
from pathlib import Path

import pillow_heif
from PIL import ExifTags, Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def picture(width: int, height: int, *, alpha: bool = False) -> Image.Image:
    """A smooth colour picture (gradients compress like photos do); with ``alpha``, its
    corners fade to fully transparent while the centre stays opaque."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (across, down, Image.new("L", (width, height), 128)))
    if alpha:
        # radial_gradient is 0 in the centre and 255 beyond the corners' circle.
        fade = Image.radial_gradient("L").resize((width, height))
        image.putalpha(fade.point(lambda value: 255 if value < 128 else 0))
    return image


def png(width: int, height: int, *, alpha: bool = False) -> bytes:
    """An RGB (or RGBA, partly transparent) PNG."""
    return _save(picture(width, height, alpha=alpha), "PNG")


def noisy_png(width: int, height: int) -> bytes:
    """An RGB PNG of random noise, which compresses badly in any format."""
    bands = [Image.effect_noise((width, height), 100) for _ in range(3)]
    return _save(Image.merge("RGB", bands), "PNG")


def stripes_png(width: int, height: int) -> bytes:
    """An RGB PNG of one-pixel black and white stripes: tiny as PNG, costly as JPEG."""
    stripe = Image.new("RGB", (2, height), "black")
    stripe.paste((255, 255, 255), (1, 0, 2, height))
    image = Image.new("RGB", (width, height))
    for left in range(0, width, 2):
        image.paste(stripe, (left, 0))
    return _save(image, "PNG")


def palette_png(width: int, height: int) -> bytes:
    """A palette (mode P) PNG whose colour 0 is transparent."""
    image = picture(width, height).quantize(16)
    return _save(image, "PNG", transparency=0)


def grey16_png(width: int, height: int, value: int) -> bytes:
    """A 16-bit greyscale PNG, every pixel ``value`` (0 to 65535)."""
    return _save(Image.new("I;16", (width, height), value), "PNG")


def jpeg(width: int, height: int) -> bytes:
    """An RGB JPEG."""
    return _save(picture(width, height), "JPEG", quality=90)


def cmyk_jpeg(width: int, height: int) -> bytes:
    """A CMYK JPEG of pure red (no cyan, full magenta and yellow)."""
    return _save(Image.new("CMYK", (width, height), (0, 255, 255, 0)), "JPEG", quality=95)


def jpeg_with_exif_orientation(orientation: int, width: int = 120, height: int = 80) -> bytes:
    """A JPEG stored ``width`` by ``height``, left half red and right half blue, whose EXIF
    says how to turn it for display (6: rotate 90° clockwise, so red ends up on top)."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return _save(image, "JPEG", quality=95, exif=exif)


def webp(width: int, height: int, *, alpha: bool = False) -> bytes:
    """A lossy WebP."""
    return _save(picture(width, height, alpha=alpha), "WEBP", quality=90)


def bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP."""
    return _save(picture(width, height), "BMP")


def tiff(width: int, height: int, *, alpha: bool = False) -> bytes:
    """An uncompressed TIFF."""
    return _save(picture(width, height, alpha=alpha), "TIFF")


def gif(width: int, height: int, *, animated: bool = False) -> bytes:
    """A GIF; ``animated`` gives three frames, the first one red."""
    if not animated:
        return _save(picture(width, height).convert("P"), "GIF")
    frames = [Image.new("RGB", (width, height), colour) for colour in (RED, BLUE, (0, 255, 0))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def mpo(width: int, height: int) -> bytes:
    """A multi-picture JPEG, as some cameras write: a red picture, then a blue one."""
    first, second = (Image.new("RGB", (width, height), colour) for colour in (RED, BLUE))
    return _save(first, "MPO", save_all=True, append_images=[second])


def ico(width: int, height: int) -> bytes:
    """A Windows icon: Pillow reads it, but it is not a format the bot takes."""
    return _save(picture(width, height), "ICO", sizes=[(width, height)])


@cache
def can_write_heic() -> bool:
    """Whether this pillow-heif build has an HEVC encoder (some builds only decode)."""
    return bool(pillow_heif.libheif_info().get("HEIF"))


def heic(width: int, height: int) -> bytes:
    """An HEIC picture, as iPhones send (only when ``can_write_heic()``)."""
    pillow_heif.register_heif_opener()
    return _save(picture(width, height), "HEIF", quality=90)


def corrupt() -> bytes:
    """A PNG cut off in the middle of its pixel data."""
    whole = png(64, 64)
    return whole[: len(whole) // 2]


def huge_dimensions(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` by ``height`` pixels (a decompression bomb's
    disguise): the IHDR chunk of a 1 by 1 PNG rewritten, with a valid checksum."""
    original = png(1, 1)
    start = 8  # after the PNG signature: length (4), b"IHDR" (4), 13 bytes of data, CRC (4)
    assert original[start + 4 : start + 8] == b"IHDR"
    data = struct.pack(">II", width, height) + original[start + 16 : start + 21]
    chunk = struct.pack(">I", 13) + b"IHDR" + data + struct.pack(">I", zlib.crc32(b"IHDR" + data))
    return original[:start] + chunk + original[start + 25 :]


def _save(image: Image.Image, format_id: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format_id, **options)
    return out.getvalue()


def dall_e_server_models(directory: Path) -> Path:
    """A models file (``SWITCHBOARD_MODELS_FILE``) for an OpenAI-compatible server that still
    serves DALL-E 3, which OpenAI shut down on 2026-05-12: the one image model that answers
    with a revised prompt, so the tests can see it shown."""
    models = directory / "models.toml"
    models.write_text('[image_models."dall-e-3"]\nshutdown = 2100-01-01\n', encoding="utf-8")
    return models
