"""Benchmark: what a spoken reply through the Realtime API adds outside the API, against the
speech endpoint on the same text, and whether realtime sessions stall the event loop.

Part 1 — the same replies (a short one, about 100 characters, and a long one, about 1,200,
spoken in one chunk) are spoken through the real composition root against the fake OpenAI
server in another process, once with the speech endpoint (``gpt-4o-mini-tts``, OGG/Opus) and
once with a realtime model (``gpt-realtime-2.1-mini``: a WebSocket session streaming PCM16):
the step's wall time minus the time inside the API port (the HTTP call, or the realtime
session from connect to close), i.e. budget reservation, WAV wrapping and the ffmpeg
conversion to a voice note. The fake answers as fast as it can in both cases.

Part 2 — event-loop lateness while 20 realtime sessions stream their audio at once: a ticker
coroutine that should wake every millisecond records how late it wakes (wall clock, so it
includes the OS running other processes on a busy machine), and the longest CPU time any
one loop step took (what this process itself holds the loop for). Every audio delta is a
JSON event with base64 audio parsed on the loop. Then again after ``gc.freeze()``: the
longest steps left are the garbage collector's full passes over the ~170k objects start-up
builds (the SDK's and pydantic's types), which freezing takes out of its scans. Target:
worst ≤ 20 ms.

    python -m bench.realtime_voice
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from asyncio import events
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.common import API_KEY, UPSTREAM, fake_openai_process, percentile, table
from bots.bootstrap import App, bootstrap
from core.conversation.store import UsageRecord
from core.media.ports import Speech, SpeechSynthesizer
from core.media.steps import MediaKit
from core.models.realtime import HistoryLine, RealtimeVoice, SpokenAnswer, SpokenText
from core.money.budgets import Payer
from core.money.metering import Charge
from core.settings import load_settings

RUNS = 20
SESSIONS = 20
SHORT = "Sure. The meeting moved to Thursday at ten, in the small room on the second floor."
LONG = " ".join(
    [
        "Here is the plan for the week, step by step.",
        "On Monday we review the open issues and pick the five that matter most.",
        "On Tuesday and Wednesday each of us takes one of them and writes the change,",
        "with a test that fails before it and passes after it.",
        "On Thursday we read each other's changes, ask questions and fix what we find.",
        "On Friday we ship what is ready, write down what is not and why,",
        "and spend the afternoon on the benchmarks, so that next week starts from numbers",
        "rather than from guesses.",
    ]
    * 3
)


class Ticker:
    """Wakes every millisecond and records how late each wake-up is."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def row(self, label: str, seconds: float, steps: StepMeter) -> list[object]:
        late = [x * 1000 for x in self.late]
        return [label, f"{seconds:.2f}", percentile(late, 0.99), max(late), steps.worst_cpu * 1000]

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.late.append(loop.time() - due)


class StepMeter:
    """The longest CPU time one event-loop step took on the loop's thread while inside the
    block: what this process itself holds the loop for, apart from the time the OS gives
    other processes (which the ticker's wall-clock lateness includes on a busy machine).

    Instrumentation for this benchmark only: it wraps ``asyncio.Handle._run`` while active.
    """

    def __init__(self) -> None:
        self.worst_cpu = 0.0
        self._original = events.Handle._run

    def __enter__(self) -> StepMeter:
        original = self._original
        meter = self

        def run(handle: events.Handle) -> None:
            began = time.thread_time()
            original(handle)
            meter.worst_cpu = max(meter.worst_cpu, time.thread_time() - began)

        events.Handle._run = run  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        events.Handle._run = self._original  # type: ignore[method-assign]


class TimedSpeech:
    """The speech endpoint port; its calls count as API time (``UPSTREAM``)."""

    def __init__(self, inner: SpeechSynthesizer) -> None:
        self._inner = inner

    @property
    def max_input_chars(self) -> int:
        return self._inner.max_input_chars

    async def speak(self, text: str, *, model: str, voice: str, speed: float) -> Speech:
        began = time.perf_counter()
        try:
            return await self._inner.speak(text, model=model, voice=voice, speed=speed)
        finally:
            UPSTREAM.get().append(time.perf_counter() - began)


class TimedRealtime:
    """The realtime port; a session from connect to close counts as API time."""

    def __init__(self, inner: RealtimeVoice) -> None:
        self._inner = inner

    async def speak(
        self,
        text: str,
        *,
        model: str,
        voice: str,
        instructions: str,
        max_output_tokens: int,
        speed: float = 1.0,
    ) -> SpokenText:
        began = time.perf_counter()
        try:
            return await self._inner.speak(
                text,
                model=model,
                voice=voice,
                instructions=instructions,
                max_output_tokens=max_output_tokens,
                speed=speed,
            )
        finally:
            UPSTREAM.get().append(time.perf_counter() - began)

    async def answer(
        self,
        audio: bytes,
        *,
        model: str,
        voice: str,
        instructions: str,
        history: Sequence[HistoryLine],
        transcription_model: str,
        max_output_tokens: int,
    ) -> SpokenAnswer:
        return await self._inner.answer(
            audio,
            model=model,
            voice=voice,
            instructions=instructions,
            history=history,
            transcription_model=transcription_model,
            max_output_tokens=max_output_tokens,
        )


def timed(kit: MediaKit) -> MediaKit:
    """The kit with its API ports timed (the media steps build their realtime speech
    adapter around the timed realtime port, so WAV wrapping counts as ours)."""
    realtime = TimedRealtime(kit.realtime) if kit.realtime is not None else None
    return replace(kit, speech=TimedSpeech(kit.speech), realtime=realtime)


async def spoken(app: App, text: str, index: int) -> tuple[float, float]:
    """One spoken reply: its wall time and the part outside the API, in seconds."""
    waited: list[float] = []
    UPSTREAM.set(waited)
    charge = Charge(Payer(f"bench:u{index}", f"bench:p{index}"), None, None)
    usage: list[UsageRecord] = []
    started = time.perf_counter()
    await app.media.speak(text, charge, usage)
    total = time.perf_counter() - started
    return total, total - sum(waited)


async def measure(base_url: str, folder: Path) -> tuple[list[list[object]], list[list[object]]]:
    overhead: list[list[object]] = []
    stalls: list[list[object]] = []
    for path, model in (
        ("speech endpoint", "gpt-4o-mini-tts"),
        ("realtime", "gpt-realtime-2.1-mini"),
    ):
        settings = load_settings(
            None,
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=base_url,
            DATABASE_URL=f"sqlite+aiosqlite:///{folder / (model + '.db')}",
            SWITCHBOARD_LOG_LEVEL="WARNING",
            SWITCHBOARD_SPEECH_MODEL=model,
        )
        async with bootstrap(settings, wrap_media=timed) as app:
            await spoken(app, SHORT, 0)  # warm-up
            for label, text in (("short reply", SHORT), ("long reply", LONG)):
                samples = [await spoken(app, text, i) for i in range(1, RUNS + 1)]
                totals = [t * 1000 for t, _ in samples]
                own = [o * 1000 for _, o in samples]
                overhead += [
                    [
                        f"{path}, {label} ({len(text)} chars): whole step",
                        RUNS,
                        percentile(totals, 0.5),
                        percentile(totals, 0.99),
                    ],
                    [
                        "  of which outside the API",
                        RUNS,
                        percentile(own, 0.5),
                        percentile(own, 0.99),
                    ],
                ]
            if model.startswith("gpt-realtime"):
                with StepMeter() as steps:
                    async with Ticker() as idle:
                        await asyncio.sleep(2.0)
                stalls.append(idle.row("idle loop (the machine's own noise)", 2.0, steps))
                for frozen in (False, True):
                    if frozen:
                        # What start-up built (the SDK's and pydantic's types, ~170k objects)
                        # lives as long as the process: out of the collector's full passes.
                        gc.collect()
                        gc.freeze()
                    for length, text in (("short", SHORT), ("long", LONG)):
                        with StepMeter() as steps:
                            async with Ticker() as ticker:
                                started = time.perf_counter()
                                await asyncio.gather(
                                    *(spoken(app, text, 100 + i) for i in range(SESSIONS))
                                )
                                elapsed = time.perf_counter() - started
                        load = f"{SESSIONS} realtime sessions at once, {length} reply"
                        if frozen:
                            load += ", start-up heap frozen"
                        stalls.append(ticker.row(load, elapsed, steps))
                gc.unfreeze()
    return overhead, stalls


def main() -> None:
    with fake_openai_process() as base_url, tempfile.TemporaryDirectory() as tmp:
        overhead, stalls = asyncio.run(measure(base_url, Path(tmp)))
    print("A spoken reply against the fake OpenAI: speech endpoint vs realtime session, ms")
    print(table(["reply", "runs", "p50 ms", "p99 ms"], overhead))
    print("\nEvent-loop lateness while realtime sessions stream (ticker every 1 ms)")
    print(
        table(
            ["load", "seconds", "p99 lateness ms", "worst lateness ms", "longest step CPU ms"],
            stalls,
        )
    )


if __name__ == "__main__":
    main()
