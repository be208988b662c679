"""Benchmark: how fast Telegram replies show within the platform's limits (issue 17).

The fake Bot API (a thread of this process) enforces Telegram's limits — one message a
second per private chat with bursts of 3, 20 in any minute per group, 30 in any second
overall, edits included — and answers 429 beyond them. The fake OpenAI (also a thread here)
answers at once, or streams a scripted reply. Times are from the user's message being
queued at the fake to the fake receiving the bot's first message ("first text") and the
call that made the chat show the whole answer ("complete"). Parts:

``quiet`` — one private chat, 50 turns one after another: each question goes one second
after the previous answer is complete (a reader's pause, within the chat's one message a
second). Twice: the model answering at once, and streaming a short reply (60 characters in
6 pieces over 0.1 s). Reported: first text and complete p50/p99, calls per turn, 429s.

``burst`` — 100 private chats ask at the same moment, the model answering at once: share
complete, 429s, first text p50/p99 against the floor the overall limit sets, and a timeline
of the turns (when the model was called and answered for each, when its first message
went, how many answers were stored before the last question was). The fakes run
in their own processes here, so that the bot's process does the turns' work only.
Then the pacer's part alone: 100 finished replies handed to the Telegram reply at once.

``wait`` — the moment the first message waits (``SWITCHBOARD_TELEGRAM_FIRST_MESSAGE_SECONDS``),
for replies of several lengths streamed at a model's pace: calls per reply, first text and
complete, for each setting of the moment.

    python -m bench.telegram_pacing [--part quiet|burst|wait|all]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
from telegram import Bot

from bench.common import API_KEY, TOKEN, fake_openai_process, fake_process, percentile, table
from bench.telegram_streaming import bot
from bots.bootstrap import run_loop
from bots.pacing import FloodControl
from bots.telegram.reply import ChatPlace, TelegramReply
from core.conversation.events import ReplyFinished
from core.models.llm import ChatTurn, LLMEvent, LLMGateway, LLMRequest
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram, RecordedCall

MESSAGE_CALLS = frozenset({"sendMessage", "editMessageText"})
QUIET_TURNS = 50
READER_PAUSE = 1.0
SHORT_REPLY = "Sure: the capital of France is Paris, on the Seine. Anything?"
BURST_CHATS = 100
WARM_CHAT = 7999
OVERALL_PER_SECOND = 30
CHARS_PER_SECOND = 300.0  # ~75 tokens a second: a typical streaming pace of a chat model
WAIT_LENGTHS = (40, 120, 300, 1200)
WAIT_SETTINGS = ("0", "0.25", "0.5", "1.0")


def _calls_in(telegram: FakeTelegram, chat: int, since: float) -> list[RecordedCall]:
    calls = [call for method in MESSAGE_CALLS for call in telegram.calls_to(method)]
    return sorted(
        (c for c in calls if c.params.get("chat_id") == chat and c.time >= since),
        key=lambda c: c.time,
    )


async def _until(check: Callable[[], object], within: float = 60.0, every: float = 0.002) -> None:
    """Wait for ``check``, looking ``every`` seconds (the harness shares the CPU: it looks
    often where one reply is timed, seldom where a hundred are)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the bot did not answer in time")
        await asyncio.sleep(every)


async def quiet(tmp: Path, streamed: bool) -> list[object]:
    """One chat, turns one after another; returns a table row."""
    chat = 7000
    with FakeTelegram() as telegram, FakeOpenAI(api_key=API_KEY) as openai:
        if streamed:
            script = Scripted(text=SHORT_REPLY, chunks=6, chunk_delay=0.02)
            openai.enqueue(*[script] * (QUIET_TURNS + 1))
        async with bot(telegram.url, telegram.token, openai.base_url, tmp / f"q{streamed}.db"):
            await _until(lambda: telegram.calls_to("getUpdates"))
            first: list[float] = []
            complete: list[float] = []
            calls = 0
            for turn in range(QUIET_TURNS + 1):  # turn 0 warms up
                question = f"question {turn}"
                expected = SHORT_REPLY if streamed else f"Echo: {question}"
                asked = time.time()
                telegram.private_message(chat, question)
                await _until(
                    lambda e=expected, n=turn + 1: (
                        len(shown := telegram.chat(chat)) == n and shown[-1].text == e
                    )
                )
                made = _calls_in(telegram, chat, asked)
                if turn:
                    first.append((made[0].time - asked) * 1000)
                    complete.append((made[-1].time - asked) * 1000)
                    calls += len(made)
                await asyncio.sleep(READER_PAUSE)
        return [
            "streamed 60 chars / 0.1 s" if streamed else "at once",
            QUIET_TURNS,
            percentile(first, 0.5),
            percentile(first, 0.99),
            percentile(complete, 0.5),
            percentile(complete, 0.99),
            calls / QUIET_TURNS,
            len(telegram.rate_limited),
        ]


class _Stamped:
    """The model gateway, timing each turn's model call by the question it answers (each
    chat asks its own question): when it was called and when its answer was in."""

    def __init__(self, inner: LLMGateway) -> None:
        self._inner = inner
        self.called: dict[str, float] = {}
        self.answered: dict[str, float] = {}

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        question = request.items[-1]
        assert isinstance(question, ChatTurn)
        self.called.setdefault(question.text, time.time())
        async for event in self._inner.stream(request):
            yield event
        self.answered.setdefault(question.text, time.time())


def _question(chat: int) -> str:
    return f"hello from {chat}"


async def burst(tmp: Path, timeline: list[list[object]], *, warm: bool = False) -> list[object]:
    """Many chats at the same moment; returns a table row, and adds the turns' timeline
    (per stage, ms after the questions) to ``timeline``. Both fakes run in their own
    processes here, so that the bot's process does the turns' work only. ``warm``: one
    other chat is answered first (a bot that has run a while: connections to the API open,
    code paths used once), and the burst comes a second and a half later."""
    chats = [8000 + n for n in range(BURST_CHATS)]
    stamped: list[_Stamped] = []

    def stamp(inner: LLMGateway) -> LLMGateway:
        stamped.append(_Stamped(inner))
        return stamped[-1]

    database = tmp / f"burst-{'warm' if warm else 'cold'}.db"
    with (
        fake_openai_process() as openai_url,
        fake_process("tests.fakes.telegram_server", "FAKE_TELEGRAM", "--token", TOKEN) as url,
    ):
        async with (
            bot(url, TOKEN, openai_url, database, wrap_gateway=stamp),
            aiohttp.ClientSession(url) as fake,
        ):
            query = {"method": "getUpdates", "at_least": "1"}
            async with fake.get("/_fake/calls", params=query) as response:
                response.raise_for_status()
            [model] = stamped
            if warm:
                body = [{"chat_id": WARM_CHAT, "text": _question(WARM_CHAT)}]
                async with fake.post("/_fake/private_messages", json=body) as response:
                    response.raise_for_status()
                query = {"method": "sendMessage", "at_least": "1"}
                async with fake.get("/_fake/calls", params=query) as response:
                    response.raise_for_status()
                await asyncio.sleep(1.5)  # past the overall limit's one-second window
                model.called.clear()
                model.answered.clear()
            asked = time.time()
            body = [{"chat_id": chat, "text": _question(chat)} for chat in chats]
            async with fake.post("/_fake/private_messages", json=body) as response:
                response.raise_for_status()
            query = {"method": "sendMessage", "at_least": str(BURST_CHATS + warm), "timeout": "120"}
            async with fake.get("/_fake/calls", params=query) as response:
                response.raise_for_status()
            async with fake.get("/_fake/flood_log") as response:
                log = await response.json()
            complete = 0
            for chat in chats:
                async with fake.get(f"/_fake/chat/{chat}") as response:
                    shown = await response.json()
                complete += bool(shown) and shown[-1]["text"] == f"Echo: {_question(chat)}"
    first: dict[int, float] = {}
    for method, chat, at in log["calls"]:
        if method == "sendMessage" and chat in chats:
            first.setdefault(chat, (at - asked) * 1000)
    times = list(first.values())
    for stage, moments in (
        (f"{'warm' if warm else 'cold'}: model called", model.called.values()),
        ("model answered", model.answered.values()),
        ("first sendMessage", [asked + t / 1000 for t in times]),
    ):
        ms = [(t - asked) * 1000 for t in moments]
        quantiles = [percentile(ms, q) for q in (0.0, 0.1, 0.2, 0.5, 0.9, 1.0)]
        timeline.append([stage, len(ms), *quantiles])
    with contextlib.closing(sqlite3.connect(database)) as db:
        query = "SELECT role FROM messages WHERE text NOT LIKE ? ORDER BY id"
        roles = [role for (role,) in db.execute(query, (f"%{_question(WARM_CHAT)}",))]
    last_question = max(i for i, role in enumerate(roles) if role == "user")
    early = sum(role == "assistant" for role in roles[:last_question])
    timeline.append(["answers stored before the last question", early, *[""] * 6])
    # 100 calls at 30 a second: the 50th can go out 50/30 s after the first.
    uniform_floor = 1000 * (BURST_CHATS / 2) / OVERALL_PER_SECOND
    return [
        f"whole turns, {'warm' if warm else 'cold'}: {100 * complete / BURST_CHATS:.0f} % complete",
        BURST_CHATS,
        log["rate_limited"],
        percentile(times, 0.5),
        percentile(times, 0.99),
        uniform_floor,
        percentile(times, 0.5) / uniform_floor,
    ]


async def paced_only() -> list[object]:
    """The pacer's part of ``burst``: 100 finished replies handed to the Telegram reply at
    the same moment (no turn to compute), through python-telegram-bot to the fake."""
    chats = [8500 + n for n in range(BURST_CHATS)]
    with FakeTelegram() as telegram:
        async with Bot(telegram.token, base_url=f"{telegram.url}/bot") as client:
            flood = FloodControl()  # the channel's defaults: Telegram's limits
            replies = [TelegramReply(client, ChatPlace(c, group=False), flood) for c in chats]
            started = time.time()
            await asyncio.gather(*(r.emit(ReplyFinished("Echo: hello there")) for r in replies))
        first = [(_calls_in(telegram, c, 0)[0].time - started) * 1000 for c in chats]
        uniform_floor = 1000 * (BURST_CHATS / 2) / OVERALL_PER_SECOND
        return [
            "replies only",
            BURST_CHATS,
            len(telegram.rate_limited),
            percentile(first, 0.5),
            percentile(first, 0.99),
            uniform_floor,
            percentile(first, 0.5) / uniform_floor,
        ]


async def first_message_wait(tmp: Path, wait: str) -> list[list[object]]:
    """Replies of several lengths at a model's pace, each in its own chat, with the first
    message waiting ``wait`` seconds; returns a row per length."""
    rows: list[list[object]] = []
    with FakeTelegram() as telegram, FakeOpenAI(api_key=API_KEY) as openai:
        env = {"SWITCHBOARD_TELEGRAM_FIRST_MESSAGE_SECONDS": wait}
        async with bot(telegram.url, telegram.token, openai.base_url, tmp / f"w{wait}.db", **env):
            await _until(lambda: telegram.calls_to("getUpdates"))
            for index, length in enumerate(WAIT_LENGTHS):
                text = ("word " * length)[:length].strip()
                pieces = max(1, length // 4)  # a piece is a token, about 4 characters
                delay = length / CHARS_PER_SECOND / pieces
                openai.enqueue(Scripted(text=text, chunks=pieces, chunk_delay=delay))
                chat = 9000 + index
                asked = time.time()
                telegram.private_message(chat, "go")
                await _until(
                    lambda c=chat, t=text: (
                        bool(telegram.chat(c)) and (telegram.chat(c)[-1].text == t)
                    )
                )
                made = _calls_in(telegram, chat, asked)
                rows.append(
                    [
                        wait,
                        length,
                        f"{length / CHARS_PER_SECOND:.2f}",
                        len(made),
                        (made[0].time - asked) * 1000,
                        (made[-1].time - asked) * 1000,
                    ]
                )
    return rows


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telegram_pacing")
    parser.add_argument("--part", choices=["quiet", "burst", "wait", "all"], default="all")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        if args.part in ("quiet", "all"):
            rows = [run_loop(quiet(tmp, streamed)) for streamed in (False, True)]
            print(f"One private chat, {QUIET_TURNS} turns one after another")
            headers = [
                "reply",
                "turns",
                "first text p50 ms",
                "first text p99 ms",
                "complete p50 ms",
                "complete p99 ms",
                "calls/turn",
                "429s",
            ]
            print(table(headers, rows))
        if args.part in ("burst", "all"):
            timeline: list[list[object]] = []
            rows = [
                run_loop(burst(tmp, timeline)),
                run_loop(burst(tmp, timeline, warm=True)),
                run_loop(paced_only()),
            ]
            print(f"\n{BURST_CHATS} private chats at the same moment (load average {_load()})")
            headers = [
                "what",
                "chats",
                "429s",
                "first text p50 ms",
                "first text p99 ms",
                "30/s floor p50 ms",
                "p50 / floor",
            ]
            print(table(headers, rows))
            print("\nWhole turns: when each stage was reached, ms after the questions")
            headers = ["stage", "turns", "first", "p10", "p20", "p50", "p90", "last"]
            print(table(headers, timeline))
        if args.part in ("wait", "all"):
            rows = []
            for wait in WAIT_SETTINGS:
                rows.extend(run_loop(first_message_wait(tmp, wait)))
            print(
                f"\nThe first message's moment, replies streamed at {CHARS_PER_SECOND:.0f} chars/s"
            )
            headers = ["wait s", "chars", "stream s", "calls", "first text ms", "complete ms"]
            print(table(headers, rows))


if __name__ == "__main__":
    main()
