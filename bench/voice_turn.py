"""Benchmark: what the voice pipeline adds to a turn, and whether it stalls the event loop.

Part 1 — a 60-second voice note (OGG/Opus, speech-like tones and pauses, as Telegram sends
it, which goes up as it is) and a 60-second M4A recording (which ffmpeg converts), answered
end to end through the real composition root against the fake OpenAI server in another
process: the turn's wall time minus the time spent waiting for the API (transcription and
the model call), i.e. conversion, bookkeeping and storage. Target: at most 300 ms.

Part 2 — event-loop stalls while voice turns run: a ticker coroutine that should wake every
millisecond records how late it wakes, while (a) one 60-second voice note, (b) four at
once, (c) four M4A recordings that are converted, and (d) 20 minutes of audio that has to
be split on silence are answered. Target:
no other conversation delayed by more than 20 ms.

    python -m bench.voice_turn
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import API_KEY, UPSTREAM, TimedGateway, fake_openai_process, percentile, table
from bots.bootstrap import bootstrap
from core.conversation.events import ReplyEvent, ReplyFailed
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.media.ports import Attachment, AudioPart, Transcriber, Transcript
from core.settings import load_settings
from tests.make_audio import speech_like, tone_segments

RUNS = 20


class TimedTranscriber:
    """The real transcriber; its calls count as API time of the current turn (``UPSTREAM``)."""

    def __init__(self, inner: Transcriber) -> None:
        self._inner = inner

    async def transcribe(self, part: AudioPart, *, model: str) -> Transcript:
        began = time.perf_counter()
        try:
            return await self._inner.transcribe(part, model=model)
        finally:
            UPSTREAM.get().append(time.perf_counter() - began)


class Sink:
    """Discards events, remembering a failure."""

    def __init__(self) -> None:
        self.failed: str | None = None

    async def emit(self, event: ReplyEvent) -> None:
        if isinstance(event, ReplyFailed):
            self.failed = event.message


class Ticker:
    """Wakes every millisecond and records the worst lateness while running."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - due)


async def measure(base_url: str, database: Path) -> tuple[list[list[object]], list[list[object]]]:
    settings = load_settings(
        None,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=base_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_LOG_LEVEL="WARNING",
        SWITCHBOARD_USER_MESSAGES_PER_MINUTE=0,
        SWITCHBOARD_TRANSCRIPTION_MODEL="whisper-1",
    )
    note = tone_segments(speech_like(60.0))
    memo = tone_segments(speech_like(60.0), "m4a")
    long_audio = tone_segments(speech_like(20 * 60.0))
    async with bootstrap(
        settings,
        wrap_gateway=TimedGateway,
        wrap_media=lambda kit: replace(kit, transcriber=TimedTranscriber(kit.transcriber)),
    ) as app:

        async def voice_turn(
            index: int, audio: bytes, name: str = "voice.ogg"
        ) -> tuple[float, float]:
            waited: list[float] = []
            UPSTREAM.set(waited)
            key = ConversationKey("bench", place=f"voice{index}")
            message = IncomingMessage(
                key,
                UserRef("bench", f"u{index}"),
                "",
                attachments=(Attachment(audio, name, None),),
            )
            sink = Sink()
            started = time.perf_counter()
            await app.assistant.answer_message(message, sink)
            total = time.perf_counter() - started
            if sink.failed:
                raise RuntimeError(sink.failed)
            return total, total - sum(waited)

        await voice_turn(0, note)  # warm-up
        overhead: list[list[object]] = []
        for label, audio, name in (
            ("60 s Ogg/Opus voice note (sent as is)", note, "voice.ogg"),
            ("60 s M4A recording (converted)", memo, "memo.m4a"),
        ):
            samples = [await voice_turn(i, audio, name) for i in range(1, RUNS + 1)]
            totals = [t * 1000 for t, _ in samples]
            own = [o * 1000 for _, o in samples]
            overhead += [
                [f"{label}: whole turn", RUNS, percentile(totals, 0.5), percentile(totals, 0.99)],
                ["  of which outside API calls", RUNS, percentile(own, 0.5), percentile(own, 0.99)],
            ]

        stalls: list[list[object]] = []
        for label, audios in (
            ("1 x 60 s voice note", [note]),
            ("4 x 60 s voice notes at once", [note] * 4),
            ("4 x 60 s M4A recordings at once (converted)", [memo] * 4),
            ("20 min audio, split on silence", [long_audio]),
        ):
            async with Ticker() as ticker:
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        voice_turn(100 + i, audio, "memo.m4a" if audio is memo else "voice.ogg")
                        for i, audio in enumerate(audios)
                    )
                )
                elapsed = time.perf_counter() - started
            stalls.append([label, f"{elapsed:.2f}", ticker.worst * 1000])
    return overhead, stalls


def main() -> None:
    with fake_openai_process() as base_url, tempfile.TemporaryDirectory() as tmp:
        overhead, stalls = asyncio.run(measure(base_url, Path(tmp) / "voice.db"))
    print("Voice turn against the fake OpenAI (transcription + answer), ms")
    print(table(["turn", "runs", "p50 ms", "p99 ms"], overhead))
    print("\nEvent-loop lateness while voice turns run (ticker every 1 ms)")
    print(table(["load", "seconds", "worst lateness ms"], stalls))


if __name__ == "__main__":
    main()
