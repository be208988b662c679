"""``FfmpegAudio`` and ``find_ffmpeg`` on real media made with ffmpeg (``tests.make_audio``)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest

from core.errors import ConfigError, MediaTooLarge, UnsupportedMedia
from core.media.ffmpeg_audio import (
    EMPTY,
    NO_SOUND,
    SPEECH_UNREADABLE,
    UNREADABLE,
    FfmpegAudio,
    find_ffmpeg,
)
from tests import make_audio
from tests.make_audio import FFMPEG, RATE, dbfs, decode, frequency, opus_head, tone_segments

MEGABYTE = 1024 * 1024
SMALL_LIMIT = 40_000  # about 10 s of the converted audio


@pytest.fixture
def workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder where temporary files go during the test, to check they are removed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob("switchboard-audio-*"))


def ffmpeg_children() -> list[int]:
    """Process ids of the ffmpeg processes this test process has started and not reaped."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name, _, rest = text.rpartition(")")
        if int(rest.split()[1]) == os.getpid() and "(ffmpeg" in name:
            children.append(int(stat_file.parent.name))
    return children


async def test_an_opus_voice_note_goes_up_as_it_is(workspaces: Path) -> None:
    note = make_audio.voice_note(6.0)

    prepared = await FfmpegAudio(FFMPEG).for_transcription(note, "v.oga")

    [part] = prepared.parts
    assert part.data == note  # Ogg/Opus already: no conversion
    assert part.filename == "v.ogg"
    assert part.seconds == pytest.approx(6.0, abs=0.1)
    assert prepared.seconds == part.seconds
    assert leftovers(workspaces) == []


async def test_a_broken_or_truncated_opus_stream_is_left_to_ffmpeg(workspaces: Path) -> None:
    note = make_audio.voice_note(6.0)
    truncated = note[: len(note) - 700]  # cut inside a page

    prepared = await FfmpegAudio(FFMPEG).for_transcription(truncated, "v.ogg")

    [part] = prepared.parts
    assert part.data != truncated
    assert opus_head(part.data) == (1, 16_000)  # re-encoded from what ffmpeg could read
    assert len(decode(part.data)) / RATE == pytest.approx(part.seconds, abs=0.05)
    assert part.seconds < 6.0


async def test_other_audio_becomes_one_part_of_mono_16khz_opus(workspaces: Path) -> None:
    prepared = await FfmpegAudio(FFMPEG).for_transcription(
        make_audio.voice_note(6.0, "mp3"), "v.mp3"
    )

    [part] = prepared.parts
    assert part.filename == "v.ogg"
    assert part.seconds == pytest.approx(6.0, abs=0.1)
    assert opus_head(part.data) == (1, 16_000)
    assert len(decode(part.data)) / RATE == pytest.approx(6.0, abs=0.1)
    assert leftovers(workspaces) == []


@pytest.mark.parametrize(
    ("fmt", "filename", "stem"),
    [
        ("mp3", "song.mp3", "song"),
        ("wav", "Memo 3.WAV", "Memo 3"),
        ("m4a", "recording.m4a", "recording"),
        ("m4a", "download", "download"),  # no suffix: ffmpeg recognises the content
    ],
)
async def test_common_formats_are_converted(fmt: str, filename: str, stem: str) -> None:
    data = make_audio.voice_note(5.0, fmt)

    prepared = await FfmpegAudio(FFMPEG).for_transcription(data, filename)

    [part] = prepared.parts
    assert part.filename == f"{stem}.ogg"
    assert part.seconds == pytest.approx(5.0, abs=0.1)
    assert opus_head(part.data) == (1, 16_000)


async def test_long_audio_is_split_in_pauses_in_order(workspaces: Path) -> None:
    segments = make_audio.speech_like(60.0)
    starts = [sum(seconds for _, seconds in segments[:index]) for index in range(len(segments))]
    pauses = [
        (start, start + seconds)
        for start, (hz, seconds) in zip(starts, segments, strict=True)
        if hz == 0
    ]

    prepared = await FfmpegAudio(FFMPEG, max_upload_bytes=SMALL_LIMIT).for_transcription(
        tone_segments(segments), "talk.ogg"
    )

    parts = prepared.parts
    assert len(parts) >= 4
    assert [part.filename for part in parts] == [
        f"talk-part{number}.ogg" for number in range(1, len(parts) + 1)
    ]
    assert all(len(part.data) <= SMALL_LIMIT for part in parts)
    assert prepared.seconds == pytest.approx(60.0, abs=0.1)
    assert sum(part.seconds for part in parts) == pytest.approx(prepared.seconds, abs=0.2)
    begin = 0.0
    for index, part in enumerate(parts):
        samples = decode(part.data)
        assert len(samples) / RATE == pytest.approx(part.seconds, abs=0.05)
        if index > 0:
            assert any(start <= begin <= end for start, end in pauses), begin
            assert dbfs(samples[: RATE // 10]) < -45  # starts in a pause
        if index < len(parts) - 1:
            assert dbfs(samples[-RATE // 10 :]) < -45  # ends in a pause
        # The first word in the part is the one that follows its start in the original.
        word = next(i for i, (hz, _) in enumerate(segments) if hz and starts[i] >= begin - 0.01)
        offset = int((starts[word] - begin + 0.2) * RATE)
        heard = frequency(samples[offset : offset + RATE // 2])
        assert heard == pytest.approx(segments[word][0], abs=5)
        begin += part.seconds
    assert leftovers(workspaces) == []


async def test_audio_without_pauses_is_cut_hard_within_the_limit() -> None:
    prepared = await FfmpegAudio(FFMPEG, max_upload_bytes=SMALL_LIMIT).for_transcription(
        tone_segments([(440.0, 30.0)]), "hum.ogg"
    )

    assert len(prepared.parts) >= 3
    assert all(len(part.data) <= SMALL_LIMIT for part in prepared.parts)
    assert sum(part.seconds for part in prepared.parts) == pytest.approx(30.0, abs=0.2)
    # Cut through the tone, not at a pause: the first part ends at full loudness.
    assert dbfs(decode(prepared.parts[0].data)[-RATE // 20 :]) > -30


@pytest.mark.parametrize(
    ("make", "filename", "message"),
    [
        (make_audio.corrupt_audio, "voice.ogg", UNREADABLE),
        (lambda: b"Shopping list: milk, eggs, bread\n" * 40, "notes.ogg", UNREADABLE),
        (lambda: b"Shopping list: milk, eggs, bread\n" * 40, "notes.txt", UNREADABLE),
        (make_audio.silent_video, "clip.mp4", NO_SOUND),
        (lambda: b"", "voice.ogg", EMPTY),
        (make_audio.empty_audio, "nothing.wav", EMPTY),
        (lambda: tone_segments([(440.0, 0.05)]), "blip.ogg", EMPTY),
    ],
)
async def test_unusable_files_are_refused_in_plain_words(
    make: Callable[[], bytes],
    filename: str,
    message: str,
    workspaces: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(UnsupportedMedia) as raised:
        await FfmpegAudio(FFMPEG).for_transcription(make(), filename)

    assert str(raised.value) == message
    if message != EMPTY:
        assert "ffmpeg failed" in caplog.text  # ffmpeg's own words go to the log only
    assert leftovers(workspaces) == []


async def test_too_large_a_file_is_refused_before_ffmpeg_runs() -> None:
    audio = FfmpegAudio("/nonexistent/ffmpeg", max_input_bytes=MEGABYTE)

    with pytest.raises(MediaTooLarge, match=r"too large \(1\.1 MB\); the limit is 1 MB"):
        await audio.for_transcription(b"\0" * (MEGABYTE + 100_000), "big.wav")


async def test_too_long_a_recording_is_refused() -> None:
    audio = FfmpegAudio(FFMPEG, max_seconds=5)

    assert (await audio.for_transcription(make_audio.voice_note(4.5), "ok.ogg")).parts
    with pytest.raises(MediaTooLarge, match="the limit is 5 seconds"):
        await audio.for_transcription(make_audio.voice_note(8.0), "long.ogg")


async def test_voice_note_joins_speech_in_order(workspaces: Path) -> None:
    parts = [
        tone_segments([(400.0, 1.5)]),
        tone_segments([(800.0, 1.0)], "mp3"),
        tone_segments([(1200.0, 2.0)]),
    ]

    note = await FfmpegAudio(FFMPEG).voice_note(parts)

    assert (note.filename, note.mime_type) == ("reply.ogg", "audio/ogg")
    assert opus_head(note.data) == (1, 48_000)
    assert note.seconds == pytest.approx(4.5, abs=0.1)
    samples = decode(note.data)
    assert len(samples) / RATE == pytest.approx(note.seconds, abs=0.05)
    for at, hz in ((0.5, 400), (1.8, 800), (3.2, 1200)):
        assert frequency(samples[int(at * RATE) : int((at + 0.5) * RATE)]) == pytest.approx(
            hz, abs=5
        )
    assert leftovers(workspaces) == []


async def test_voice_note_refuses_no_parts_and_unreadable_parts() -> None:
    audio = FfmpegAudio(FFMPEG)

    with pytest.raises(ValueError, match="at least one part"):
        await audio.voice_note([])
    with pytest.raises(UnsupportedMedia) as raised:
        await audio.voice_note([tone_segments([(400.0, 1.0)]), make_audio.corrupt_audio()])
    assert str(raised.value) == SPEECH_UNREADABLE


async def test_conversion_does_not_block_the_event_loop() -> None:
    data = make_audio.voice_note(60.0)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    prepared = await FfmpegAudio(FFMPEG, max_upload_bytes=SMALL_LIMIT).for_transcription(
        data, "talk.ogg"
    )
    done.set()
    await ticking

    assert len(prepared.parts) > 1  # the whole path ran: conversion, analysis and cutting
    assert len(gaps) >= 20
    assert max(gaps) < 0.1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_at_most_concurrency_ffmpeg_processes_run() -> None:
    audio = FfmpegAudio(FFMPEG, concurrency=1)
    data = make_audio.voice_note(30.0, "mp3")
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(len(ffmpeg_children()))
            await asyncio.sleep(0.002)

    watching = asyncio.create_task(watch())
    await asyncio.gather(*(audio.for_transcription(data, "v.mp3") for _ in range(3)))
    watching.cancel()

    assert max(seen) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_cancelling_kills_ffmpeg_and_removes_files(workspaces: Path) -> None:
    task = asyncio.create_task(
        FfmpegAudio(FFMPEG).for_transcription(make_audio.voice_note(120.0, "mp3"), "long.mp3")
    )
    deadline = time.monotonic() + 5
    while not ffmpeg_children():
        assert time.monotonic() < deadline, "ffmpeg never started"
        await asyncio.sleep(0.005)

    cancelled = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # ffmpeg needs about half a second more for this file: it was killed, not waited for.
    assert time.monotonic() - cancelled < 0.25
    assert ffmpeg_children() == []
    assert leftovers(workspaces) == []


def test_find_ffmpeg_falls_back_to_the_bundled_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)

    found = find_ffmpeg()

    assert found == imageio_ffmpeg.get_ffmpeg_exe()
    assert os.access(found, os.X_OK)


def test_find_ffmpeg_prefers_path_then_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "ffmpeg"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(on_path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert find_ffmpeg() == str(on_path)
    assert find_ffmpeg(FFMPEG) == FFMPEG


@pytest.mark.parametrize("setting", ["/nonexistent/ffmpeg", "not-executable"])
def test_find_ffmpeg_rejects_a_bad_setting(setting: str, tmp_path: Path) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("just text")
    configured = str(plain) if setting == "not-executable" else setting

    with pytest.raises(ConfigError, match="SWITCHBOARD_FFMPEG"):
        find_ffmpeg(configured)


async def test_pcm16_for_a_realtime_session(workspaces: Path) -> None:
    audio = FfmpegAudio(FFMPEG)
    pcm = await audio.pcm16(tone_segments([(440, 1.0)], "m4a"), "memo.m4a", rate=24_000)
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    assert len(samples) / 24_000 == pytest.approx(1.0, abs=0.05)
    # make_audio.frequency counts in 16 kHz samples; these are 24 kHz.
    assert frequency(samples) * 24_000 / RATE == pytest.approx(440, abs=10)
    with pytest.raises(UnsupportedMedia):
        await audio.pcm16(make_audio.corrupt_audio(), "voice.ogg", rate=24_000)
    with pytest.raises(UnsupportedMedia, match=EMPTY):
        await audio.pcm16(b"", "voice.ogg", rate=24_000)
    with pytest.raises(MediaTooLarge):
        await FfmpegAudio(FFMPEG, max_seconds=0.5).pcm16(
            tone_segments([(440, 1.0)]), "voice.ogg", rate=24_000
        )
    with pytest.raises(MediaTooLarge, match=r"limit is 0\.5 second"):
        await audio.pcm16(tone_segments([(440, 1.0)]), "voice.ogg", rate=24_000, max_seconds=0.5)
    assert leftovers(workspaces) == []
