"""Benchmark: what ``FfmpegAudio`` adds to ffmpeg when converting a voice note for
transcription, and how much it stalls the event loop.

Part 1 — 60 seconds of speech-like audio prepared for transcription (16 kHz mono Opus), one
run at a time: plain ffmpeg via ``subprocess.run`` (reading the file from disk, and from a
pipe) against ``FfmpegAudio.for_transcription`` (temporary file, asyncio subprocess,
duration read from the Ogg pages). Two inputs: an M4A recording, which both convert, and an
OGG/Opus voice note as Telegram sends it, which ``FfmpegAudio`` checks and sends as it is.
The three take turns, so a busy machine slows them alike.

Part 2 — a task sleeping 1 ms in a loop, and how late it wakes while nothing, 1 and 4
conversions of the M4A recording run at once (ffmpeg processes are bounded by the CPU
count).

    python -m bench.voice_conversion
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import percentile, table
from core.media.ffmpeg_audio import FfmpegAudio, find_ffmpeg
from tests.make_audio import voice_note

RUNS = 20
WARM_UP = 2
STALL_ROUNDS = 5
# The conversion FfmpegAudio runs (core.media.ffmpeg_audio), as one plain command line.
CONVERT = (
    *("-nostdin", "-hide_banner", "-loglevel", "error"),
    *("-map", "0:a:0", "-ac", "1", "-ar", "16000", "-c:a", "libopus", "-b:a", "24k"),
    *("-application", "voip", "-map_metadata", "-1", "-f", "ogg", "pipe:1"),
)


def plain_ffmpeg(ffmpeg: str, path: Path, data: bytes | None) -> float:
    """Milliseconds for plain ffmpeg to convert ``path``, or ``data`` fed to its stdin."""
    started = time.perf_counter()
    source = str(path) if data is None else "pipe:0"
    subprocess.run([ffmpeg, "-i", source, *CONVERT], input=data, capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000


async def conversion_times(
    ffmpeg: str, audio: FfmpegAudio, path: Path, data: bytes
) -> dict[str, list[float]]:
    """Milliseconds per conversion, each way in turn (plain ffmpeg timed in its thread)."""
    times: dict[str, list[float]] = {"file": [], "pipe": [], "ours": []}
    for index in range(WARM_UP + RUNS):
        from_file = await asyncio.to_thread(plain_ffmpeg, ffmpeg, path, None)
        # M4A keeps its index at the end: ffmpeg cannot read it from a pipe.
        seekable_only = path.suffix == ".m4a"
        from_pipe = (
            0.0 if seekable_only else await asyncio.to_thread(plain_ffmpeg, ffmpeg, path, data)
        )
        started = time.perf_counter()
        await audio.for_transcription(data, path.name)
        ours = (time.perf_counter() - started) * 1000
        if index >= WARM_UP:
            times["file"].append(from_file)
            if not seekable_only:
                times["pipe"].append(from_pipe)
            times["ours"].append(ours)
    return times


async def lateness(audio: FfmpegAudio, data: bytes, name: str, conversions: int) -> list[float]:
    """How late (ms) a 1 ms sleeper wakes, each time, while ``conversions`` run at once
    (while the same time passes idle for none)."""
    late: list[float] = []
    for _ in range(STALL_ROUNDS):
        done = asyncio.Event()

        async def ticker(done: asyncio.Event) -> None:
            while not done.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                late.append((time.perf_counter() - started - 0.001) * 1000)

        ticking = asyncio.create_task(ticker(done))
        if conversions:
            await asyncio.gather(*(audio.for_transcription(data, name) for _ in range(conversions)))
        else:
            await asyncio.sleep(0.5)
        done.set()
        await ticking
    return late


def row(name: str, values: Sequence[float], base: float | None = None) -> list[object]:
    p50 = percentile(values, 0.5)
    return [name, len(values), p50, percentile(values, 0.99), "" if base is None else p50 / base]


async def measure(ffmpeg: str, inputs: Sequence[tuple[str, Path, bytes]]) -> None:
    audio = FfmpegAudio(ffmpeg)
    for label, path, data in inputs:
        times = await conversion_times(ffmpeg, audio, path, data)
        base = percentile(times["file"], 0.5)
        print(
            f"Preparing a 60 s {label} ({len(data) // 1024} KB) for transcription, ms "
            f"({os.cpu_count()} CPUs, concurrency {os.cpu_count()})"
        )
        rows = [row("plain ffmpeg, file input", times["file"], base)]
        if times["pipe"]:
            rows.append(row("plain ffmpeg, pipe input", times["pipe"], base))
        rows.append(row("FfmpegAudio.for_transcription", times["ours"], base))
        print(table(["conversion", "runs", "p50 ms", "p99 ms", "p50 / plain file"], rows))
        ratio = percentile(times["ours"], 0.99) / percentile(times["file"], 0.99)
        print(f"FfmpegAudio p99 / plain ffmpeg (file) p99: {ratio:.2f}\n")

    _, path, data = inputs[0]
    rows = []
    for conversions in (0, 1, 4):
        late = await lateness(audio, data, path.name, conversions)
        rows.append(
            [conversions, len(late), percentile(late, 0.5), percentile(late, 0.99), max(late)]
        )
    print("Event-loop lateness of a 1 ms sleeper during M4A conversions, ms")
    print(table(["conversions at once", "wake-ups", "p50 ms", "p99 ms", "max ms"], rows))


def main() -> None:
    ffmpeg = find_ffmpeg()
    with tempfile.TemporaryDirectory() as folder:
        inputs = []
        for label, name, fmt in (
            ("M4A recording (converted)", "memo.m4a", "m4a"),
            ("OGG/Opus voice note (sent as is)", "voice.ogg", "ogg"),
        ):
            path = Path(folder) / name
            data = voice_note(60.0, fmt)
            path.write_bytes(data)
            inputs.append((label, path, data))
        asyncio.run(measure(ffmpeg, inputs))


if __name__ == "__main__":
    main()
