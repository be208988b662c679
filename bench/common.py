"""Shared benchmark helpers: the fake OpenAI server in another process, and percentiles."""

from __future__ import annotations

import contextvars
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models.llm import LLMEvent, LLMGateway, LLMRequest

API_KEY = "sk-bench"
TOKEN = "123456:BENCH-token"
# The arguments of a fake Bot API process with no limits of its own.
UNLIMITED = (
    "--private-rate",
    "1000000",
    "--private-burst",
    "1000000",
    "--group-per-minute",
    "1000000",
    "--group-burst",
    "1000000",
    "--global-per-second",
    "1000000",
    "--token",
    TOKEN,
)
RAISED = {
    "SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND": "1000000",
    "SWITCHBOARD_TELEGRAM_CHAT_BURST": "1000000",
    "SWITCHBOARD_TELEGRAM_GROUP_PER_MINUTE": "1000000",
    "SWITCHBOARD_TELEGRAM_GROUP_BURST": "1000000",
    "SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND": "1000000",
}
"""The pacer's limits raised as for a self-hosted Bot API server without limits, so that
1,000 turns take seconds, not minutes."""

UPSTREAM: contextvars.ContextVar[list[float]] = contextvars.ContextVar("upstream")
"""The seconds the current turn spent waiting for the API, appended by the timing wrappers;
set a fresh list before each turn."""


class TimedGateway:
    """Wraps the real gateway and adds the time spent in model calls to ``UPSTREAM``."""

    def __init__(self, inner: LLMGateway) -> None:
        self._inner = inner

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        spent = UPSTREAM.get()
        iterator = self._inner.stream(request).__aiter__()
        while True:
            began = time.perf_counter()
            try:
                event = await iterator.__anext__()
            except StopAsyncIteration:
                spent.append(time.perf_counter() - began)
                return
            spent.append(time.perf_counter() - began)
            yield event


@contextmanager
def fake_process(module: str, marker: str, *args: str) -> Iterator[str]:
    """Run a fake from ``tests.fakes`` in its own process; yields the URL it announces."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(f"{marker} "):
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def fake_openai_process() -> AbstractContextManager[str]:
    """The fake OpenAI server in its own process; yields its base URL."""
    return fake_process("tests.fakes.openai_server", "FAKE_OPENAI", "--api-key", API_KEY)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain Markdown table."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, 0 for no values."""
    return statistics.fmean(values) if values else 0.0


@asynccontextmanager
async def postgres_database(admin_url: str | None = None) -> AsyncIterator[str]:
    """A fresh PostgreSQL database on the server ``admin_url`` names (by default the one
    ``TEST_DATABASE_URL`` names, as the tests use it), dropped afterwards; yields its URL."""
    admin_url = admin_url or os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        raise SystemExit("--database postgres needs TEST_DATABASE_URL (postgresql+asyncpg://…)")
    admin = make_url(admin_url)
    name = f"sb_bench_{secrets.token_hex(6)}"

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(
            host=admin.host,
            port=admin.port,
            user=admin.username,
            password=admin.password,
            database=admin.database,
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    await execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        await execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RoundTrips:
    """Counts what an engine sends to the database, by kind: statements (each one round
    trip once prepared), transactions begun (a ``BEGIN`` goes with the first statement),
    commits, rollbacks that ended a transaction, and pings of pooled connections. The
    SQLite store's one-hop writes bypass the engine and are not counted; on PostgreSQL
    everything goes through it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: Counter[str] = Counter()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._statement)
        event.listen(sync, "begin", self._transaction("begin"))
        event.listen(sync, "commit", self._transaction("commit"))
        event.listen(sync, "rollback", self._transaction("rollback"))
        # Pings have no event: the dialect's own method is wrapped to count them.
        dialect = engine.dialect
        ping = dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            self.counts["ping"] += 1
            return bool(ping(dbapi_connection))

        dialect.do_ping = counted_ping  # type: ignore[method-assign]

    def _statement(self, *_: Any) -> None:
        self.counts["statement"] += 1

    def _transaction(self, kind: str) -> Any:
        """Counts ``kind`` unless the connection is in autocommit (nothing is sent then)."""

        def count(connection: Any) -> None:
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                self.counts[kind] += 1

        return count

    def reset(self) -> None:
        """Start counting afresh."""
        self.counts.clear()

    def per_turn(self, turns: int) -> str:
        """Round trips per turn and their kinds, e.g. ``9.0 (statement 4.0, …)``."""
        kinds = dict(self.counts)
        total = sum(kinds.values())
        parts = ", ".join(f"{k} {v / turns:.1f}" for k, v in sorted(kinds.items()))
        return f"{total / turns:.1f} ({parts})"
