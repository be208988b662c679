"""Benchmark: batch jobs.

Part 1 — building and uploading a batch: the prompts of a ``.txt`` file read and written as
the Batch API's JSONL request file (``core.jobs.prompts.build_requests``, the code
``/batch`` runs), then uploaded through the openai SDK to the fake OpenAI server in its own
process. Wall time and the Python heap's peak (tracemalloc) of each step, for 1,000 to
50,000 prompts.

Part 2 — one polling round with 1,000 open jobs on SQLite: ``BatchJobs.poll_once`` takes
each due job's lease, asks the Batch API (a stand-in here: at once, so the round's own
cost; then after 100 ms, as a real API might answer) and records the outcome, eight jobs at
a time. Rounds are timed back to back.

    python -m bench.batch_jobs
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from openai import AsyncOpenAI

from bench.common import API_KEY, fake_openai_process, percentile, table
from core.conversation.channel import Outbox
from core.conversation.choices import ConversationChoices
from core.conversation.tokens import TokenCounters
from core.conversation.turns import TurnRunner
from core.jobs.batch_api import BatchState, WebhookEvent
from core.jobs.batches import BatchJobs, BatchOptions
from core.jobs.openai_batches import OpenAIBatches
from core.jobs.prompts import build_requests, read_prompts
from core.jobs.sql_jobs import SqlJobStore
from core.jobs.store import NewJob
from core.models.registry import load_registry
from core.money.prices import load_prices
from core.money.sql_ledger import budget_ledger
from core.storage.database import create_engine, upgrade
from core.storage.sql_store import conversation_store

SIZES = (1_000, 10_000, 50_000)
OPEN_JOBS = 1_000
ROUNDS = 5


async def build_and_upload(base_url: str) -> list[list[object]]:
    registry = load_registry(None, None)
    model = registry.models[registry.defaults()["chat"]]
    mode = next(iter(registry.modes.values()))
    count = TokenCounters().for_encoding(model.encoding).count
    rows: list[list[object]] = []
    async with AsyncOpenAI(api_key=API_KEY, base_url=base_url) as client:
        api = OpenAIBatches(client)
        for size in SIZES:
            data = "".join(
                f"Question {n}: what is a good name for a cat that likes boxes?\n"
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
                    f"{size:,}",
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

    async def content(self, file_id: str) -> bytes:
        raise NotImplementedError("not used by this benchmark")

    def verify_webhook(self, payload: bytes, headers: object, secret: str) -> WebhookEvent:
        raise NotImplementedError("not used by this benchmark")


class SilentChannel:
    """A console-named channel that shows nothing (the jobs have no status message)."""

    name = "console"


class SteppingClock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        return self.moment


async def polling_round(delay: float) -> list[list[object]]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await upgrade(url)
        engine = create_engine(url)
        try:
            store = conversation_store(engine)
            jobs = SqlJobStore(engine)
            registry = load_registry(None, None)
            clock = SteppingClock()
            outbox = Outbox(store)
            outbox.attach(SilentChannel())  # type: ignore[arg-type]
            batches = BatchJobs(
                api=InstantBatches(delay),
                jobs=jobs,
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
            key = {"channel": "console", "place": "ada", "scope": "", "thread": ""}
            for n in range(OPEN_JOBS):
                payload = {"key": key, "user": "console:ada", "model": "m", "requests": 10}
                await jobs.add(NewJob("batch", "in_progress", None, None, f"batch_{n}", payload))
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
        [
            f"{OPEN_JOBS:,}",
            f"{delay * 1000:.0f}",
            f"{percentile(seconds, 0.5) * 1000:.1f}",
            f"{percentile(seconds, 0.99) * 1000:.1f}",
            f"{percentile(seconds, 0.5) * 1000 / OPEN_JOBS:.2f}",
        ]
    ]


async def main() -> None:
    with fake_openai_process() as base_url:
        built = await build_and_upload(base_url)
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
    print("\nOne polling round, SQLite (the API a stand-in answering after a set delay)\n")
    print(
        table(
            ["open jobs", "API answer ms", "round p50 ms", "round p99 ms", "ms per job"],
            [*await polling_round(0.0), *await polling_round(0.1)],
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
