"""Benchmark: batch jobs.

Part 1 — building and uploading a batch: the prompts of a ``.txt`` file read and written as
the Batch API's JSONL request file (``core.jobs.prompts.build_requests``, the code
``/batch`` runs), then uploaded by ``OpenAIBatches.upload`` (one request up to 8 MB, the
Uploads API in 8 MB parts above) to the fake OpenAI server in its own process. Wall time
and the Python heap's peak (tracemalloc) of each step, for 1,000 to 50,000 prompts, and
50,000 long prompts.

Part 2 — one polling round with 1,000 open jobs, on SQLite and on PostgreSQL:
``BatchJobs.poll_once`` takes each due job's lease, asks the Batch API (a stand-in here: at
once, so the round's own cost; then after 100 ms, as a real API might answer) and records
the outcome, eight jobs at a time. Rounds are timed back to back.

Part 3 — turn latency while rounds run: chat turns through the inbound pipeline
(``InboundPipeline.handle``, the fake OpenAI answering), one at a time, with no polling and
then with polling rounds over 1,000 open jobs running back to back on the same event loop
and database (the worst case: a round every moment), alternately, on SQLite and
PostgreSQL.

    python -m bench.batch_jobs [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test]

``--postgres`` names a server where a scratch database is created (and dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import API_KEY, fake_openai_process, percentile, postgres_database, table
from bots.bootstrap import bootstrap
from core.conversation.channel import Outbox
from core.conversation.choices import ConversationChoices
from core.conversation.events import ReplyEvent, ReplyFinished
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.conversation.pipeline import Delivery
from core.conversation.tokens import TokenCounters
from core.conversation.turns import TurnRunner
from core.jobs.batch_api import BatchState
from core.jobs.batches import BatchJobs, BatchOptions
from core.jobs.openai_batches import OpenAIBatches
from core.jobs.prompts import build_requests, read_prompts
from core.jobs.sql_jobs import SqlJobStore
from core.jobs.store import NewJob
from core.models.registry import load_registry
from core.money.prices import load_prices
from core.money.sql_ledger import budget_ledger
from core.settings import load_settings
from core.storage.database import create_engine, upgrade
from core.storage.sql_store import conversation_store

SIZES = ((1_000, 1), (10_000, 1), (50_000, 1), (50_000, 16))
"""Prompts, and how many times the ~60-character question each one repeats."""
OPEN_JOBS = 1_000
ROUNDS = 5
TURNS = 200
"""Turns measured in each half of part 3 (twice each, alternately)."""


async def build_and_upload(base_url: str) -> list[list[object]]:
    registry = load_registry(None, None)
    model = registry.models[registry.defaults()["chat"]]
    mode = next(iter(registry.modes.values()))
    count = TokenCounters().for_encoding(model.encoding).count
    rows: list[list[object]] = []
    async with AsyncOpenAI(api_key=API_KEY, base_url=base_url) as client:
        api = OpenAIBatches(client)
        for size, repeat in SIZES:
            data = "".join(
                " ".join(
                    [f"Question {n}: what is a good name for a cat that likes boxes?"] * repeat
                )
                + "\n"
                for n in range(size)
            ).encode()
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "requests.jsonl"
                tracemalloc.start()
                started = time.perf_counter()
                built = build_requests(
                    read_prompts(data, "prompts.txt"),
                    path,
                    model=model,
                    mode=mode,
                    output_cap=1000,
                    count_tokens=count,
                )
                build_s = time.perf_counter() - started
                build_peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.reset_peak()
                started = time.perf_counter()
                await api.upload(built.path)
                upload_s = time.perf_counter() - started
                upload_peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            rows.append(
                [
                    f"{size:,}" + (" long" if repeat > 1 else ""),
                    f"{built.size / 1e6:.1f}",
                    f"{build_s:.2f}",
                    f"{build_peak / 1e6:.2f}",
                    f"{upload_s:.2f}",
                    f"{upload_peak / 1e6:.1f}",
                ]
            )
    return rows


class InstantBatches:
    """A Batch API that says every batch is still running after ``delay`` seconds (no
    network: the delay stands for the API's answer time)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def retrieve(self, batch_id: str) -> BatchState:
        if self.delay:
            await asyncio.sleep(self.delay)
        return BatchState(batch_id, "in_progress", total=10, completed=3)

    async def upload(self, path: Path) -> str:
        raise NotImplementedError("not used by this benchmark")

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> BatchState:
        raise NotImplementedError("not used by this benchmark")

    async def cancel(self, batch_id: str) -> BatchState:
        raise NotImplementedError("not used by this benchmark")

    async def find(self, key: str, value: str, since: datetime) -> BatchState | None:
        raise NotImplementedError("not used by this benchmark")

    async def content(self, file_id: str) -> bytes:
        raise NotImplementedError("not used by this benchmark")


class SilentChannel:
    """A channel that shows nothing (the jobs have no status message)."""

    def __init__(self, name: str = "console") -> None:
        self.name = name


class SteppingClock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        return self.moment


def stand_in_jobs(
    engine: AsyncEngine, delay: float, channel: str
) -> tuple[BatchJobs, SteppingClock]:
    """``BatchJobs`` on ``engine`` with the stand-in API and a clock the bench steps; its
    outbox reaches ``channel``."""
    store = conversation_store(engine)
    registry = load_registry(None, None)
    clock = SteppingClock()
    outbox = Outbox(store)
    outbox.attach(SilentChannel(channel))  # type: ignore[arg-type]
    batches = BatchJobs(
        api=InstantBatches(delay),
        webhooks=None,
        jobs=SqlJobStore(engine),
        store=store,
        choices=ConversationChoices(store, registry, TurnRunner(), clock, can_speak=False),
        outbox=outbox,
        ledger=budget_ledger(engine),
        prices=load_prices(None),
        count_tokens=lambda encoding: len,
        clock=clock,
        options=BatchOptions(
            poll_seconds=60, output_cap=1000, owner="bench", timezone=ZoneInfo("UTC")
        ),
    )
    return batches, clock


async def add_open_jobs(jobs: SqlJobStore, channel: str) -> None:
    key = {"channel": channel, "place": "ada", "scope": "", "thread": ""}
    for n in range(OPEN_JOBS):
        payload = {"key": key, "user": f"{channel}:ada", "model": "m", "requests": 10}
        await jobs.add(NewJob("batch", "in_progress", None, None, f"batch_{n}", payload))


@asynccontextmanager
async def scratch_database(postgres: str | None) -> AsyncIterator[str]:
    """A fresh SQLite file, or a fresh database on the PostgreSQL server ``postgres``."""
    if postgres is None:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite+aiosqlite:///{folder}/bench.db"
        return
    async with postgres_database(postgres) as url:
        yield url


async def polling_round(delay: float, postgres: str | None) -> list[object]:
    async with scratch_database(postgres) as url:
        await upgrade(url)
        engine = create_engine(url)
        try:
            batches, clock = stand_in_jobs(engine, delay, "console")
            await add_open_jobs(SqlJobStore(engine), "console")
            seconds: list[float] = []
            for _ in range(ROUNDS):
                clock.moment += timedelta(minutes=1)
                started = time.perf_counter()
                polled = await batches.poll_once()
                seconds.append(time.perf_counter() - started)
                assert polled == OPEN_JOBS, polled
        finally:
            await engine.dispose()
    return [
        "PostgreSQL" if postgres else "SQLite",
        f"{OPEN_JOBS:,}",
        f"{delay * 1000:.0f}",
        f"{percentile(seconds, 0.5) * 1000:.1f}",
        f"{percentile(seconds, 0.99) * 1000:.1f}",
        f"{percentile(seconds, 0.5) * 1000 / OPEN_JOBS:.2f}",
    ]


class NullReply:
    """A reply that shows nothing but whether the turn was answered."""

    def __init__(self) -> None:
        self.answered = False

    async def start(self) -> None:
        return None

    def factory(self, activity: object) -> NullReply:
        """This reply, whatever the activity shown."""
        return self

    async def close(self) -> None:
        return None

    async def emit(self, event: ReplyEvent) -> None:
        self.answered = self.answered or isinstance(event, ReplyFinished)


async def turns_while_polling(base_url: str, postgres: str | None) -> list[list[object]]:
    """Turn latency with and without polling rounds running, alternately."""
    async with scratch_database(postgres) as url:
        settings = load_settings(
            None,
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=base_url,
            DATABASE_URL=url,
            SWITCHBOARD_LOG_LEVEL="WARNING",
            SWITCHBOARD_USER_MESSAGES_PER_MINUTE=0,
        )
        async with bootstrap(settings) as app:
            engine = app.storage.database
            batches, clock = stand_in_jobs(engine, 0.0, "bench")
            await add_open_jobs(SqlJobStore(engine), "bench")
            counter = 0

            async def turns(count: int) -> list[float]:
                nonlocal counter
                seconds = []
                for _ in range(count):
                    counter += 1
                    key = ConversationKey("bench", place=f"c{counter % 20}")
                    message = IncomingMessage(key, UserRef("bench", "u1"), f"question {counter}")
                    reply = NullReply()
                    started = time.perf_counter()
                    await app.pipeline.handle(Delivery(message, reply.factory))
                    seconds.append(time.perf_counter() - started)
                    if not reply.answered:
                        raise RuntimeError(f"turn {counter} was not answered")
                return seconds

            async def rounds(stop: asyncio.Event) -> int:
                done = 0
                while not stop.is_set():
                    clock.moment += timedelta(minutes=1)
                    await batches.poll_once()
                    done += 1
                return done

            await turns(40)  # warm up
            quiet: list[float] = []
            busy: list[float] = []
            polled_rounds = 0
            for _ in range(2):
                quiet += await turns(TURNS)
                stop = asyncio.Event()
                poller = asyncio.create_task(rounds(stop))
                busy += await turns(TURNS)
                stop.set()
                polled_rounds += await poller
    where = "PostgreSQL" if postgres else "SQLite"
    return [
        [where, "no round running", f"{percentile(quiet, 0.5) * 1000:.1f}",
         f"{percentile(quiet, 0.99) * 1000:.1f}", "—"],
        [where, "rounds back to back", f"{percentile(busy, 0.5) * 1000:.1f}",
         f"{percentile(busy, 0.99) * 1000:.1f}", str(polled_rounds)],
    ]  # fmt: skip


async def main(postgres: str | None) -> None:
    databases = [None, postgres] if postgres else [None]
    with fake_openai_process() as base_url:
        built = await build_and_upload(base_url)
        latency = [row for db in databases for row in await turns_while_polling(base_url, db)]
    print("Building and uploading a batch\n")
    print(
        table(
            [
                "prompts",
                "file MB",
                "build s",
                "build peak MB",
                "upload s",
                "upload peak MB",
            ],
            built,
        )
    )
    print("\nOne polling round (the API a stand-in answering after a set delay)\n")
    print(
        table(
            [
                "database",
                "open jobs",
                "API answer ms",
                "round p50 ms",
                "round p99 ms",
                "ms per job",
            ],
            [await polling_round(delay, db) for db in databases for delay in (0.0, 0.1)],
        )
    )
    print(f"\nChat turns one at a time ({2 * TURNS} each way), 1,000 open jobs\n")
    print(table(["database", "polling", "turn p50 ms", "turn p99 ms", "rounds"], latency))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL for a scratch database")
    asyncio.run(main(parser.parse_args().postgres))
