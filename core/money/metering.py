"""Metering: holding a call's estimated cost against the budgets before it is made, and
settling to what it really cost afterwards — one place for chat turns, tools and media."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.money.budgets import BudgetLedger, Payer


@dataclass(frozen=True)
class Charge:
    """Who pays for a call and where its usage rows go."""

    payer: Payer
    user_id: int | None
    conversation_id: int | None


class Bill:
    """What the calls of a metered block cost, added up as they return."""

    def __init__(self) -> None:
        self.cost = 0

    def add(self, cost: int) -> None:
        """Count one call's cost (integer micro-dollars)."""
        self.cost += cost


class Meter:
    """Reserves against every budget that applies, then settles (``BudgetLedger``)."""

    def __init__(self, ledger: BudgetLedger, clock: Clock, timezone: ZoneInfo) -> None:
        self.ledger = ledger
        self.timezone = timezone
        self._clock = clock

    @asynccontextmanager
    async def reserved(self, payer: Payer, estimate: int) -> AsyncIterator[Bill]:
        """Hold ``estimate`` for the block (over budget: ``BudgetExceeded``, and no call is
        made), then settle to what the block's calls cost, even if it fails or is stopped;
        nothing spent releases the reservation."""
        bill = Bill()
        reservation = await self.ledger.reserve(payer, estimate, self._clock.now(), self.timezone)
        try:
            yield bill
        finally:
            # Shielded: a /cancel arriving now must not leave the estimate held.
            await asyncio.shield(self.ledger.settle(reservation, bill.cost))
