"""Stand-ins for the media APIs in demo mode (``--demo``): no network, no key, no cost.

Transcripts say how long the audio was, speech is a generated tone, drawings are simple
Pillow pictures labelled "demo", and ``describe_picture`` tells what can be computed from a
picture's pixels (size, format, main colour) for the demo model to answer with. Pillow is
imported by the functions that draw or look, so a demo that is sent no picture never loads it.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import textwrap
import wave
import zlib
from typing import Any

from core.media.ports import AudioPart, GeneratedImage, PreparedImage, Speech, Transcript

TONE_RATE = 16_000
SECONDS_PER_WORD = 0.25
MAX_TONE_SECONDS = 20.0

_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 40),
    "green": (50, 170, 70),
    "cyan": (40, 200, 210),
    "blue": (40, 80, 210),
    "purple": (130, 60, 180),
    "pink": (240, 130, 180),
    "brown": (120, 80, 40),
}


class DemoTranscriber:
    """The ``Transcriber`` port without speech recognition: a labelled placeholder."""

    async def transcribe(self, part: AudioPart, *, model: str) -> Transcript:
        """Say how long ``part`` is instead of what was said in it."""
        return Transcript(
            f"(demo transcript: {part.seconds:.1f} s of audio)", billed_seconds=part.seconds
        )


class DemoSpeech:
    """The ``SpeechSynthesizer`` port as a tone: one beep per word, as WAV, which the audio
    converter turns into an Ogg/Opus voice note like any speech."""

    @property
    def max_input_chars(self) -> int:
        """The longest text one call takes."""
        return 4096

    async def speak(self, text: str, *, model: str, voice: str, speed: float) -> Speech:
        """A tone as long as reading ``text`` would take at ``speed``."""
        return Speech(await asyncio.to_thread(_tone, len(text.split()), speed))


class DemoImages:
    """The ``ImageGenerator`` port as simple drawings: the colour the prompt names (else
    one chosen from its words), a sun and the prompt written on it."""

    async def generate(self, prompt: str, *, model: str, size: str, quality: str) -> GeneratedImage:
        """Draw ``prompt``."""
        return await asyncio.to_thread(_draw, prompt, _size(size), None)

    async def edit(
        self, image: PreparedImage, prompt: str, *, model: str, size: str, quality: str
    ) -> GeneratedImage:
        """Tint ``image`` and write ``prompt`` on it."""
        return await asyncio.to_thread(_draw, prompt, _size(size), image)


def describe_picture(image: PreparedImage) -> str:
    """What the pixels say: size, format, orientation and main colour (blocking: Pillow)."""
    from PIL import Image

    with Image.open(io.BytesIO(image.data)) as opened:
        small = opened.convert("RGB")
        small.thumbnail((64, 64))
    palette = small.quantize(colors=6)
    # A palette image's colours are its palette indexes, with how many pixels use each.
    counts: list[tuple[int, Any]] = sorted(palette.getcolors() or [], reverse=True)
    index = int(counts[0][1]) if counts else 0
    colours = palette.getpalette() or [0, 0, 0]
    rgb = (colours[index * 3], colours[index * 3 + 1], colours[index * 3 + 2])
    shape = (
        "square"
        if image.width == image.height
        else ("landscape" if image.width > image.height else "portrait")
    )
    kind = image.mime_type.removeprefix("image/").upper()
    return (
        f"a {shape} {kind} picture of {image.width}x{image.height} pixels, mostly "
        f"{_colour_name(rgb)} (#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x})"
    )


def _colour_name(rgb: tuple[int, int, int]) -> str:
    def distance(name: str) -> int:
        return sum((a - b) ** 2 for a, b in zip(_COLOURS[name], rgb, strict=True))

    return min(_COLOURS, key=distance)


def _size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        return 512, 512


def _draw(prompt: str, size: tuple[int, int], source: PreparedImage | None) -> GeneratedImage:
    from PIL import Image, ImageDraw

    words = prompt.lower().split()
    named = [_COLOURS[w] for w in words if w in _COLOURS]
    colour = (
        named[0] if named else list(_COLOURS.values())[zlib.crc32(prompt.encode()) % len(_COLOURS)]
    )
    if source is not None:
        with Image.open(io.BytesIO(source.data)) as opened:
            base = opened.convert("RGB").resize(size)
        picture = Image.blend(base, Image.new("RGB", size, colour), 0.35)
    else:
        picture = Image.new("RGB", size, colour)
    pen = ImageDraw.Draw(picture)
    width, height = size
    pen.ellipse((width * 0.6, height * 0.1, width * 0.85, height * 0.35), fill=(250, 230, 90))
    pen.rectangle((0, height * 0.75, width, height), fill=(40, 40, 40))
    caption = "\n".join(textwrap.wrap(f"demo: {prompt}", width=40)[:4])
    pen.multiline_text((16, height * 0.78), caption, fill=(255, 255, 255))
    data = io.BytesIO()
    picture.save(data, format="PNG")
    return GeneratedImage(
        PreparedImage(data.getvalue(), "image/png", width, height),
        revised_prompt=f"a demo drawing of {prompt}",
    )


def _tone(words: int, speed: float) -> bytes:
    """A WAV of short beeps, one per word, rising and falling like speech."""
    seconds = min(max(words, 1) * SECONDS_PER_WORD / speed, MAX_TONE_SECONDS)
    beep = SECONDS_PER_WORD / speed
    frames = bytearray()
    for n in range(int(seconds * TONE_RATE)):
        t = n / TONE_RATE
        word = int(t / beep)
        pitch = 330 + 110 * (word % 3)
        audible = (t % beep) < beep * 0.7
        sample = int(8000 * math.sin(2 * math.pi * pitch * t)) if audible else 0
        frames += struct.pack("<h", sample)
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(TONE_RATE)
        file.writeframes(bytes(frames))
    return out.getvalue()
