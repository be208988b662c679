"""An in-memory ``BudgetLedger`` for unit tests; it passes the same contract suite as the
SQL ledger."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from core.money.budgets import (
    Budget,
    BudgetStatus,
    Claim,
    Hold,
    Payer,
    Reservation,
    Scope,
    claims_for,
    fits,
    refusal,
)
from core.money.periods import Period, window

CounterKey = tuple[Scope, str, Period, datetime]


@dataclass
class _Held:
    """A held reservation: whose, until when, on which counters, how much."""

    owner: str
    until: datetime
    keys: tuple[CounterKey, ...]
    amount: int
    released: bool = False


class InMemoryBudgetLedger:
    """Budgets and counters in dictionaries; one lock makes each operation atomic."""

    def __init__(self) -> None:
        self._budgets: dict[tuple[Scope, str, Period], Budget] = {}
        self._spent: dict[CounterKey, int] = {}
        self._reserved: dict[CounterKey, int] = {}
        self._holds: dict[str, _Held] = {}
        self._numbers = itertools.count(1)
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

    async def reserve(
        self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo, hold: Hold | None = None
    ) -> Reservation:
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
            name = None
            if claims and hold is not None:
                name = str(next(self._numbers))
                keys = tuple(_key(claim) for claim in claims)
                self._holds[name] = _Held(hold.owner, hold.until, keys, amount)
            return Reservation(tuple(claims), amount, name)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost (once, if it is held)."""
        async with self._lock:
            held = None
            if reservation.hold is not None:
                held = self._holds.pop(reservation.hold, None)
                if held is None:
                    return  # settled before
            amount = 0 if held is not None and held.released else reservation.amount
            for claim in reservation.claims:
                key = _key(claim)
                # Never below zero: a reset may have dropped the estimate already.
                self._reserved[key] = max(self._reserved.get(key, 0) - amount, 0)
                self._spent[key] = self._spent.get(key, 0) + actual

    async def renew(self, reservation: Reservation, until: datetime) -> None:
        """Extend a held reservation's lease."""
        async with self._lock:
            held = self._holds.get(reservation.hold or "")
            if held is not None and not held.released:
                held.until = until

    async def release_abandoned(self, now: datetime, gone: Callable[[str], bool]) -> int:
        """Release the held reservations whose lease ran out or whose owner is gone."""
        async with self._lock:
            released = 0
            for held in self._holds.values():
                if not held.released and (held.until < now or gone(held.owner)):
                    held.released = True
                    released += 1
                    for key in held.keys:
                        self._reserved[key] = max(self._reserved.get(key, 0) - held.amount, 0)
            return released

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
                    for held in self._holds.values():
                        held.released |= key in held.keys
            return reset

    def _select(self, subjects: Sequence[tuple[Scope, str]]) -> list[Budget]:
        wanted = set(subjects)
        return [b for b in self._budgets.values() if not wanted or (b.scope, b.subject) in wanted]


def _key(claim: Claim) -> CounterKey:
    return (claim.scope, claim.subject, claim.period, claim.window_start)
