"""The ``BudgetLedger`` contract, run on the in-memory fake, SQLite and PostgreSQL (the last
where ``TEST_DATABASE_URL`` is set), including reservations racing from two engines (as two
processes would) and from four OS processes on one database: budgets are hard limits, never
overspent by a micro-dollar."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.money.budgets import Budget, BudgetExceeded, BudgetLedger, Payer, Scope
from core.money.periods import Period
from core.money.sql_ledger import budget_ledger
from core.storage.database import upgrade
from tests.conftest import engine_for, every_ledger

UTC_ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ADA = Payer("telegram:42", "telegram::1001:")
BEN = Payer("telegram:43", "telegram::1001:")
DOLLAR = 1_000_000


@pytest.fixture
def ledger(ledgers: list[BudgetLedger]) -> BudgetLedger:
    return ledgers[0]


@every_ledger
class TestBudgetLedgerContract:
    """What every ``BudgetLedger`` promises."""

    async def test_a_budget_per_subject_and_period_is_replaced_not_duplicated(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 2 * DOLLAR))
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.MONTHLY, 10 * DOLLAR))
        await ledger.set_budget(Budget(Scope.DEFAULT, "", Period.DAILY, DOLLAR // 2))

        ada = await ledger.budgets([(Scope.USER, ADA.user)])
        everything = await ledger.budgets()
        removed = await ledger.remove_budgets(Scope.USER, ADA.user)

        assert sorted((b.period, b.limit_micros) for b in ada) == [
            (Period.DAILY, 2 * DOLLAR),
            (Period.MONTHLY, 10 * DOLLAR),
        ]
        assert len(everything) == 3
        assert removed == 2
        assert await ledger.budgets() == [Budget(Scope.DEFAULT, "", Period.DAILY, DOLLAR // 2)]

    async def test_reserve_settle_and_release_arithmetic(self, ledger: BudgetLedger) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))

        first = await ledger.reserve(ADA, 300_000, NOW, UTC_ZONE)
        [held] = await ledger.status(ADA, NOW, UTC_ZONE)
        await ledger.settle(first, 250_001)
        second = await ledger.reserve(ADA, 400_000, NOW, UTC_ZONE)
        await ledger.release(second)
        [after] = await ledger.status(ADA, NOW, UTC_ZONE)

        assert (held.spent_micros, held.reserved_micros) == (0, 300_000)
        assert (after.spent_micros, after.reserved_micros) == (250_001, 0)
        assert after.left_micros == 749_999

    async def test_a_reservation_cancelled_midway_holds_nothing(self, ledger: BudgetLedger) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        await ledger.set_budget(Budget(Scope.PLACE, ADA.place, Period.DAILY, DOLLAR))

        for pause in range(4):  # cancelled at different points of its work
            reserving = asyncio.create_task(ledger.reserve(ADA, 300_000, NOW, UTC_ZONE))
            for _ in range(pause):
                await asyncio.sleep(0)
            reserving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ledger.release(await reserving)  # finished before the cancel: undo it
        statuses = await ledger.status(ADA, NOW, UTC_ZONE)

        assert [s.reserved_micros for s in statuses] == [0, 0]

    async def test_a_call_that_does_not_fit_holds_nothing_anywhere(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, DOLLAR))
        await ledger.set_budget(Budget(Scope.PLACE, ADA.place, Period.DAILY, DOLLAR // 10))
        spent = await ledger.reserve(ADA, 60_000, NOW, UTC_ZONE)
        await ledger.settle(spent, 59_999)

        # The user's budget would take it; the chat's, with $0.040001 left, would not.
        with pytest.raises(BudgetExceeded) as refused:
            await ledger.reserve(ADA, 40_002, NOW, UTC_ZONE)
        statuses = await ledger.status(ADA, NOW, UTC_ZONE)

        assert refused.value.claim.budget.scope is Scope.PLACE
        assert refused.value.left_micros == 40_001
        assert str(refused.value).startswith(
            "This chat's daily budget of $0.10 has $0.040001 left, not enough for this request; "
            "it resets at 00:00 UTC (in 12 h)."
        )
        assert sorted((s.spent_micros, s.reserved_micros) for s in statuses) == [
            (59_999, 0),
            (59_999, 0),
        ]

    async def test_what_is_left_may_be_reserved_to_the_micro_dollar_and_no_more(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 10_000))
        await ledger.set_budget(Budget(Scope.USER, BEN.user, Period.DAILY, 10_000))
        held = await ledger.reserve(ADA, 9_700, NOW, UTC_ZONE)
        with pytest.raises(BudgetExceeded) as over:
            await ledger.reserve(ADA, 301, NOW, UTC_ZONE)
        exact = await ledger.reserve(ADA, 300, NOW, UTC_ZONE)
        with pytest.raises(BudgetExceeded) as used_up:
            await ledger.reserve(ADA, 1, NOW, UTC_ZONE)
        # More than the whole limit, on a counter that does not exist yet.
        with pytest.raises(BudgetExceeded) as too_big:
            await ledger.reserve(BEN, 10_001, NOW, UTC_ZONE)
        await ledger.settle(held, 9_700)
        await ledger.settle(exact, 300)
        [ada] = await ledger.status(ADA, NOW, UTC_ZONE)
        [ben] = await ledger.status(BEN, NOW, UTC_ZONE)

        assert over.value.left_micros == 300
        assert "has $0.0003 left, not enough for this request" in str(over.value)
        assert used_up.value.left_micros == 0
        assert "daily budget of $0.01 is used up; it resets" in str(used_up.value)
        assert too_big.value.left_micros == 10_000
        assert (ada.spent_micros, ada.reserved_micros, ada.left_micros) == (10_000, 0, 0)
        assert (ben.spent_micros, ben.reserved_micros, ben.left_micros) == (0, 0, 10_000)

    async def test_a_used_up_or_zero_budget_refuses_even_free_calls(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.TOTAL, 100))
        await ledger.set_budget(Budget(Scope.USER, BEN.user, Period.TOTAL, 0))
        spent = await ledger.reserve(ADA, 100, NOW, UTC_ZONE)
        await ledger.settle(spent, 100)

        for payer in (ADA, BEN):
            with pytest.raises(
                BudgetExceeded, match=r"total budget of \$0\.(0001|00) is used up; it never"
            ):
                await ledger.reserve(payer, 0, NOW, UTC_ZONE)

    async def test_the_default_applies_per_user_where_they_have_none_of_their_own(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.DEFAULT, "", Period.DAILY, 100))
        await ledger.set_budget(Budget(Scope.DEFAULT, "", Period.MONTHLY, 1_000))
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 500))

        ada = await ledger.reserve(ADA, 400, NOW, UTC_ZONE)
        ben = await ledger.reserve(BEN, 100, NOW, UTC_ZONE)  # his own default counter
        with pytest.raises(BudgetExceeded, match=r"daily budget of \$0.0001"):
            await ledger.reserve(BEN, 1, NOW, UTC_ZONE)
        statuses = await ledger.status(ADA, NOW, UTC_ZONE)

        assert sorted((c.budget.scope, c.period) for c in ada.claims) == [
            (Scope.DEFAULT, Period.MONTHLY),
            (Scope.USER, Period.DAILY),
        ]
        assert [c.subject for c in ben.claims] == [BEN.user, BEN.user]
        assert sorted((s.budget.period, s.reserved_micros) for s in statuses) == [
            (Period.DAILY, 400),
            (Period.MONTHLY, 400),
        ]

    async def test_a_new_window_starts_fresh_and_a_reset_forgets_spending(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000))
        before_midnight = datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC)
        spent = await ledger.reserve(ADA, 1_000, before_midnight, UTC_ZONE)
        await ledger.settle(spent, 1_000)
        with pytest.raises(BudgetExceeded):
            await ledger.reserve(ADA, 1, before_midnight, UTC_ZONE)

        next_day = await ledger.reserve(
            ADA, 1_000, before_midnight + timedelta(seconds=1), UTC_ZONE
        )
        await ledger.settle(next_day, 600)
        reset = await ledger.reset_spending(
            Scope.USER, ADA.user, before_midnight + timedelta(hours=1), UTC_ZONE
        )
        [status] = await ledger.status(ADA, before_midnight + timedelta(hours=1), UTC_ZONE)
        [yesterday] = await ledger.status(ADA, before_midnight, UTC_ZONE)

        assert reset == 1
        assert (status.spent_micros, status.left_micros) == (0, 1_000)
        assert yesterday.spent_micros == 1_000  # only the current window was reset

    async def test_a_reset_also_drops_estimates_left_held_and_later_settlements_still_count(
        self, ledger: BudgetLedger
    ) -> None:
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.TOTAL, 10_000))
        # A process died mid-call: its estimate stays held and would block the budget.
        await ledger.reserve(ADA, 6_000, NOW, UTC_ZONE)
        in_flight = await ledger.reserve(ADA, 4_000, NOW, UTC_ZONE)
        with pytest.raises(BudgetExceeded):
            await ledger.reserve(ADA, 1_000, NOW, UTC_ZONE)

        await ledger.reset_spending(Scope.USER, ADA.user, NOW, UTC_ZONE)
        await ledger.settle(in_flight, 400)  # the call under way when the admin reset
        [status] = await ledger.status(ADA, NOW, UTC_ZONE)
        again = await ledger.reserve(ADA, 1_000, NOW, UTC_ZONE)

        assert (status.spent_micros, status.reserved_micros) == (400, 0)
        assert again.amount == 1_000

    async def test_windows_follow_the_configured_timezone(self, ledger: BudgetLedger) -> None:
        tokyo = ZoneInfo("Asia/Tokyo")  # midnight there is 15:00 UTC
        await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000))
        spent = await ledger.reserve(ADA, 1_000, datetime(2026, 11, 25, 14, 59, tzinfo=UTC), tokyo)
        await ledger.settle(spent, 1_000)

        with pytest.raises(BudgetExceeded):
            await ledger.reserve(ADA, 1, datetime(2026, 11, 25, 14, 59, 59, tzinfo=UTC), tokyo)
        fresh = await ledger.reserve(ADA, 1, datetime(2026, 11, 25, 15, 0, tzinfo=UTC), tokyo)

        assert fresh.claims[0].window_start == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)

    async def test_concurrent_calls_never_overspend(self, ledgers: list[BudgetLedger]) -> None:
        await ledgers[0].set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 100_000))
        await ledgers[0].set_budget(Budget(Scope.PLACE, ADA.place, Period.DAILY, 7_000))
        estimate = 3_000

        async def attempt(index: int) -> bool:
            try:
                reservation = await ledgers[index % 2].reserve(ADA, estimate, NOW, UTC_ZONE)
            except BudgetExceeded:
                return False
            await asyncio.sleep(0.01)  # the call is under way while others try
            await ledgers[index % 2].settle(reservation, estimate)
            return True

        results = await asyncio.gather(*(attempt(i) for i in range(30)))
        statuses = await ledgers[1].status(ADA, NOW, UTC_ZONE)

        # 0 → 3,000 → 6,000, and a third would take the place past its 7,000 limit.
        assert sum(results) == 2
        assert sorted(s.spent_micros for s in statuses) == [6_000, 6_000]
        assert all(s.reserved_micros == 0 for s in statuses)

    async def test_concurrent_calls_of_every_size_never_hold_more_than_the_limit(
        self, ledgers: list[BudgetLedger]
    ) -> None:
        limit = 50_000
        await ledgers[0].set_budget(Budget(Scope.PLACE, ADA.place, Period.DAILY, limit))
        await ledgers[0].set_budget(Budget(Scope.USER, BEN.user, Period.DAILY, limit // 2))
        held_at_most = 0

        async def attempt(index: int) -> int:
            nonlocal held_at_most
            payer = ADA if index % 3 else BEN  # Ben also draws on his own, smaller budget
            amount = 1_000 + (index * 7_919) % 9_000
            ledger = ledgers[index % 2]
            try:
                reservation = await ledger.reserve(payer, amount, NOW, UTC_ZONE)
            except BudgetExceeded as exc:
                assert 0 <= exc.left_micros < amount
                return 0
            [place] = [s for s in await ledger.status(ADA, NOW, UTC_ZONE)]
            held_at_most = max(held_at_most, place.spent_micros + place.reserved_micros)
            await asyncio.sleep(0.005)
            spent = amount - index % 2  # a call may cost less than its estimate
            await ledger.settle(reservation, spent)
            return spent

        spent = await asyncio.gather(*(attempt(i) for i in range(40)))
        [place] = await ledgers[1].status(ADA, NOW, UTC_ZONE)

        assert held_at_most <= limit
        assert place.spent_micros == sum(spent) <= limit
        assert place.reserved_micros == 0
        assert sum(spent) > limit - 10_000  # it was filled, not refused wholesale


# --------------------------------------------------------------------- several processes

_WORKER = """
import asyncio, sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo
from core.money.budgets import BudgetExceeded, Payer
from core.storage.database import create_engine
from core.money.sql_ledger import budget_ledger

async def main(url: str, estimate: int, calls: int) -> None:
    engine = create_engine(url)
    ledger = budget_ledger(engine)
    payer = Payer("telegram:42", "telegram::1001:")
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    async def attempt() -> bool:
        try:
            reservation = await ledger.reserve(payer, estimate, now, ZoneInfo("UTC"))
        except BudgetExceeded:
            return False
        await asyncio.sleep(0.005)  # the call is under way while others try
        await ledger.settle(reservation, estimate)
        return True

    print("ready", flush=True)
    sys.stdin.readline()  # every process starts at once
    granted = await asyncio.gather(*(attempt() for _ in range(calls)))
    print(sum(granted), flush=True)
    await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def test_several_processes_never_overspend(database_url: str) -> None:
    """Four OS processes, each with its own engine and 25 calls at once, on one budget."""
    await upgrade(database_url)
    async with engine_for(database_url) as engine:
        ledger = budget_ledger(engine)
        limit, estimate = 100_000, 3_000
        await ledger.set_budget(Budget(Scope.PLACE, ADA.place, Period.DAILY, limit))
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WORKER,
                database_url,
                str(estimate),
                "25",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(4)
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert await asyncio.wait_for(worker.stdout.readline(), 60) == b"ready\n"
        outputs = await asyncio.gather(
            *(asyncio.wait_for(w.communicate(b"go\n"), 120) for w in workers)
        )
        granted = sum(int(out.strip()) for out, _ in outputs)
        [place] = await ledger.status(ADA, NOW, UTC_ZONE)

    assert all(w.returncode == 0 for w in workers)
    # 100,000 / 3,000: 33 calls fit, and not one more.
    assert granted == 33
    assert place.spent_micros == granted * estimate == 99_000
    assert place.reserved_micros == 0
