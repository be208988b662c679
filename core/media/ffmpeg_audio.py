"""Audio with ffmpeg: what users send, converted to small Ogg/Opus for the transcription API
(split at pauses when too big), and speech chunks joined into one voice note.

ffmpeg runs as a subprocess, a bounded number at a time, and never on the event loop. Only
ffmpeg is needed (no ffprobe): durations come from the Ogg pages ffmpeg writes. pydub and
imageio-ffmpeg are imported where they are used, so a process that is sent no audio never
loads them.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from core.errors import ConfigError, MediaTooLarge, UnsupportedMedia
from core.media.ports import AUDIO_SUFFIXES, AudioPart, PreparedAudio, VoiceNote

log = logging.getLogger(__name__)

UNREADABLE = (
    "I couldn't read that audio file. "
    "Please send a voice note or a common audio format (OGG, MP3, M4A, WAV)."
)
NO_SOUND = "That file has no sound in it."
EMPTY = "That audio is empty."
SPEECH_UNREADABLE = "I couldn't turn the spoken reply into a voice note."

_MEGABYTE = 1024 * 1024
_MIN_SECONDS = 0.1
# The demuxers ffmpeg may pick for user files: audio and video containers only, never
# playlists (HLS, concat) that would make ffmpeg open other files or URLs.
_DEMUXERS = (
    "ogg,mp3,mov,wav,w64,flac,matroska,aac,amr,amrnb,amrwb,aiff,caf,asf,avi,flv,"
    "mpeg,mpegts,ac3,eac3,wv,ape,au,dts,tta"
)
_TRANSCRIPTION_OPUS = ("-ac", "1", "-ar", "16000", "-c:a", "libopus", "-b:a", "24k")
_VOICE_NOTE_OPUS = ("-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k")
_OPUS_COMMON = ("-application", "voip", "-map_metadata", "-1", "-f", "ogg", "pipe:1")
_GRANULE_RATE = 48_000  # Ogg/Opus granule positions count 48 kHz samples, whatever the rate
_PCM_RATE = 16_000
_STEP_MS = 10  # the step of the loudness analysis
_PAUSE_MS = 300  # a cut goes in the middle of at least 300 ms of quiet
_SILENCE_DBFS = -40
_SEARCH_SECONDS = 30.0  # how far back from the size limit to look for a pause
_HEADER_BYTES = 1024  # a part's Opus headers, with room for ffmpeg paging a little differently
_MIN_UPLOAD_BYTES = 32 * 1024


def find_ffmpeg(configured: str | None = None) -> str:
    """The ffmpeg to run: ``configured`` (``SWITCHBOARD_FFMPEG``, a path or a command name),
    else ``ffmpeg`` on ``PATH``, else the binary bundled with ``imageio-ffmpeg``.

    Raises ``ConfigError`` when ``configured`` is not an executable file or none is found.
    """
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise ConfigError(f"SWITCHBOARD_FFMPEG={configured!r} is not an executable file.")
        return found
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    import imageio_ffmpeg  # type: ignore[import-untyped]

    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as error:
        raise ConfigError(
            "ffmpeg was not found: install it or set SWITCHBOARD_FFMPEG to its path."
        ) from error


class FfmpegAudio:
    """The ``AudioConverter`` port on ffmpeg subprocesses, at most ``concurrency`` at a time.

    ``max_upload_bytes`` is the transcription API's file limit (at least 32 KiB), bigger
    conversions are split into parts under it; ``max_input_bytes`` and ``max_seconds``
    bound what users may send.
    """

    def __init__(
        self,
        ffmpeg: str,
        *,
        max_upload_bytes: int = 25 * _MEGABYTE,
        max_input_bytes: int = 100 * _MEGABYTE,
        max_seconds: float = 4 * 3600,
        concurrency: int | None = None,
    ) -> None:
        if max_upload_bytes < _MIN_UPLOAD_BYTES:
            raise ValueError(f"max_upload_bytes must be at least {_MIN_UPLOAD_BYTES}")
        self._ffmpeg = ffmpeg
        self._max_upload_bytes = max_upload_bytes
        self._max_input_bytes = max_input_bytes
        self._max_seconds = max_seconds
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)

    async def for_transcription(self, data: bytes, filename: str) -> PreparedAudio:
        """Convert ``data`` to mono 16 kHz Ogg/Opus named after ``filename``, in one ffmpeg
        run; when that is over ``max_upload_bytes``, split it at the quietest pauses.

        Raises ``MediaTooLarge`` over ``max_input_bytes`` or ``max_seconds`` and
        ``UnsupportedMedia`` for corrupt, silent-video, empty or unreadable files.
        """
        if len(data) > self._max_input_bytes:
            raise MediaTooLarge(
                f"That audio file is too large ({_megabytes(len(data), up=True)}); "
                f"the limit is {_megabytes(self._max_input_bytes, up=False)}."
            )
        if not data:
            raise UnsupportedMedia(EMPTY)
        stem = PurePath(filename).stem or "audio"
        suffix = PurePath(filename).suffix.lower()
        if len(data) <= self._max_upload_bytes:
            as_is = await asyncio.to_thread(_whole_opus_stream, data)
            if as_is is not None:
                # Already Ogg/Opus (a Telegram voice note): the API takes it as it is.
                _check_not_empty(as_is.seconds)
                self._check_duration(as_is.seconds)
                return PreparedAudio(
                    (AudioPart(data, f"{stem}.ogg", as_is.seconds),), as_is.seconds
                )
        async with _workspace() as folder:
            source = "input" + (suffix if suffix in AUDIO_SUFFIXES else "")
            await asyncio.to_thread((folder / source).write_bytes, data)
            ogg = await self._run(
                folder,
                *_untrusted_input(source),
                # A second over the limit is all it takes to tell a file is too long.
                *("-map", "0:a:0", "-t", f"{self._max_seconds + 1:.3f}"),
                *_TRANSCRIPTION_OPUS,
                *_OPUS_COMMON,
            )
            pages = await asyncio.to_thread(_OggPages.read, ogg)
            _check_not_empty(pages.seconds)
            self._check_duration(pages.seconds)
            if len(ogg) <= self._max_upload_bytes:
                return PreparedAudio((AudioPart(ogg, f"{stem}.ogg", pages.seconds),), pages.seconds)
            await asyncio.to_thread((folder / "converted.ogg").write_bytes, ogg)
            cuts = await self._plan_cuts(folder, "converted.ogg", pages)
            parts = await self._cut(folder, "converted.ogg", cuts, stem)
        log.debug("split %.1f s of audio into %d parts", pages.seconds, len(parts))
        return PreparedAudio(parts, pages.seconds)

    def _check_duration(self, seconds: float) -> None:
        if seconds > self._max_seconds:
            raise MediaTooLarge(
                f"That recording is too long; the limit is {_duration(self._max_seconds)}."
            )

    async def voice_note(self, parts: Sequence[bytes]) -> VoiceNote:
        """Join ``parts`` (any audio ffmpeg reads, Ogg/Opus from the speech API) in order into
        one mono 48 kHz Ogg/Opus voice note, in one ffmpeg run.

        Raises ``ValueError`` for no parts and ``UnsupportedMedia`` for an unreadable one.
        """
        if not parts:
            raise ValueError("a voice note needs at least one part")
        names = [f"speech{index}" for index in range(len(parts))]
        streams = "".join(f"[{index}:a:0]" for index in range(len(parts)))
        async with _workspace() as folder:
            await asyncio.to_thread(_write_files, folder, dict(zip(names, parts, strict=True)))
            ogg = await self._run(
                folder,
                *[argument for name in names for argument in _untrusted_input(name)],
                "-filter_complex",
                f"{streams}concat=n={len(parts)}:v=0:a=1",
                *_VOICE_NOTE_OPUS,
                *_OPUS_COMMON,
                unreadable=SPEECH_UNREADABLE,
            )
        seconds = (await asyncio.to_thread(_OggPages.read, ogg)).seconds
        _check_not_empty(seconds)
        return VoiceNote(ogg, seconds)

    async def pcm16(
        self, data: bytes, filename: str, *, rate: int, max_seconds: float | None = None
    ) -> bytes:
        """``data`` as raw mono PCM16 (little-endian) at ``rate`` Hz, in one ffmpeg run: the
        input of a realtime session.

        Raises ``MediaTooLarge`` over ``max_input_bytes`` or ``max_seconds`` (the smaller of
        the argument and the converter's) and ``UnsupportedMedia`` for unreadable,
        silent-video or empty files.
        """
        limit = min(self._max_seconds, max_seconds or self._max_seconds)
        if len(data) > self._max_input_bytes:
            raise MediaTooLarge(
                f"That audio file is too large ({_megabytes(len(data), up=True)}); "
                f"the limit is {_megabytes(self._max_input_bytes, up=False)}."
            )
        if not data:
            raise UnsupportedMedia(EMPTY)
        suffix = PurePath(filename).suffix.lower()
        async with _workspace() as folder:
            source = "input" + (suffix if suffix in AUDIO_SUFFIXES else "")
            await asyncio.to_thread((folder / source).write_bytes, data)
            pcm = await self._run(
                folder,
                *_untrusted_input(source),
                # A second over the limit is all it takes to tell a file is too long.
                *("-map", "0:a:0", "-t", f"{limit + 1:.3f}"),
                *("-ac", "1", "-ar", str(rate), "-f", "s16le", "pipe:1"),
            )
        seconds = len(pcm) // 2 / rate
        _check_not_empty(seconds)
        if seconds > limit:
            raise MediaTooLarge(f"That recording is too long; the limit is {_duration(limit)}.")
        return pcm

    async def _plan_cuts(self, folder: Path, name: str, pages: _OggPages) -> list[float]:
        """Where to cut ``name`` so every part fits the upload limit: the quietest pause in
        the last ``_SEARCH_SECONDS`` before each part would be too big, else at the limit."""
        # Bytes are estimated within a page, so a part may run up to a page over at each end.
        budget = self._max_upload_bytes - 2 * pages.largest - _HEADER_BYTES
        cuts: list[float] = []
        start = 0.0
        while True:
            end = pages.time_at(pages.offset_at(start) + budget)
            if end >= pages.seconds:
                return cuts
            search = min(_SEARCH_SECONDS, (end - start) / 2)
            pcm = await self._run(
                folder,
                *("-ss", f"{end - search:.3f}", "-t", f"{search:.3f}", "-i", name),
                *("-ac", "1", "-ar", str(_PCM_RATE), "-f", "s16le", "pipe:1"),
            )
            pause = await asyncio.to_thread(_quietest_pause, pcm)
            start = end if pause is None else end - search + pause
            cuts.append(start)

    async def _cut(
        self, folder: Path, name: str, cuts: Sequence[float], stem: str
    ) -> tuple[AudioPart, ...]:
        """Split ``name`` at ``cuts`` without re-encoding (Opus packets are copied)."""
        await self._run(
            folder,
            *("-i", name, "-map", "0:a:0", "-c", "copy", "-f", "segment"),
            *("-segment_format", "ogg", "-reset_timestamps", "1"),
            *("-segment_times", ",".join(f"{cut:.3f}" for cut in cuts), "part%04d.ogg"),
        )
        files = await asyncio.to_thread(_read_parts, folder)
        return tuple(
            AudioPart(data, f"{stem}-part{number}.ogg", seconds)
            for number, (data, seconds) in enumerate(files, start=1)
        )

    async def _run(self, folder: Path, *arguments: str, unreadable: str = UNREADABLE) -> bytes:
        """Run ffmpeg in ``folder`` and return what it wrote to stdout; kill it if cancelled.

        A failure raises ``UnsupportedMedia`` with a friendly text; ffmpeg's own last words
        go to the log only.
        """
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                self._ffmpeg,
                *("-nostdin", "-hide_banner", "-loglevel", "error", *arguments),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=folder,
            )
            try:
                stdout, stderr = await process.communicate()
            except BaseException:
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            last = lines[-1] if lines else ""
            log.warning("ffmpeg failed with exit code %s: %s", process.returncode, last)
            no_audio = any("matches no streams" in line for line in lines)
            raise UnsupportedMedia(NO_SOUND if no_audio else unreadable)
        return stdout


@dataclass(frozen=True, slots=True)
class _OggPages:
    """Where the pages of an Ogg/Opus stream end, in seconds of audio and in bytes."""

    times: list[float]
    offsets: list[int]
    largest: int

    @classmethod
    def read(cls, data: bytes) -> _OggPages:
        """Index ``data``, an Ogg/Opus stream as ffmpeg writes it."""
        head = data.find(b"OpusHead")
        pre_skip = int.from_bytes(data[head + 10 : head + 12], "little") if head >= 0 else 0
        times: list[float] = []
        offsets: list[int] = []
        largest = position = 0
        while data.startswith(b"OggS", position) and position + 27 <= len(data):
            count = data[position + 26]
            size = 27 + count + sum(data[position + 27 : position + 27 + count])
            granule = int.from_bytes(data[position + 6 : position + 14], "little", signed=True)
            position += size
            largest = max(largest, size)
            if granule >= 0:  # -1: no packet ends on this page
                times.append(max(0.0, (granule - pre_skip) / _GRANULE_RATE))
                offsets.append(position)
        return cls(times, offsets, largest)

    @property
    def seconds(self) -> float:
        """The duration of the audio."""
        return self.times[-1] if self.times else 0.0

    def offset_at(self, seconds: float) -> float:
        """About where in the stream the audio at ``seconds`` is."""
        return _interpolate(seconds, self.times, self.offsets)

    def time_at(self, offset: float) -> float:
        """About which second of audio the stream holds at byte ``offset``."""
        return _interpolate(offset, self.offsets, self.times)


def _whole_opus_stream(data: bytes) -> _OggPages | None:
    """The page index of ``data`` if it is one well-formed Ogg/Opus stream from its first
    byte to its last (page after page, one serial number, Opus headers first), else None.
    Anything else, or anything broken, goes through ffmpeg, which judges it."""
    if not data.startswith(b"OggS") or data.find(b"OpusHead", 0, 128) != 27 + data[26]:
        return None
    serial = data[14:18]
    position = 0
    while position < len(data):
        if not data.startswith(b"OggS", position) or position + 27 > len(data):
            return None
        count = data[position + 26]
        size = 27 + count + sum(data[position + 27 : position + 27 + count])
        if data[position + 4] != 0 or data[position + 14 : position + 18] != serial:
            return None
        position += size
    if position != len(data):
        return None
    pages = _OggPages.read(data)
    return pages if pages.times else None


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """``ys`` at ``x``, linear between the points of ascending ``xs`` and level beyond."""
    index = bisect.bisect_left(xs, x)
    if index == 0:
        return ys[0]
    if index == len(xs):
        return ys[-1]
    # bisect_left puts x in (xs[index - 1], xs[index]], so the span is never zero.
    share = (x - xs[index - 1]) / (xs[index] - xs[index - 1])
    return ys[index - 1] + share * (ys[index] - ys[index - 1])


@functools.cache
def _pydub() -> Any:
    """pydub, imported once, on first use."""
    with warnings.catch_warnings():
        # pydub imports audioop (deprecated since Python 3.11) and warns at import when no
        # ffmpeg is on PATH; it is only used on raw PCM here, and ffmpeg is found apart.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        import pydub.silence

    return pydub


def _quietest_pause(pcm: bytes) -> float | None:
    """Seconds into ``pcm`` (16 kHz mono s16le) of the middle of its quietest pause: of the
    stretches of at least 300 ms under -40 dBFS (found with pydub, in 10 ms steps), the
    quietest, the latest of equals; ``None`` when there is none."""
    pydub = _pydub()
    audio = pydub.AudioSegment(
        data=pcm[: len(pcm) - len(pcm) % 2], sample_width=2, frame_rate=_PCM_RATE, channels=1
    )
    pauses = pydub.silence.detect_silence(
        audio,
        min_silence_len=_PAUSE_MS,
        silence_thresh=_SILENCE_DBFS,
        seek_step=_STEP_MS,
    )
    if not pauses:
        return None

    def loudness(pause: list[int]) -> float:
        start, end = pause
        middle = (start + end) // 2
        return float(audio[middle - _PAUSE_MS // 2 : middle + _PAUSE_MS // 2].rms)

    start, end = min(reversed(pauses), key=loudness)
    return float(start + end) / 2 / 1000


@asynccontextmanager
async def _workspace() -> AsyncIterator[Path]:
    """A temporary folder for ffmpeg's files, removed afterwards (also when cancelled)."""
    folder = await asyncio.to_thread(tempfile.TemporaryDirectory, prefix="switchboard-audio-")
    try:
        yield Path(folder.name)
    finally:
        await asyncio.to_thread(folder.cleanup)


def _untrusted_input(name: str) -> tuple[str, ...]:
    """ffmpeg options opening ``name`` as a plain local audio or video file, nothing else."""
    return ("-format_whitelist", _DEMUXERS, "-protocol_whitelist", "file", "-i", name)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _read_parts(folder: Path) -> list[tuple[bytes, float]]:
    """The parts ffmpeg's segment muxer wrote, in order, with their durations."""
    parts = [path.read_bytes() for path in sorted(folder.glob("part*.ogg"))]
    return [(data, _OggPages.read(data).seconds) for data in parts]


def _check_not_empty(seconds: float) -> None:
    if seconds < _MIN_SECONDS:
        raise UnsupportedMedia(EMPTY)


def _megabytes(size: int, *, up: bool) -> str:
    """``size`` bytes as "N MB" to one decimal, rounded up for sizes and down for limits."""
    tenths = size * 10 / _MEGABYTE
    rounded = (math.ceil(tenths) if up else math.floor(tenths)) / 10
    return f"{rounded:g} MB"


def _duration(seconds: float) -> str:
    """``seconds`` in words: "4 hours", "90 minutes", "5 seconds"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds / size
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"
