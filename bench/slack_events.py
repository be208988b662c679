"""Benchmark: the Slack channel's acknowledgements, dedupe, and streaming within Slack's limits.

Part 1 — 200 DM events arrive at once, and 50 of them are redelivered at once (same
``event_id``, ``X-Slack-Retry-Num: 1``). A sender process signs, posts and times each
delivery (two sender processes, one connection per event, all at once); the fake Slack
Web API and the fake OpenAI (answering instantly) run in processes of their own.
Reported: acknowledgement time p50/p99/max, replies per DM (must be exactly one), 429s.

Part 2 — 50 replies stream at once, each 3,000 characters over about 5 seconds: 40 in DMs
(grown by ``chat.update``) and 10 in threads of two channels (Slack's native streaming).
The fake enforces about one write a second per channel with a burst of 3, like Slack.
Reported: 429s received, complete replies, calls made, time to first text and to the end.

    python -m bench.slack_events
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import API_KEY, fake_openai_process, fake_process, percentile, table
from bots.bootstrap import App, bootstrap, run_loop
from bots.slack.channel import SlackChannel
from core.settings import load_settings
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.slack_server import FakeSlack, SentMessage, sign

EVENTS = 200
SENDERS = 2
WARM_UP = 20
REDELIVERED = 50
DMS = 40
THREADS = 10
REPLY = " ".join(f"word{n:04d}" for n in range(334))[:3000]
BOT_TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def bot(slack_api: str, openai_url: str, database: Path) -> AsyncIterator[str]:
    port = free_port()
    settings = load_settings(
        None,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=openai_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack_api,
        SLACK_PORT=port,
        SWITCHBOARD_LOG_LEVEL="WARNING",
    )
    app: App
    async with bootstrap(settings) as app:
        channel = SlackChannel(app.pipeline, app.outbox, settings)
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/slack/events"
        finally:
            stop.set()
            await task


async def acknowledgements(tmp: Path) -> list[list[object]]:
    args = ("--bot-token", BOT_TOKEN, "--signing-secret", SECRET)
    builder = FakeSlack(bot_token=BOT_TOKEN, signing_secret=SECRET)  # builds payloads only
    events = [builder.dm(f"U{n:05d}BENCH", "hi") for n in range(EVENTS)]
    first = [
        json.dumps(builder.event_envelope(e, event_id=f"Ev{n:08d}")).encode()
        for n, e in enumerate(events)
    ]
    warm_up = [
        json.dumps(builder.event_envelope(builder.dm(f"U{n:05d}WARM", "hi"))).encode()
        for n in range(WARM_UP)
    ]
    with (
        fake_openai_process() as openai_url,
        fake_process("tests.fakes.slack_server", "FAKE_SLACK", *args) as slack_url,
        ProcessPoolExecutor(SENDERS, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):

        async def send(url: str, bodies: list[bytes], retry_num: int | None = None) -> Results:
            """Post ``bodies`` all at once, spread over the sender processes."""
            loop = asyncio.get_running_loop()
            shares = [bodies[i::SENDERS] for i in range(SENDERS)]
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, _send_burst, url, s, retry_num) for s in shares)
            )
            return [result for part in parts for result in part]

        # Warm up the senders (a first burst is slow whatever it talks to), and time a
        # server that does nothing but answer 200: the floor this harness measures.
        await send(f"{slack_url}/api/api.test", first)
        floor = await _floor(lambda url: send(url, first))
        async with (
            bot(f"{slack_url}/api/", openai_url, tmp / "acks.db") as app_url,
            aiohttp.ClientSession(slack_url) as fake,
        ):
            await send(app_url, warm_up)
            await asyncio.sleep(2.0)
            deliveries = await send(app_url, first)
            retries = await send(app_url, first[:REDELIVERED], 1)
            channels = [str(e["channel"]) for e in events]
            deadline = time.monotonic() + 120
            counts: list[int] = []
            while time.monotonic() < deadline:
                counts = [await _replies(fake, channel) for channel in channels]
                if all(c >= 1 for c in counts):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # time for any duplicate to show up
            counts = [await _replies(fake, channel) for channel in channels]
            async with fake.get("/_fake/stats") as response:
                stats = await response.json()
    rows: list[list[object]] = []
    for label, results in (
        ("do-nothing server", floor),
        ("first delivery", deliveries),
        ("redelivery", retries),
    ):
        elapsed = [seconds * 1000 for _, seconds in results]
        rows.append(
            [
                label,
                len(results),
                sum(1 for status, _ in results if status == 200),
                percentile(elapsed, 0.5),
                percentile(elapsed, 0.99),
                max(elapsed),
            ]
        )
    rows.append(
        [
            "replies",
            f"{sum(1 for c in counts if c == 1)} DMs with exactly 1",
            f"duplicates: {sum(c - 1 for c in counts if c > 1)}",
            f"missing: {sum(1 for c in counts if c == 0)}",
            f"429s: {stats['rate_limited']}",
            "",
        ]
    )
    return rows


Results = list[tuple[int, float]]


async def _floor(send: Callable[[str], Awaitable[Results]]) -> Results:
    """The same burst against an aiohttp server in this process that only answers 200."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    try:
        await send(f"http://127.0.0.1:{port}/slack/events")  # warm up
        return await send(f"http://127.0.0.1:{port}/slack/events")
    finally:
        await runner.cleanup()


def _send_burst(app_url: str, bodies: list[bytes], retry_num: int | None = None) -> Results:
    """In the sender process: post every body at once, as Slack would, and time each."""
    return asyncio.run(_burst(app_url, bodies, retry_num)) if bodies else []


async def _burst(
    app_url: str, bodies: list[bytes], retry_num: int | None
) -> list[tuple[int, float]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def deliver(body: bytes) -> tuple[int, float]:
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": str(stamp),
                "X-Slack-Signature": sign(SECRET, stamp, body),
            }
            if retry_num is not None:
                headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "timeout"}
            started = time.perf_counter()
            async with session.post(app_url, data=body, headers=headers) as response:
                await response.read()
                return response.status, time.perf_counter() - started

        return await asyncio.gather(*(deliver(body) for body in bodies))


async def _replies(fake: aiohttp.ClientSession, channel: str) -> int:
    async with fake.get(f"/_fake/channel/{channel}") as response:
        shown = await response.json()
    return sum(1 for m in shown if m.get("is_bot") and not m.get("deleted"))


async def streaming(tmp: Path) -> list[list[object]]:
    with (
        FakeSlack(bot_token=BOT_TOKEN, signing_secret=SECRET, per_channel_rate=1.0) as slack,
        FakeOpenAI(api_key=API_KEY) as openai,
    ):
        openai.enqueue(*[Scripted(text=REPLY, chunks=100, chunk_delay=0.05)] * (DMS + THREADS))
        async with bot(slack.api_url, openai.base_url, tmp / "stream.db") as app_url:
            asked: dict[tuple[str, str | None], float] = {}
            for n in range(DMS):
                event = slack.dm(f"U{n:05d}DM", "Tell me a long story")
                asked[(str(event["channel"]), None)] = time.time()
                await slack.deliver_event(app_url, event)
            for n in range(THREADS):
                event = slack.mention(f"U{n:05d}TH", "a long story", channel=f"C0ROOM{n % 2}")
                asked[(str(event["channel"]), str(event["ts"]))] = time.time()
                await slack.deliver_event(app_url, event)
            done: dict[tuple[str, str | None], float] = {}
            deadline = time.monotonic() + 180
            while len(done) < len(asked) and time.monotonic() < deadline:
                for place in asked:
                    if place not in done and _final(slack, place) == REPLY:
                        done[place] = time.time()
                await asyncio.sleep(0.05)
        first: dict[tuple[str, str | None], float] = {}
        for call in slack.calls:
            if call.method in ("chat.postMessage", "chat.startStream") and call.error is None:
                channel = str(call.params.get("channel"))
                thread = call.params.get("thread_ts")
                place = (channel, str(thread) if thread else None)
                if place in asked and place not in first:
                    first[place] = call.time
        counts = slack.call_counts()
        rows: list[list[object]] = []
        for label, places in (
            ("DMs (updates)", [p for p in asked if p[1] is None]),
            ("threads (native)", [p for p in asked if p[1] is not None]),
        ):
            to_first = [(first[p] - asked[p]) * 1000 for p in places if p in first]
            to_final = [(done[p] - asked[p]) for p in places if p in done]
            rows.append(
                [
                    label,
                    len(places),
                    sum(1 for p in places if p in done),
                    percentile(to_first, 0.5) if to_first else math.nan,
                    percentile(to_first, 0.99) if to_first else math.nan,
                    percentile(to_final, 0.5) if to_final else math.nan,
                    percentile(to_final, 0.99) if to_final else math.nan,
                ]
            )
        calls = ", ".join(
            f"{method.removeprefix('chat.')} {counts.get(method, 0)}"
            for method in ("chat.postMessage", "chat.update", "chat.appendStream")
        )
        rows.append(["all", len(asked), f"429s: {slack.rate_limited}", calls, "", "", ""])
        return rows


def _final(slack: FakeSlack, place: tuple[str, str | None]) -> str:
    channel, thread = place
    shown: list[SentMessage] = slack.thread(channel, thread) if thread else slack.messages(channel)
    bot_messages = [m for m in shown if m.is_bot and not m.deleted]
    if not bot_messages or bot_messages[-1].streaming == "in_progress":
        return ""
    return "\n".join(
        str(b["text"]["text"]) for b in bot_messages[-1].blocks or [] if b["type"] == "section"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        acks = run_loop(acknowledgements(Path(tmp)))
        print(f"{EVENTS} DM events at once, then {REDELIVERED} redelivered at once")
        print(
            table(["deliveries", "count", "200 OK", "ack p50 ms", "ack p99 ms", "ack max ms"], acks)
        )
        stream = run_loop(streaming(Path(tmp)))
        print(
            f"\n{DMS + THREADS} replies of 3,000 characters streaming at once under Slack's limits"
        )
        print(
            table(
                [
                    "replies",
                    "count",
                    "complete",
                    "first text p50 ms",
                    "first text p99 ms",
                    "final p50 s",
                    "final p99 s",
                ],
                stream,
            )
        )


if __name__ == "__main__":
    main()
