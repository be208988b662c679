"""Benchmark: what budget enforcement costs.

Part 1 (SQLite) — the time a turn spends on its budgets: one reservation before the model
call and one settlement after, with three budgets applying (the user's own, the default's
monthly, the chat's), measured one turn at a time on a database that already holds them;
turns alternate between a reservation without a lease and one leased to the process (a
``Hold``, as the meter makes them), so the two rows compare in one run.

Part 2 (PostgreSQL, when ``TEST_DATABASE_URL`` or ``--postgres URL`` is given) — budget
checks per second: 100 users at once, each reserving and settling in a loop for a few
seconds on one PostgreSQL database through two engines (as two processes would), all under
a shared chat budget that keeps them contending for one row.

    python -m bench.quota_overhead [--postgres postgresql+asyncpg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import percentile, table
from core.money.budgets import Budget, BudgetExceeded, Hold, Payer, Scope
from core.money.periods import Period
from core.money.sql_ledger import SqlBudgetLedger, budget_ledger
from core.storage.database import create_engine, upgrade

ZONE = ZoneInfo("Europe/Berlin")
TURNS = 3_000
USERS = 100
SECONDS = 5.0


async def sqlite_overhead(database: Path) -> list[list[object]]:
    url = f"sqlite+aiosqlite:///{database}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        ledger = budget_ledger(engine)
        await _budgets(ledger, users=1000)
        payer = Payer("telegram:7", "telegram::-100:")
        timings: dict[bool, list[float]] = {False: [], True: []}
        for n in range(TURNS):
            leased = n % 2 == 1
            started = time.perf_counter()
            now = datetime.now(UTC)
            hold = Hold("bench:1:x", now + timedelta(seconds=20)) if leased else None
            reservation = await ledger.reserve(payer, 2_000, now, ZONE, hold)
            await ledger.settle(reservation, 1_000 + n % 7)
            timings[leased].append((time.perf_counter() - started) * 1000)
    finally:
        await engine.dispose()
    rows: list[list[object]] = []
    for leased, name in ((False, "reserve + settle"), (True, "reserve + settle, leased")):
        measured = timings[leased][50:]  # after warm-up
        rows.append(
            [
                name,
                len(measured),
                percentile(measured, 0.5),
                percentile(measured, 0.99),
                max(measured),
            ]
        )
    return rows


async def postgres_throughput(url: str, leased: bool) -> list[list[object]]:
    await upgrade(url)
    engines = [create_engine(url), create_engine(url)]
    try:
        await _clear(engines[0])
        ledgers = [SqlBudgetLedger(engine) for engine in engines]
        await _budgets(ledgers[0], users=USERS)
        checks = refused = 0
        deadline = time.monotonic() + SECONDS

        async def user(index: int) -> None:
            nonlocal checks, refused
            ledger = ledgers[index % 2]
            payer = Payer(f"telegram:{index}", "telegram::-100:")
            while time.monotonic() < deadline:
                now = datetime.now(UTC)
                hold = Hold(f"bench:{index % 2}:x", now + timedelta(seconds=20)) if leased else None
                try:
                    reservation = await ledger.reserve(payer, 2_000, now, ZONE, hold)
                except BudgetExceeded:
                    refused += 1
                    continue
                finally:
                    checks += 1
                await ledger.settle(reservation, 1_000)

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(USERS)))
        elapsed = time.perf_counter() - started
    finally:
        for engine in engines:
            await engine.dispose()
    return [[USERS, "yes" if leased else "no", f"{elapsed:.1f}", checks, refused, checks / elapsed]]


async def _budgets(ledger: SqlBudgetLedger, users: int) -> None:
    await ledger.set_budget(Budget(Scope.DEFAULT, "", Period.MONTHLY, 10**12))
    await ledger.set_budget(Budget(Scope.PLACE, "telegram::-100:", Period.DAILY, 10**12))
    for index in range(users):
        await ledger.set_budget(Budget(Scope.USER, f"telegram:{index}", Period.DAILY, 10**12))


async def _clear(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM budget_counters"))
        await connection.execute(text("DELETE FROM budget_holds"))
        await connection.execute(text("DELETE FROM budgets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(sqlite_overhead(Path(tmp) / "quota.db"))
    print("Budget enforcement per turn on SQLite (three budgets apply), ms")
    print(table(["work", "turns", "p50 ms", "p99 ms", "max ms"], rows))
    if not args.postgres:
        print("\n(no PostgreSQL URL given: part 2 skipped)")
        return
    rows = [
        row
        for leased in (False, True, False, True)  # alternating, in one run
        for row in asyncio.run(postgres_throughput(args.postgres, leased))
    ]
    print(f"\nBudget checks per second on PostgreSQL ({USERS} users at once, two engines)")
    print(table(["users", "leased", "seconds", "checks", "refused", "checks/s"], rows))


if __name__ == "__main__":
    main()
