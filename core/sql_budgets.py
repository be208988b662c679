"""``BudgetLedger`` on SQLAlchemy 2 async, for SQLite and PostgreSQL.

A reservation is one transaction: per applicable budget, the counter row of the current
window is created if missing, then raised by a conditional ``UPDATE`` that only matches
while spending plus reservations are still under the limit. PostgreSQL locks the row and
re-checks the condition for a concurrent writer; SQLite has one writer at a time. Either
way only one call can take a budget past its limit, so spending exceeds it by at most one
call's estimate (estimates are upper bounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.budgets import (
    Budget,
    BudgetExceeded,
    BudgetStatus,
    Claim,
    Payer,
    Reservation,
    Scope,
    claims_for,
    exceeded_message,
)
from core.periods import Period, window
from core.sql_models import BudgetCounterRow, BudgetRow

_budgets = cast(Table, BudgetRow.__table__)
_counters = cast(Table, BudgetCounterRow.__table__)


class SqlBudgetLedger:
    """Budgets and per-window counters in a relational database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite

    async def set_budget(self, budget: Budget) -> None:
        """Create or replace the budget of its subject for its period."""
        values = {
            "scope": budget.scope.value,
            "subject": budget.subject,
            "period": budget.period.value,
            "limit_micros": budget.limit_micros,
        }
        statement = self._dialect.insert(_budgets).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["scope", "subject", "period"],
            set_={"limit_micros": budget.limit_micros},
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def remove_budgets(self, scope: Scope, subject: str) -> int:
        """Remove every budget of a subject; returns how many there were."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(_budgets).where(
                    _budgets.c.scope == scope.value, _budgets.c.subject == subject
                )
            )
        return int(result.rowcount or 0)

    async def budgets(self, subjects: Sequence[tuple[Scope, str]] = ()) -> list[Budget]:
        """The budgets of the given subjects (all budgets when none are given)."""
        async with self._engine.connect() as connection:
            return await self._load(connection, subjects)

    async def reserve(self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo) -> Reservation:
        """Hold ``amount`` against every budget that applies to ``payer``, all or nothing,
        while each is under its limit."""
        async with self._engine.begin() as connection:
            budgets = await self._load(connection, _subjects(payer))
            # A fixed order, so that two reservations never wait on each other's rows.
            claims = sorted(
                claims_for(budgets, payer, now, tz),
                key=lambda c: (c.scope, c.subject, c.period, c.window_start),
            )
            for claim in claims:
                await connection.execute(
                    self._dialect.insert(_counters)
                    .values(**_key_values(claim), spent_micros=0, reserved_micros=0)
                    .on_conflict_do_nothing()
                )
                used = _counters.c.spent_micros + _counters.c.reserved_micros
                result = await connection.execute(
                    update(_counters)
                    .where(_key(claim), used < claim.limit_micros)
                    .values(reserved_micros=_counters.c.reserved_micros + amount)
                )
                if not result.rowcount:
                    # Leaving the block rolls back the claims already made.
                    raise BudgetExceeded(exceeded_message(claim, now, tz), claim)
        return Reservation(tuple(claims), amount)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost of the call."""
        async with self._engine.begin() as connection:
            for claim in reservation.claims:
                await connection.execute(
                    update(_counters)
                    .where(_key(claim))
                    .values(
                        reserved_micros=_counters.c.reserved_micros - reservation.amount,
                        spent_micros=_counters.c.spent_micros + actual,
                    )
                )

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed."""
        await self.settle(reservation, 0)

    async def status(self, payer: Payer, now: datetime, tz: ZoneInfo) -> list[BudgetStatus]:
        """Each budget that applies to ``payer``, with this window's spending."""
        async with self._engine.connect() as connection:
            budgets = await self._load(connection, _subjects(payer))
            claims = claims_for(budgets, payer, now, tz)
            statuses = []
            for claim in claims:
                row = (
                    await connection.execute(
                        select(_counters.c.spent_micros, _counters.c.reserved_micros).where(
                            _key(claim)
                        )
                    )
                ).one_or_none()
                spent, reserved = (int(row[0]), int(row[1])) if row else (0, 0)
                statuses.append(
                    BudgetStatus(claim.budget, window(claim.period, now, tz), spent, reserved)
                )
        return statuses

    async def reset_spending(self, scope: Scope, subject: str, now: datetime, tz: ZoneInfo) -> int:
        """Forget what a user or place spent in the current windows."""
        current = or_(
            *(
                and_(
                    _counters.c.period == period.value,
                    _counters.c.window_start == window(period, now, tz).start,
                )
                for period in Period
            )
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_counters)
                .where(_counters.c.scope == scope.value, _counters.c.subject == subject, current)
                .values(spent_micros=0)
            )
        return int(result.rowcount or 0)

    async def _load(
        self, connection: AsyncConnection, subjects: Sequence[tuple[Scope, str]]
    ) -> list[Budget]:
        query = select(
            _budgets.c.scope, _budgets.c.subject, _budgets.c.period, _budgets.c.limit_micros
        )
        if subjects:
            query = query.where(
                or_(
                    *(
                        and_(_budgets.c.scope == scope.value, _budgets.c.subject == subject)
                        for scope, subject in subjects
                    )
                )
            )
        rows = await connection.execute(query.order_by(_budgets.c.id))
        return [
            Budget(Scope(row.scope), row.subject, Period(row.period), int(row.limit_micros))
            for row in rows
        ]


def _subjects(payer: Payer) -> list[tuple[Scope, str]]:
    return [(Scope.USER, payer.user), (Scope.DEFAULT, ""), (Scope.PLACE, payer.place)]


def _key_values(claim: Claim) -> dict[str, object]:
    return {
        "scope": claim.scope.value,
        "subject": claim.subject,
        "period": claim.period.value,
        "window_start": claim.window_start,
    }


def _key(claim: Claim) -> ColumnElement[bool]:
    return and_(
        _counters.c.scope == claim.scope.value,
        _counters.c.subject == claim.subject,
        _counters.c.period == claim.period.value,
        _counters.c.window_start == claim.window_start,
    )
