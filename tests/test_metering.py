"""The meter sizing a capped call (``Meter.reserved_up_to``) on the in-memory ledger: as
much output as the money left pays for, recomputed once when others spend meanwhile, and a
refusal without a call when not even the least fits; and ``LinearCost``'s arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from core.money.budgets import Budget, BudgetExceeded, Hold, Payer, Reservation, Scope
from core.money.metering import Meter
from core.money.periods import Period
from core.money.pricing import PER_MILLION, LinearCost
from tests.fakes.memory_budgets import InMemoryBudgetLedger

UTC_ZONE = ZoneInfo("UTC")
ADA = Payer("telegram:42", "telegram::1001:")
OTHER = Payer("telegram:42", "telegram::2002:")  # Ada again, in another chat
# 1,000 input tokens at $0.40 / 1M, then $1.60 / 1M output tokens.
CHAT = LinearCost(1_000 * 400_000, 1_600_000, PER_MILLION)


class FixedClock:
    """Noon on 25 November 2026, UTC."""

    def now(self) -> datetime:
        return datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class RacingLedger(InMemoryBudgetLedger):
    """The in-memory ledger where, after each of the first ``races`` refusals, another turn
    of the same user (another process, say) spends ``spent_by_others`` before the meter
    tries again."""

    def __init__(self, spent_by_others: int, races: int = 1_000) -> None:
        super().__init__()
        self.spent_by_others = spent_by_others
        self.races = races
        self.tried: list[int] = []

    async def reserve(
        self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo, hold: Hold | None = None
    ) -> Reservation:
        self.tried.append(amount)
        try:
            return await super().reserve(payer, amount, now, tz, hold)
        except BudgetExceeded:
            if self.races > 0:
                self.races -= 1
                other = await super().reserve(OTHER, self.spent_by_others, now, tz)
                await self.settle(other, self.spent_by_others)
            raise


async def held(ledger: InMemoryBudgetLedger) -> tuple[int, int]:
    [status] = await ledger.status(ADA, FixedClock().now(), UTC_ZONE)
    return status.spent_micros, status.reserved_micros


async def test_the_whole_call_is_held_when_it_fits() -> None:
    ledger = InMemoryBudgetLedger()
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000_000))
    meter = Meter(ledger, FixedClock(), UTC_ZONE)

    async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message") as allowed:
        during = await held(ledger)
        allowed.bill.add(500)

    assert allowed.units == 32_768
    assert during == (0, CHAT.of(32_768))
    assert await held(ledger) == (500, 0)


async def test_no_budget_means_no_cap() -> None:
    meter = Meter(InMemoryBudgetLedger(), FixedClock(), UTC_ZONE)
    async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message") as allowed:
        pass
    assert allowed.units is None


async def test_a_small_budget_gets_as_many_units_as_it_pays_for() -> None:
    ledger = InMemoryBudgetLedger()
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000))
    meter = Meter(ledger, FixedClock(), UTC_ZONE)

    async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message") as allowed:
        during = await held(ledger)

    # $0.001 - 1,000 input tokens ($0.0004) leaves $0.0006: 375 tokens at $1.60 / 1M.
    assert allowed.units == 375
    assert during == (0, 1_000)
    assert await held(ledger) == (0, 0)


async def test_others_spending_meanwhile_is_recomputed_once() -> None:
    ledger = RacingLedger(spent_by_others=200, races=1)
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000))
    meter = Meter(ledger, FixedClock(), UTC_ZONE)

    async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message") as allowed:
        during = await held(ledger)

    # Refused whole with $0.001 left, and others spend $0.0002; sized to $0.001: refused;
    # sized again to the $0.0008 left: 250 tokens.
    assert ledger.tried == [CHAT.of(32_768), 1_000, 800]
    assert allowed.units == 250
    assert during == (200, 800)


async def test_when_not_even_the_least_fits_no_call_is_made() -> None:
    ledger = RacingLedger(spent_by_others=0)
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 425))
    meter = Meter(ledger, FixedClock(), UTC_ZONE)

    with pytest.raises(BudgetExceeded) as refused:
        async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message"):
            pytest.fail("the block must not run")

    # $0.000425 pays for the input and 15 tokens, one short of the least.
    assert CHAT.units_within(425, 32_768) == 15
    assert ledger.tried == [CHAT.of(32_768)]  # refused once, then not tried again
    assert refused.value.left_micros == 425
    assert str(refused.value).startswith(
        "Your daily budget of $0.000425 has $0.000425 left, not enough for this message; "
        "it resets at 00:00 UTC (in 12 h)."
    )
    assert await held(ledger) == (0, 0)


async def test_others_spending_every_time_ends_in_a_refusal() -> None:
    ledger = RacingLedger(spent_by_others=100)
    await ledger.set_budget(Budget(Scope.USER, ADA.user, Period.DAILY, 1_000))
    meter = Meter(ledger, FixedClock(), UTC_ZONE)

    with pytest.raises(BudgetExceeded) as refused:
        async with meter.reserved_up_to(ADA, CHAT, 32_768, 16, "this message"):
            pytest.fail("the block must not run")

    assert ledger.tried == [CHAT.of(32_768), 1_000, 900]
    assert refused.value.left_micros == 800
    assert await held(ledger) == (300, 0)


@pytest.mark.parametrize(
    "cost",
    [CHAT, LinearCost(0, 7, 3), LinearCost(5, 0, 1), LinearCost(10**6 + 1, 2_500_000, 10**6)],
)
def test_units_within_is_the_most_that_fits(cost: LinearCost) -> None:
    for micros in range(0, 3_000, 7):
        units = cost.units_within(micros, 10**6)
        if units < 0:
            assert cost.of(0) > micros
            continue
        assert cost.of(units) <= micros
        assert units == 10**6 or cost.of(units + 1) > micros
