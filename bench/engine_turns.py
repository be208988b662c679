"""Benchmark: the platform's own time per turn through the engine on SQLite.

The fake OpenAI server answers instantly from another process. For each turn we measure the
wall time of a turn through the inbound pipeline (``InboundPipeline.handle``) and,
separately, the time spent inside the model call (the openai client plus the fake); the
difference is the platform's own time: context
building, database reads and writes, events and bookkeeping.

    python -m bench.engine_turns [--turns 1000] [--big 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import API_KEY, UPSTREAM, TimedGateway, fake_openai_process, percentile, table
from bots.bootstrap import bootstrap
from core.conversation.events import ReplyEvent, ReplyFailed
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.conversation.pipeline import Delivery
from core.settings import load_settings
from core.storage.database import upgrade

CONVERSATION_HISTORY = 100  # messages already stored in each benchmarked conversation
CONVERSATIONS = 100  # conversations the turns are spread over


class NullSink:
    """A reply that discards events, remembering failures."""

    def __init__(self) -> None:
        self.failed: str | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def emit(self, event: ReplyEvent) -> None:
        if isinstance(event, ReplyFailed):
            self.failed = event.message


@dataclass
class Sample:
    total: float
    upstream: float

    @property
    def own(self) -> float:
        return self.total - self.upstream


def seed(path: Path, conversations: int, per_conversation: int) -> None:
    """Fill the database quickly with plain SQL: ``conversations`` x ``per_conversation``."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "and",
        "keeps",
        "on",
        "running",
        "far",
        "away",
    ]
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO users (id, channel, external_id) VALUES (1, 'bench', 'seed')")
        db.executemany(
            "INSERT INTO conversations (id, key, channel, active) VALUES (?, ?, 'bench', 1)",
            ((i, f"bench::c{i}:") for i in range(1, conversations + 1)),
        )
        rng = random.Random(7)
        batch = []
        for conversation in range(1, conversations + 1):
            for n in range(per_conversation):
                text = " ".join(rng.choices(words, k=30))
                batch.append((conversation, "user" if n % 2 == 0 else "assistant", text, 45))
            if len(batch) >= 50_000:
                db.executemany(_INSERT, batch)
                batch.clear()
        db.executemany(_INSERT, batch)


_INSERT = (
    "INSERT INTO messages (conversation_id, role, text, parts, token_count) "
    "VALUES (?, ?, ?, '{}', ?)"
)


async def run_turns(
    base_url: str, database: Path, concurrency: int, turns: int, rate: float = 0
) -> tuple[list[Sample], float, float]:
    """``turns`` turns spread round-robin over the first ``CONVERSATIONS`` seeded
    conversations: ``concurrency`` at a time (closed loop), or arriving at ``rate`` per
    second (open loop). Returns the samples, the elapsed time and CPU seconds per turn."""
    settings = load_settings(
        None,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=base_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_AUTO_MIGRATE=False,
        SWITCHBOARD_LOG_LEVEL="WARNING",
    )
    async with bootstrap(settings, wrap_gateway=TimedGateway) as app:
        pipeline = app.pipeline
        samples: list[Sample] = []

        async def turn(index: int) -> None:
            key = ConversationKey("bench", place=f"c{index % CONVERSATIONS + 1}")
            user = UserRef("bench", f"u{index % CONVERSATIONS}")
            spent: list[float] = []
            UPSTREAM.set(spent)
            sink = NullSink()
            started = time.perf_counter()
            message = IncomingMessage(key, user, f"question {index}")
            await pipeline.handle(Delivery(message, lambda _: sink))
            total = time.perf_counter() - started
            if sink.failed:
                raise RuntimeError(sink.failed)
            samples.append(Sample(total, sum(spent)))

        async def worker(offset: int, count: int) -> None:
            for n in range(count):
                await turn(offset + n * concurrency)

        async def run(count: int) -> float:
            started = time.perf_counter()
            if rate:
                # Open loop: turns arrive at a steady rate, whatever the replies' pace.
                tasks = []
                for index in range(count):
                    delay = started + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(turn(index)))
                await asyncio.gather(*tasks)
            else:
                each = count // concurrency
                await asyncio.gather(*(worker(i, each) for i in range(concurrency)))
            return time.perf_counter() - started

        # Warm up: every conversation answered once, so caches and connections are as in a
        # running bot; the measured turns follow.
        await run(CONVERSATIONS)
        samples.clear()
        gc.collect()
        cpu = time.process_time()
        elapsed = await run(turns)
        return samples, elapsed, (time.process_time() - cpu) / len(samples)


SCENARIOS = (
    ("closed loop, 1 at a time", 1, 0.0),
    ("closed loop, 100 at a time", 100, 0.0),
    ("open loop, 100 turns/s over 100 conversations", 100, 100.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1000, help="turns per scenario")
    parser.add_argument("--big", type=int, default=1_000_000, help="messages in the big DB")
    args = parser.parse_args()
    rows = []
    with fake_openai_process() as base_url, tempfile.TemporaryDirectory() as tmp:
        for stored in (1_000, args.big):
            database = Path(tmp) / f"bench-{stored}.db"
            asyncio.run(upgrade(f"sqlite+aiosqlite:///{database}"))
            conversations = max(CONVERSATIONS, stored // CONVERSATION_HISTORY)
            seed(database, conversations, stored // conversations)
            for name, concurrency, rate in SCENARIOS:
                samples, elapsed, cpu = asyncio.run(
                    run_turns(base_url, database, concurrency, args.turns, rate)
                )
                own = [s.own * 1000 for s in samples]
                total = [s.total * 1000 for s in samples]
                rows.append(
                    [
                        f"{stored:,}",
                        name,
                        len(samples),
                        percentile(own, 0.5),
                        percentile(own, 0.99),
                        percentile(total, 0.5),
                        percentile(total, 0.99),
                        cpu * 1000,
                        len(samples) / elapsed,
                    ]
                )
    print(
        table(
            [
                "stored messages",
                "load",
                "turns",
                "own p50 ms",
                "own p99 ms",
                "total p50 ms",
                "total p99 ms",
                "CPU ms/turn",
                "turns/s",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
