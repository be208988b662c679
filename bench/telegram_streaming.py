"""Benchmark: the Telegram channel under Telegram's limits, and its throughput.

Part 1 — 50 private chats and 5 groups ask at once; each reply is 3,000 characters streamed
over about 5 seconds. The fake Bot API enforces Telegram's flood limits (1 message/s per
private chat with a burst of 3, 20 in any minute per group, 30 in any second overall) and
validates every HTML message. Reported: 429s received, replies complete and valid, edits
sent, time to first visible text and to the final message.

Part 2 — turns per second end to end through the adapter (python-telegram-bot polling the
fake Bot API, the engine, the fake OpenAI answering instantly from another process), with
the fake's limits raised, and the pacer's through its settings, so that they do not cap
the measurement (real Telegram caps a bot at about 30 messages a second overall). With
``--database postgres`` part 2 runs on a fresh database of the PostgreSQL server named by
``TEST_DATABASE_URL`` and also reports the round trips to it per turn.

    python -m bench.telegram_streaming [--runs N] [--part 1|2|all] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from bench.common import (
    API_KEY,
    RAISED,
    TOKEN,
    UNLIMITED,
    RoundTrips,
    fake_openai_process,
    fake_process,
    percentile,
    postgres_database,
    table,
)
from bots.bootstrap import App, bootstrap, run_loop
from bots.telegram.channel import TelegramChannel
from core.models.llm import LLMGateway
from core.settings import load_settings
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram

REPLY = " ".join(f"word{n:04d}" for n in range(334))[:3000]
PRIVATE_CHATS = 50
GROUPS = 5


@asynccontextmanager
async def bot(
    telegram_url: str,
    token: str,
    openai_url: str,
    database: Path | str,
    *,
    wrap_gateway: Callable[[LLMGateway], LLMGateway] | None = None,
    **env: str,
) -> AsyncIterator[App]:
    """The bot, its Telegram channel configured by ``env`` on top of the benchmark's settings;
    ``database`` is a SQLite file or a database URL (``wrap_gateway``: see ``bootstrap``)."""
    settings = load_settings(
        None,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=openai_url,
        DATABASE_URL=database if isinstance(database, str) else f"sqlite+aiosqlite:///{database}",
        TELEGRAM_BOT_TOKEN=token,
        TELEGRAM_BASE_URL=f"{telegram_url}/bot",
        TELEGRAM_BASE_FILE_URL=f"{telegram_url}/file/bot",
        SWITCHBOARD_LOG_LEVEL="WARNING",
        SWITCHBOARD_USER_MESSAGES_PER_MINUTE="0",
        **env,
    )
    async with bootstrap(settings, wrap_gateway=wrap_gateway) as app:
        channel = TelegramChannel(app.pipeline, app.outbox, settings)
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        try:
            yield app
        finally:
            stop.set()
            await task


async def streaming_under_limits(database: Path) -> list[list[object]]:
    with FakeTelegram() as telegram, FakeOpenAI(api_key=API_KEY) as openai:
        openai.enqueue(
            *[Scripted(text=REPLY, chunks=100, chunk_delay=0.05)] * (PRIVATE_CHATS + GROUPS)
        )
        async with bot(telegram.url, telegram.token, openai.base_url, database):
            while not telegram.calls_to("getUpdates"):
                await asyncio.sleep(0.01)
            chats = [1000 + n for n in range(PRIVATE_CHATS)]
            groups = [-1001000000000 - n for n in range(GROUPS)]
            asked: dict[int, float] = {}
            for chat in chats:
                asked[chat] = time.time()
                telegram.private_message(chat, "Tell me a long story")
            for group in groups:
                asked[group] = time.time()
                telegram.group_message(group, "a long story please", user_id=7, mention=True)
            done: dict[int, float] = {}
            while len(done) < len(asked):
                for chat in asked:
                    if chat not in done:
                        shown = telegram.chat(chat)
                        if shown and shown[-1].text == REPLY:
                            done[chat] = time.time()
                await asyncio.sleep(0.02)
        first: dict[int, float] = {}
        edits = 0
        for call in telegram.calls:
            chat = call.params.get("chat_id")
            if call.method == "sendMessage" and chat in asked and chat not in first:
                first[chat] = call.time
            edits += call.method == "editMessageText"
        valid = all(m.parse_mode == "HTML" for chat in asked for m in telegram.chat(chat))
        rows: list[list[object]] = []
        for label, members in (("private", chats), ("group", groups)):
            to_first = [(first[c] - asked[c]) * 1000 for c in members]
            to_final = [(done[c] - asked[c]) for c in members]
            rows.append(
                [
                    label,
                    len(members),
                    sum(1 for c in members if telegram.chat(c)[-1].text == REPLY),
                    sum(telegram.chat(c)[-1].edits for c in members),
                    percentile(to_first, 0.5),
                    percentile(to_first, 0.99),
                    percentile(to_final, 0.5),
                    percentile(to_final, 0.99),
                ]
            )
        rows.append(
            [
                "all",
                len(asked),
                f"429s: {len(telegram.rate_limited)}",
                edits,
                "",
                "",
                "",
                f"valid HTML: {valid}",
            ]
        )
        return rows


async def throughput(tmp: Path, turns: int, chats: int, database: str) -> list[list[object]]:
    if database == "postgres":
        async with postgres_database() as url:
            return await _throughput(url, turns, chats)
    return await _throughput(tmp / "throughput.db", turns, chats)


async def _throughput(database: Path | str, turns: int, chats: int) -> list[list[object]]:
    with (
        fake_openai_process() as openai_url,
        fake_process("tests.fakes.telegram_server", "FAKE_TELEGRAM", *UNLIMITED) as telegram_url,
    ):
        async with (
            bot(telegram_url, TOKEN, openai_url, database, **RAISED) as app,
            aiohttp.ClientSession(telegram_url) as fake,
        ):
            trips = RoundTrips(app.storage.database)

            # The load is made, and progress counted, by the fake Bot API's process, so that
            # the bot's process does nothing but serve.
            async def ask(texts: list[tuple[int, str]]) -> None:
                body = [{"chat_id": chat, "text": text} for chat, text in texts]
                async with fake.post("/_fake/private_messages", json=body) as response:
                    response.raise_for_status()

            async def answered(count: int) -> None:
                query = {"method": "sendMessage", "at_least": str(count), "timeout": "120"}
                async with fake.get("/_fake/calls", params=query) as response:
                    sent = (await response.json()).get("sendMessage", 0)
                if sent < count:
                    raise RuntimeError(f"only {sent} of {count} answers arrived")

            await ask([(5000 + n, "hello") for n in range(chats)])  # warm up: one per chat
            await answered(chats)
            await asyncio.sleep(0.5)
            trips.reset()
            started, cpu = time.perf_counter(), time.process_time()
            await ask([(5000 + n % chats, f"question {n}") for n in range(turns)])
            await answered(chats + turns)
            elapsed = time.perf_counter() - started
            cpu_ms = (time.process_time() - cpu) * 1000 / turns
            round_trips = trips.per_turn(turns)
            await asyncio.sleep(0.5)
            complete = 0
            for n in range(chats):
                async with fake.get(f"/_fake/chat/{5000 + n}") as response:
                    shown = await response.json()
                complete += shown[-1]["text"] == f"Echo: question {turns - chats + n}"
    return [[turns, chats, f"{elapsed:.2f}", turns / elapsed, cpu_ms, complete, round_trips]]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telegram_streaming")
    parser.add_argument("--runs", type=int, default=1, help="runs of part 1")
    parser.add_argument("--part", choices=["1", "2", "all"], default="all")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="part 2's database (postgres: a fresh database on TEST_DATABASE_URL's server)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("1", "all"):
            print("Streaming 3,000-character replies over ~5 s under Telegram's limits")
            headers = [
                "chats",
                "count",
                "complete",
                "edits",
                "first text p50 ms",
                "first text p99 ms",
                "final p50 s",
                "final p99 s",
            ]
            for run in range(args.runs):
                streaming = run_loop(streaming_under_limits(Path(tmp) / f"stream{run}.db"))
                print(f"\nRun {run + 1}")
                print(table(headers, streaming))
        if args.part in ("2", "all"):
            rate = run_loop(throughput(Path(tmp), 1000, 200, args.database))
            print(
                f"\nTurns per second end to end (instant upstream, limits raised, {args.database})"
            )
            headers = [
                "turns",
                "chats",
                "seconds",
                "turns/s",
                "CPU ms/turn",
                "chats answered",
                "DB round trips/turn (through SQLAlchemy)",
            ]
            print(table(headers, rate))


if __name__ == "__main__":
    main()
