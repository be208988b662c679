"""Real audio files made with the ffmpeg bundled with imageio-ffmpeg, as bytes: tones and
pauses in the common formats (speech-like voice notes), broken and empty files, and helpers
that decode and measure what the code under test produced."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import tempfile
from array import array
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]

FFMPEG: str = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 16_000  # the rate of the PCM that ``decode`` returns
# Pauses are not digital zero but faint white noise (about -65 dBFS), like a quiet room.
_PAUSE = "anoisesrc=color=white:amplitude=0.001:seed=7:sample_rate=48000:duration={seconds}"
_TONE = "sine=frequency={frequency}:sample_rate=48000:duration={seconds}"
_PCM = ("-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1")
_ENCODERS = {
    "ogg": ("-c:a", "libopus", "-b:a", "32k", "-application", "voip", "-f", "ogg"),
    "mp3": ("-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"),
    "wav": ("-c:a", "pcm_s16le", "-f", "wav"),
    "m4a": ("-c:a", "aac", "-b:a", "64k", "-f", "ipod"),  # moov atom last: needs seeking
}

Segment = tuple[float, float]


def tone_segments(segments: Sequence[Segment], fmt: str = "ogg") -> bytes:
    """Mono 48 kHz audio of ``(frequency_hz, seconds)`` segments in order, a frequency of 0
    being a pause; as ``fmt``: "ogg" (Opus, like a voice note), "mp3", "wav" or "m4a"."""
    return _tone_segments(tuple(segments), fmt)


def speech_like(seconds: float, *, first_frequency: float = 300.0) -> tuple[Segment, ...]:
    """Segments of ``seconds`` in all: 1.6 s "words" of rising pitch, each after a 0.4 s
    pause (so every 2 s starts with a pause)."""
    segments: list[Segment] = []
    for index in range(math.ceil(seconds / 2)):
        start = 2.0 * index
        pause_end = min(start + 0.4, seconds)
        word_end = min(start + 2.0, seconds)
        segments.append((0.0, round(pause_end - start, 6)))
        if word_end > pause_end:
            segments.append((first_frequency + 40 * index, round(word_end - pause_end, 6)))
    return tuple(segments)


# A "lecture" too large for one transcription upload under ``small_upload_models``: eight
# 3 s tones, each followed by a pause to split at. The fake hears each tone as "tone<Hz>".
LECTURE_TONES = (300, 400, 500, 600, 700, 800, 900, 1000)
LECTURE_TRANSCRIPT = " ".join(f"tone{hz}" for hz in LECTURE_TONES)
LECTURE_SECONDS = len(LECTURE_TONES) * (3.0 + 0.8)


def lecture(fmt: str = "ogg") -> bytes:
    """The lecture recording as ``fmt``."""
    return tone_segments([s for hz in LECTURE_TONES for s in ((float(hz), 3.0), (0.0, 0.8))], fmt)


def small_upload_models(directory: Path) -> Path:
    """A models file (``SWITCHBOARD_MODELS_FILE``) whose transcription model takes uploads
    of at most 40 kB, so that the lecture has to be split."""
    models = directory / "models.toml"
    models.write_text(
        '[transcription_models."gpt-transcribe"]\nmax_upload_bytes = 40000\n',
        encoding="utf-8",
    )
    return models


def voice_note(seconds: float, fmt: str = "ogg") -> bytes:
    """A speech-like recording of ``seconds`` (see ``speech_like``)."""
    return tone_segments(speech_like(seconds), fmt)


@cache
def corrupt_audio() -> bytes:
    """The start of a real voice note (its Ogg headers) followed by 20 KB of garbage."""
    return voice_note(2.0)[:200] + random.Random(3).randbytes(20_000)


@cache
def empty_audio() -> bytes:
    """A valid WAV file holding no samples at all."""
    return _ffmpeg(
        "-f", "lavfi", "-i", "aevalsrc=0:sample_rate=48000:duration=0", *_ENCODERS["wav"]
    )


@cache
def silent_video() -> bytes:
    """Half a second of MP4 video with no audio stream."""
    return _ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=duration=0.5:size=64x64:rate=10"),
        *("-c:v", "mpeg4", "-f", "mp4"),
    )


def decode(data: bytes) -> array[int]:
    """``data`` decoded by ffmpeg to mono 16 kHz 16-bit samples."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "input"
        source.write_bytes(data)
        result = subprocess.run(
            [FFMPEG, "-nostdin", "-v", "error", "-i", str(source), *_PCM],
            capture_output=True,
            check=True,
        )
    samples = array("h")
    samples.frombytes(result.stdout)
    return samples


def opus_head(data: bytes) -> tuple[int, int]:
    """The channel count and input sample rate an Ogg/Opus file's header declares."""
    assert data[:4] == b"OggS", "not an Ogg file"
    head = data.find(b"OpusHead")
    assert head >= 0, "not an Opus stream"
    return data[head + 9], int.from_bytes(data[head + 12 : head + 16], "little")


def dbfs(samples: Sequence[int]) -> float:
    """The RMS level of ``samples`` in dB below full scale (-inf for digital silence)."""
    if not samples:
        raise ValueError("no samples")
    mean_square = sum(sample * sample for sample in samples) / len(samples)
    return 10 * math.log10(mean_square / 32768**2) if mean_square else -math.inf


def frequency(samples: Sequence[int]) -> float:
    """The pitch of a pure tone, from how often it crosses zero."""
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / RATE)


@cache
def _tone_segments(segments: tuple[Segment, ...], fmt: str) -> bytes:
    sources: list[str] = []
    for frequency_hz, seconds in segments:
        template = _TONE if frequency_hz else _PAUSE
        sources += ["-f", "lavfi", "-i", template.format(frequency=frequency_hz, seconds=seconds)]
    joined = "".join(f"[{index}:a]" for index in range(len(segments)))
    return _ffmpeg(
        *sources,
        *("-filter_complex", f"{joined}concat=n={len(segments)}:v=0:a=1", "-ac", "1"),
        *_ENCODERS[fmt],
    )


def _ffmpeg(*arguments: str) -> bytes:
    """Run ffmpeg writing to a file (MP4 needs to seek back) and return the file."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "output"
        subprocess.run(
            [FFMPEG, "-nostdin", "-v", "error", *arguments, str(output)],
            check=True,
            capture_output=True,
        )
        return output.read_bytes()
