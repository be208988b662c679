"""An in-memory ``BudgetLedger`` for unit tests; it passes the same contract suite as the
SQL ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from core.money.budgets import (
    Budget,
    BudgetStatus,
    Claim,
    Payer,
    Reservation,
    Scope,
    claims_for,
    fits,
    refusal,
)
from core.money.periods import Period, window

CounterKey = tuple[Scope, str, Period, datetime]


class InMemoryBudgetLedger:
    """Budgets and counters in dictionaries; one lock makes each operation atomic."""

    def __init__(self) -> None:
        self._budgets: dict[tuple[Scope, str, Period], Budget] = {}
        self._spent: dict[CounterKey, int] = {}
        self._reserved: dict[CounterKey, int] = {}
        self._lock = asyncio.Lock()

    async def set_budget(self, budget: Budget) -> None:
        """Create or replace the budget of its subject for its period."""
        async with self._lock:
            self._budgets[(budget.scope, budget.subject, budget.period)] = budget

    async def remove_budgets(self, scope: Scope, subject: str) -> int:
        """Remove every budget of a subject."""
        async with self._lock:
            doomed = [k for k in self._budgets if k[0] is scope and k[1] == subject]
            for key in doomed:
                del self._budgets[key]
            return len(doomed)

    async def budgets(self, subjects: Sequence[tuple[Scope, str]] = ()) -> list[Budget]:
        """The budgets of the given subjects (all when none are given)."""
        async with self._lock:
            return self._select(subjects)

    async def reserve(self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo) -> Reservation:
        """Hold ``amount`` against every applicable budget, all or nothing."""
        async with self._lock:
            subjects = [(Scope.USER, payer.user), (Scope.DEFAULT, ""), (Scope.PLACE, payer.place)]
            claims = claims_for(self._select(subjects), payer, now, tz)
            used = {
                claim: self._spent.get(_key(claim), 0) + self._reserved.get(_key(claim), 0)
                for claim in claims
            }
            refused = [
                (claim, max(claim.limit_micros - used[claim], 0))
                for claim in claims
                if not fits(amount, claim.limit_micros, used[claim])
            ]
            if refused:
                claim, left = min(refused, key=lambda pair: pair[1])
                raise refusal(claim, left, now, tz)
            for claim in claims:
                self._spent.setdefault(_key(claim), 0)
                self._reserved[_key(claim)] = self._reserved.get(_key(claim), 0) + amount
            return Reservation(tuple(claims), amount)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost."""
        async with self._lock:
            for claim in reservation.claims:
                key = _key(claim)
                # Never below zero: a reset may have dropped the estimate already.
                self._reserved[key] = max(self._reserved.get(key, 0) - reservation.amount, 0)
                self._spent[key] = self._spent.get(key, 0) + actual

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed."""
        await self.settle(reservation, 0)

    async def status(self, payer: Payer, now: datetime, tz: ZoneInfo) -> list[BudgetStatus]:
        """Each applicable budget with this window's spending."""
        async with self._lock:
            subjects = [(Scope.USER, payer.user), (Scope.DEFAULT, ""), (Scope.PLACE, payer.place)]
            return [
                BudgetStatus(
                    claim.budget,
                    window(claim.period, now, tz),
                    self._spent.get(_key(claim), 0),
                    self._reserved.get(_key(claim), 0),
                )
                for claim in claims_for(self._select(subjects), payer, now, tz)
            ]

    async def reset_spending(self, scope: Scope, subject: str, now: datetime, tz: ZoneInfo) -> int:
        """Forget what a user or place spent, and any estimate still held, in the current
        windows."""
        async with self._lock:
            reset = 0
            for period in Period:
                key = (scope, subject, period, window(period, now, tz).start)
                if key in self._spent:
                    self._spent[key] = 0
                    self._reserved[key] = 0
                    reset += 1
            return reset

    def _select(self, subjects: Sequence[tuple[Scope, str]]) -> list[Budget]:
        wanted = set(subjects)
        return [b for b in self._budgets.values() if not wanted or (b.scope, b.subject) in wanted]


def _key(claim: Claim) -> CounterKey:
    return (claim.scope, claim.subject, claim.period, claim.window_start)
