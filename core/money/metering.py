"""Metering: holding a call's cost against the budgets before it is made — its exact or
upper-bound price, or for a chat call as much output as the money left pays for — and
settling to what it really cost afterwards; one place for chat turns, tools and media.

A process's reservations are leased to it (``HOLD_SECONDS``, renewed while the call runs), so
that those of a process that dies mid-call are released (``BudgetLedger.release_abandoned``,
run by turn recovery). A settle the database cannot take now is handed to ``unsettled``
(the spool), which writes it once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.errors import StorageUnavailable
from core.money.budgets import BudgetExceeded, BudgetLedger, Hold, Payer, Reservation, refusal
from core.money.pricing import LinearCost

log = logging.getLogger(__name__)

HOLD_SECONDS = 20.0
"""How long a reservation stays held without being renewed (renewed every third of it while
its call runs), as long as a turn's lease: when another machine takes over a dead process's
turn, that process's reservations are about to be released too. A dead process of this
machine is known dead at once (turn recovery asks)."""

SIZINGS = 3
"""Reservations tried for a capped call: the whole call, then what the budget that refused
has left pays for, and once more if others spent meanwhile."""


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


@dataclass(frozen=True, slots=True)
class Allowance:
    """A capped call's bill and how many units it may produce: ``None`` when no budget
    applies (no cap needed), else at most what was reserved pays for."""

    bill: Bill
    units: int | None


Settle = Callable[[Reservation, int], Awaitable[None]]
"""Settles a reservation to what its calls cost, later (when the database is back)."""


class Meter:
    """Reserves against every budget that applies, then settles (``BudgetLedger``). With an
    ``owner`` (this process's name) reservations are leased to it; ``unsettled`` takes the
    settles the database could not take."""

    def __init__(
        self,
        ledger: BudgetLedger,
        clock: Clock,
        timezone: ZoneInfo,
        *,
        owner: str | None = None,
        unsettled: Settle | None = None,
    ) -> None:
        self.ledger = ledger
        self.timezone = timezone
        self._clock = clock
        self._owner = owner
        self._unsettled = unsettled

    @asynccontextmanager
    async def reserved(
        self, payer: Payer, estimate: int, purpose: str = "this request"
    ) -> AsyncIterator[Bill]:
        """Hold ``estimate`` (the block's exact or upper-bound cost) for the block; if it
        does not fit in what a budget has left, ``BudgetExceeded`` says so for ``purpose``
        and no call is made. Afterwards settle to what the block's calls cost, even if it
        fails or is stopped; nothing spent releases the reservation."""
        now = self._clock.now()
        try:
            reservation = await self.ledger.reserve(
                payer, estimate, now, self.timezone, self._hold(now)
            )
        except BudgetExceeded as exc:
            raise self._refusal(exc, now, purpose) from None
        async with self._settled(reservation) as bill:
            yield bill

    @asynccontextmanager
    async def reserved_up_to(
        self, payer: Payer, cost: LinearCost, most: int, least: int, purpose: str
    ) -> AsyncIterator[Allowance]:
        """Hold the cost of as many units as fit, ``most`` at the most, for a block whose
        call is capped to ``Allowance.units``: first the whole call, which needs no read
        of the budgets; refused, the most that the refusing budget's money left pays for
        (once more if others spent meanwhile). When fewer than ``least`` units fit,
        ``BudgetExceeded`` says so for ``purpose`` and no call is made. Settled as
        ``reserved``."""
        now = self._clock.now()
        units = most
        for attempt in range(SIZINGS):
            try:
                reservation = await self.ledger.reserve(
                    payer, cost.of(units), now, self.timezone, self._hold(now)
                )
            except BudgetExceeded as exc:
                units = cost.units_within(exc.left_micros, most)
                if attempt == SIZINGS - 1 or exc.left_micros == 0 or units < least:
                    raise self._refusal(exc, now, purpose) from None
                continue
            break
        async with self._settled(reservation) as bill:
            yield Allowance(bill, units if reservation.claims else None)

    async def release_abandoned(self, gone: Callable[[str], bool]) -> int:
        """Release the reservations of dead processes (``gone`` owners, expired leases);
        returns how many were released."""
        released = await self.ledger.release_abandoned(self._clock.now(), gone)
        if released:
            log.info("released %d reservations left by processes that died", released)
        return released

    def _hold(self, now: datetime) -> Hold | None:
        if self._owner is None:
            return None
        return Hold(self._owner, now + timedelta(seconds=HOLD_SECONDS))

    @asynccontextmanager
    async def _settled(self, reservation: Reservation) -> AsyncIterator[Bill]:
        bill = Bill()
        renewing = asyncio.create_task(self._renew(reservation)) if reservation.hold else None
        try:
            yield bill
        finally:
            if renewing is not None:
                renewing.cancel()
            # Shielded: a /cancel arriving now must not leave the estimate held.
            await asyncio.shield(self._settle(reservation, bill.cost))

    async def _settle(self, reservation: Reservation, cost: int) -> None:
        try:
            await self.ledger.settle(reservation, cost)
        except StorageUnavailable as exc:
            if self._unsettled is None:
                raise
            log.error("database unavailable (%s); the budget's settle is spooled", exc)
            await self._unsettled(reservation, cost)

    async def _renew(self, reservation: Reservation) -> None:
        while True:
            await asyncio.sleep(HOLD_SECONDS / 3)
            until = self._clock.now() + timedelta(seconds=HOLD_SECONDS)
            with contextlib.suppress(Exception):  # tried again a third of a lease later
                await self.ledger.renew(reservation, until)

    def _refusal(self, exc: BudgetExceeded, now: datetime, purpose: str) -> BudgetExceeded:
        return refusal(exc.claim, exc.left_micros, now, self.timezone, purpose)
