"""Reservations of a dead process are released, and nothing spent is wiped: every ledger
(in memory, SQLite both ways, PostgreSQL) leases held reservations, releases them when the
lease runs out or the owner is dead, and settles each exactly once; and a real
``switchboard run telegram`` killed with SIGKILL while a reservation is held leaves the
user's budget exact to the micro-dollar once the next process has recovered the turn."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from core.conversation.spool import SpooledWrite
from core.errors import StorageUnavailable
from core.money.budgets import Budget, BudgetExceeded, BudgetLedger, Hold, Payer, Reservation, Scope
from core.money.metering import Meter
from core.money.periods import Period
from core.money.sql_ledger import budget_ledger
from core.storage.database import upgrade
from core.storage.file_spool import FileSpool
from tests.conftest import engine_for, every_ledger
from tests.fakes.memory_budgets import InMemoryBudgetLedger
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.processes import kill_mid_turn, process_env, start_bot, until
from tests.test_metering import FixedClock

UTC_ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ADA = Payer("telegram:42", "telegram::1001:")
DOLLAR = 1_000_000
ALIVE = "host:1:alive"
DEAD = "host:2:dead"


async def held(ledger: BudgetLedger) -> tuple[int, int, int]:
    """ADA's daily counter: spent, reserved, left."""
    [status] = await ledger.status(ADA, NOW, UTC_ZONE)
    return status.spent_micros, status.reserved_micros, status.left_micros


def never_gone(owner: str) -> bool:
    return False


@every_ledger
class TestHeldReservations:
    """What every ``BudgetLedger`` promises about reservations held under a lease."""

    async def test_a_held_reservation_is_settled_once(self, ledgers: list[BudgetLedger]) -> None:
        ledger, other = ledgers
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        hold = Hold(ALIVE, NOW + timedelta(seconds=60))
        reservation = await ledger.reserve(ADA, 300_000, NOW, UTC_ZONE, hold)
        assert reservation.hold is not None
        assert await held(ledger) == (0, 300_000, 700_000)
        await ledger.settle(reservation, 123_456)
        await other.settle(reservation, 123_456)  # replayed from a spool: counts once
        assert await held(ledger) == (123_456, 0, DOLLAR - 123_456)

    async def test_an_expired_lease_releases_only_what_was_held(
        self, ledgers: list[BudgetLedger]
    ) -> None:
        ledger, other = ledgers
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        spent = await ledger.reserve(ADA, 100_000, NOW, UTC_ZONE, Hold(ALIVE, NOW))
        await ledger.settle(spent, 40_000)
        short = await ledger.reserve(ADA, 200_000, NOW, UTC_ZONE, Hold(DEAD, NOW))
        long = await ledger.reserve(
            ADA, 300_000, NOW, UTC_ZONE, Hold(ALIVE, NOW + timedelta(seconds=60))
        )
        assert await held(ledger) == (40_000, 500_000, 460_000)
        assert await other.release_abandoned(NOW, never_gone) == 0  # nothing expired yet
        later = NOW + timedelta(seconds=1)
        assert await other.release_abandoned(later, never_gone) == 1
        assert await ledger.release_abandoned(later, never_gone) == 0  # released once
        assert await held(ledger) == (40_000, 300_000, 660_000)
        # The call was only cut off: its settle still adds what it cost, and nothing more.
        await ledger.settle(short, 50_000)
        assert await held(ledger) == (90_000, 300_000, 610_000)
        await ledger.settle(long, 10_000)
        assert await held(ledger) == (100_000, 0, 900_000)

    async def test_a_renewed_lease_is_kept(self, ledgers: list[BudgetLedger]) -> None:
        ledger, other = ledgers
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        reservation = await ledger.reserve(ADA, 250_000, NOW, UTC_ZONE, Hold(ALIVE, NOW))
        await ledger.renew(reservation, NOW + timedelta(seconds=60))
        assert await other.release_abandoned(NOW + timedelta(seconds=30), never_gone) == 0
        assert await held(ledger) == (0, 250_000, 750_000)
        assert await other.release_abandoned(NOW + timedelta(seconds=61), never_gone) == 1
        assert await held(ledger) == (0, 0, DOLLAR)

    async def test_a_dead_owner_s_reservations_are_released_at_once(
        self, ledgers: list[BudgetLedger]
    ) -> None:
        ledger, other = ledgers
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        later = NOW + timedelta(seconds=60)
        spooled = await ledger.reserve(ADA, 100_000, NOW, UTC_ZONE, Hold(DEAD, later))
        await ledger.reserve(ADA, 200_000, NOW, UTC_ZONE, Hold(DEAD, later))
        await ledger.reserve(ADA, 300_000, NOW, UTC_ZONE, Hold(ALIVE, later))
        released = await other.release_abandoned(NOW, lambda owner: owner == DEAD)
        assert released == 2
        assert await held(ledger) == (0, 300_000, 700_000)
        # The dead process had spooled this settle: replayed by its successor, it counts once.
        await other.settle(spooled, 60_000)
        await other.settle(spooled, 60_000)
        assert await held(ledger) == (60_000, 300_000, 640_000)

    async def test_a_reset_drops_what_is_held_and_the_settle_still_charges(
        self, ledgers: list[BudgetLedger]
    ) -> None:
        ledger, _ = ledgers
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        before = await ledger.reserve(
            ADA, 400_000, NOW, UTC_ZONE, Hold(ALIVE, NOW + timedelta(seconds=60))
        )
        await ledger.reset_spending(Scope.USER, ADA.user, NOW, UTC_ZONE)
        after = await ledger.reserve(
            ADA, 300_000, NOW, UTC_ZONE, Hold(ALIVE, NOW + timedelta(seconds=60))
        )
        await ledger.settle(before, 70_000)  # must not eat into the reservation made since
        assert await held(ledger) == (70_000, 300_000, 630_000)
        await ledger.settle(after, 20_000)
        assert await held(ledger) == (90_000, 0, 910_000)

    async def test_without_a_budget_nothing_is_held(self, ledgers: list[BudgetLedger]) -> None:
        ledger, _ = ledgers
        reservation = await ledger.reserve(ADA, 100_000, NOW, UTC_ZONE, Hold(ALIVE, NOW))
        assert reservation.hold is None and reservation.claims == ()
        assert await ledger.release_abandoned(NOW + timedelta(days=1), never_gone) == 0


@pytest.mark.parametrize(
    ("ledger_kind", "database_url"),
    [("sqlite", "sqlite"), ("sqlite-portable", "sqlite"), ("postgresql", "postgresql")],
    indirect=True,
    ids=["sqlite", "sqlite-portable", "postgresql"],
)
async def test_released_holds_no_settle_came_for_are_forgotten_by_a_later_round(
    ledgers: list[BudgetLedger], database_url: str
) -> None:
    """A released hold waits a day for a settle; then the next recovery round forgets it,
    even when that round has nothing new to release."""
    ledger, other = ledgers
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
    await ledger.reserve(ADA, 100_000, NOW, UTC_ZONE, Hold(DEAD, NOW))
    await ledger.reserve(ADA, 200_000, NOW, UTC_ZONE, Hold(DEAD, NOW))
    kept = await ledger.reserve(ADA, 300_000, NOW, UTC_ZONE, Hold(ALIVE, NOW + timedelta(days=3)))

    async def hold_rows() -> list[tuple[int, bool]]:
        async with engine_for(database_url) as engine, engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT amount, released FROM budget_holds ORDER BY amount")
            )
            return [(int(amount), bool(released)) for amount, released in rows]

    assert await other.release_abandoned(NOW + timedelta(seconds=1), never_gone) == 2
    assert await hold_rows() == [(100_000, True), (200_000, True), (300_000, False)]
    # Within the day the rows wait for a settle that may still come.
    assert await other.release_abandoned(NOW + timedelta(hours=23), never_gone) == 0
    assert len(await hold_rows()) == 3
    # A later round with nothing to release forgets them; the live hold stays.
    assert await other.release_abandoned(NOW + timedelta(days=1, seconds=2), never_gone) == 0
    assert await hold_rows() == [(300_000, False)]
    assert await held(ledger) == (0, 300_000, 700_000)
    await ledger.settle(kept, 250_000)
    assert await held(ledger) == (250_000, 0, 750_000)
    assert await hold_rows() == []


class UnreachableAtSettle(InMemoryBudgetLedger):
    """The database goes away between the reservation and its settle."""

    async def settle(self, reservation: Reservation, actual: int) -> None:
        raise StorageUnavailable("connection refused")


async def test_the_meter_leases_to_its_process_and_spools_a_settle_it_cannot_write(
    tmp_path: Path,
) -> None:
    ledger = UnreachableAtSettle()
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
    spool = FileSpool(tmp_path / "spool")

    async def unsettled(reservation: Reservation, cost: int) -> None:
        await spool.keep(SpooledWrite(None, None, settles=reservation, cost=cost))

    meter = Meter(ledger, FixedClock(), UTC_ZONE, owner=ALIVE, unsettled=unsettled)
    async with meter.reserved(ADA, 300_000) as bill:
        bill.add(120_000)
    [(_, write)] = await spool.pending()
    assert write.settles is not None and write.cost == 120_000
    assert write.settles.hold is not None and write.settles.amount == 300_000
    # Written when the database is back (the spool's replay), once however often it is.
    await InMemoryBudgetLedger.settle(ledger, write.settles, write.cost)
    await InMemoryBudgetLedger.settle(ledger, write.settles, write.cost)
    assert await held(ledger) == (120_000, 0, DOLLAR - 120_000)


async def test_a_dead_process_s_whole_budget_is_free_again_for_its_recovered_turn() -> None:
    ledger = InMemoryBudgetLedger()
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
    # What a process killed mid-call leaves: all the money held, never settled.
    await ledger.reserve(ADA, DOLLAR, NOW, UTC_ZONE, Hold(DEAD, NOW + timedelta(seconds=20)))
    alive = Meter(ledger, FixedClock(), UTC_ZONE, owner=ALIVE)
    with pytest.raises(BudgetExceeded):
        async with alive.reserved(ADA, 1):
            pass
    assert await alive.release_abandoned(lambda owner: owner == DEAD) == 1
    async with alive.reserved(ADA, DOLLAR) as bill:
        bill.add(5)
    assert await held(ledger) == (5, 0, DOLLAR - 5)


# --- a real process killed while it holds a reservation -----------------------------------

USER = 1001
LIMIT = 2 * DOLLAR
ANSWER = "The capital of France is Paris."


async def database_rows(url: str, query: str) -> list[tuple[object, ...]]:
    async with engine_for(url) as engine, engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(text(query))).all()]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_killed_process_s_reservation_is_released_and_the_turn_charged_once(
    database_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as engine:
        await budget_ledger(engine).set_budget(Budget(Scope.DEFAULT, "", Period.DAILY, LIMIT))
    env = process_env(fake_openai, database_url, SWITCHBOARD_SPOOL_DIR=str(tmp_path / "spool"))
    counter = (
        "SELECT spent_micros, reserved_micros FROM budget_counters "
        f"WHERE scope = 'user' AND subject = 'telegram:{USER}'"
    )
    with FakeTelegram() as telegram:
        first = await kill_mid_turn(env, tmp_path, telegram, fake_openai, USER)
        [(spent, reserved)] = await database_rows(database_url, counter)
        holds = await database_rows(database_url, "SELECT owner, released FROM budget_holds")
        assert spent == 0 and reserved > 0  # the dead process's estimate is held
        assert len(holds) == 1 and f":{first.pid}:" in str(holds[0][0]) and not holds[0][1]
        fake_openai.enqueue(Scripted(text=ANSWER))
        second = await start_bot(env, tmp_path, telegram)
        try:
            await until(lambda: any(m.text == ANSWER for m in telegram.chat(USER)))

            async def settled() -> bool:
                rows = await database_rows(database_url, counter)
                return rows[0][1] == 0 and rows[0][0] > 0

            await until(settled)
        finally:
            second.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(second.communicate(), 30)
            print(errors.decode(errors="replace"))  # shown if the test fails
    assert second.returncode == 0, errors.decode()
    [(spent, reserved)] = await database_rows(database_url, counter)
    usage = await database_rows(database_url, "SELECT cost_micros FROM usage")
    # The recovered turn is charged once: one usage row, and the counter holds exactly it.
    assert len(usage) == 1 and int(str(usage[0][0])) > 0
    assert (spent, reserved) == (usage[0][0], 0)
    # Only the dead process's hold is left, released (a settle from its spool would count).
    holds = await database_rows(database_url, "SELECT owner, released FROM budget_holds")
    assert len(holds) == 1 and f":{first.pid}:" in str(holds[0][0]) and holds[0][1]
    async with engine_for(database_url) as engine:
        [status] = await budget_ledger(engine).status(
            Payer(f"telegram:{USER}", f"telegram::{USER}:"), datetime.now(UTC), UTC_ZONE
        )
    assert status.left_micros == LIMIT - int(str(usage[0][0]))
    assert [m.text for m in telegram.chat(USER)].count(ANSWER) == 1
