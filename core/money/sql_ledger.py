"""``BudgetLedger`` on SQLAlchemy 2 async, for SQLite and PostgreSQL.

A reservation is one transaction: per applicable budget, one upsert creates the counter row
of the current window or raises it, the latter only if the amount fits in what is left
(``ON CONFLICT DO UPDATE … WHERE spent + reserved + amount <= limit``); a new row is only
created for an amount within the limit, which is checked before. PostgreSQL locks the row
and re-checks the condition for a concurrent writer; SQLite has one writer at a time.
Either way spending plus reservations never exceed a limit, across processes too. A refused
reservation reads what the refusing budgets have left before it rolls back, for the
message and for a smaller retry. The statements of this path are built once: building them
per call cost more than running them.

A reservation made with a ``Hold`` also writes one ``budget_holds`` row per counter, in the
same transaction, leased to its process. Settling deletes those rows and, only for the rows
it deleted, moves the amount from reserved to spent — so a settle replayed from the spool
counts once. ``release_abandoned`` gives back what expired leases and dead owners held,
marking their rows released: a settle arriving later (from a process only cut off, or
replayed from a dead one's spool) still adds what the call cost, once. Released rows no
settle came for are forgotten after a day, by the same recovery round (a bounded batch per
round, found by a read that touches only the index when there are none).
Database outages are raised as ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Row,
    Table,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import StorageUnavailable
from core.money.budgets import (
    Budget,
    BudgetExceeded,
    BudgetStatus,
    Claim,
    Hold,
    Payer,
    Reservation,
    Scope,
    claims_for,
    refusal,
)
from core.money.periods import Period, window
from core.storage.database import broken_query, in_sqlite_connection, sqlite_transaction
from core.storage.schema import BudgetCounterRow, BudgetHoldRow, BudgetRow

_T = TypeVar("_T")
_budgets = cast(Table, BudgetRow.__table__)
_counters = cast(Table, BudgetCounterRow.__table__)
_holds = cast(Table, BudgetHoldRow.__table__)
FORGET_RELEASED = timedelta(days=1)
"""How long the rows of a released reservation wait for a settle that may still come (the
process was only cut off, not dead); no call takes that long."""
FORGET_AT_ONCE = 1000
"""At most this many forgotten hold rows are deleted per recovery round (bounded work)."""
_BUDGET_COLUMNS = select(
    _budgets.c.scope, _budgets.c.subject, _budgets.c.period, _budgets.c.limit_micros
)
_PAYER_BUDGETS = _BUDGET_COLUMNS.where(
    or_(
        and_(_budgets.c.scope == Scope.USER.value, _budgets.c.subject == bindparam("user")),
        and_(_budgets.c.scope == Scope.DEFAULT.value, _budgets.c.subject == ""),
        and_(_budgets.c.scope == Scope.PLACE.value, _budgets.c.subject == bindparam("place")),
    )
).order_by(_budgets.c.id)
_COUNTER_KEY = and_(
    _counters.c.scope == bindparam("k_scope"),
    _counters.c.subject == bindparam("k_subject"),
    _counters.c.period == bindparam("k_period"),
    _counters.c.window_start == bindparam("k_window"),
)
_HOLD_KEY = (_holds.c.scope, _holds.c.subject, _holds.c.period, _holds.c.window_start)
_SETTLE_HOLDS = (
    delete(_holds)
    .where(_holds.c.reservation == bindparam("hold"))
    .returning(*_HOLD_KEY, _holds.c.amount, _holds.c.released)
)
_FORGOTTEN = (
    select(_holds.c.id)
    .where(_holds.c.released == true(), _holds.c.expires_at < bindparam("before"))
    .limit(FORGET_AT_ONCE)
)
_SETTLE = (
    update(_counters)
    .where(_COUNTER_KEY)
    .values(
        # Never below zero: a reset may have dropped the estimate already.
        reserved_micros=case(
            (_counters.c.reserved_micros < bindparam("amount"), 0),
            else_=_counters.c.reserved_micros - bindparam("amount"),
        ),
        spent_micros=_counters.c.spent_micros + bindparam("actual"),
    )
)


class SqlBudgetLedger:
    """Budgets and per-window counters in a relational database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # The dialect in use (``insert`` with ON CONFLICT): PostgreSQL's is imported only on it.
        self._dialect: Any = import_module(f"sqlalchemy.dialects.{engine.dialect.name}")
        self._claims: dict[int, Any] = {}  # the upsert of n counters, built on first use

    def _claim_statement(self, count: int) -> Any:
        """One upsert for ``count`` counters: a new row holds the amount; an existing one is
        raised only while its spending plus reservations are under its limit."""
        statement = self._claims.get(count)
        if statement is None:
            # A new row is only inserted for an amount within its limit (see ``_oversized``).
            insert = self._dialect.insert(_counters).values(
                [
                    {
                        # Typed: only the first row of a multi-row VALUES gets the columns'
                        # types by itself, and SQLite stores datetimes as typed text.
                        "scope": bindparam(f"k_scope_{i}", type_=_counters.c.scope.type),
                        "subject": bindparam(f"k_subject_{i}", type_=_counters.c.subject.type),
                        "period": bindparam(f"k_period_{i}", type_=_counters.c.period.type),
                        "window_start": bindparam(
                            f"k_window_{i}", type_=_counters.c.window_start.type
                        ),
                        "limit_micros": bindparam(
                            f"limit_{i}", type_=_counters.c.limit_micros.type
                        ),
                        "spent_micros": 0,
                        "reserved_micros": bindparam(
                            "amount", type_=_counters.c.reserved_micros.type
                        ),
                    }
                    for i in range(count)
                ]
            )
            used = _counters.c.spent_micros + _counters.c.reserved_micros
            statement = insert.on_conflict_do_update(
                index_elements=["scope", "subject", "period", "window_start"],
                set_={
                    "reserved_micros": _counters.c.reserved_micros
                    + insert.excluded.reserved_micros,
                    "limit_micros": insert.excluded.limit_micros,
                },
                # ``budgets.fits``: within what is left, and never once it is used up.
                where=and_(
                    used < insert.excluded.limit_micros,
                    used + insert.excluded.reserved_micros <= insert.excluded.limit_micros,
                ),
            ).returning(_counters.c.scope, _counters.c.subject, _counters.c.period)
            self._claims[count] = statement
        return statement

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

    async def reserve(
        self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo, hold: Hold | None = None
    ) -> Reservation:
        """Hold ``amount`` against every budget that applies to ``payer``, all or nothing,
        only if it fits in what each has left; leased to ``hold``'s owner if given."""
        async with _reachable(), self._engine.begin() as connection:
            rows = await connection.execute(
                _PAYER_BUDGETS, {"user": payer.user, "place": payer.place}
            )
            budgets = [_budget(row) for row in rows]
            claims = _ordered(claims_for(budgets, payer, now, tz))
            refused = _oversized(claims, amount)
            key = None
            if claims and not refused and hold is not None:
                # Before the counters: their row locks are then held only for the upsert
                # and the commit (a refusal rolls these rows back with the rest).
                key = uuid.uuid4().hex
                await connection.execute(insert(_holds), _hold_rows(key, hold, claims, amount))
            if claims and not refused:
                params: dict[str, object] = {"amount": amount}
                for index, claim in enumerate(claims):
                    params |= {f"{name}_{index}": v for name, v in _key_values(claim).items()}
                    params[f"limit_{index}"] = claim.limit_micros
                held = await connection.execute(self._claim_statement(len(claims)), params)
                raised = {(row.scope, row.subject, row.period) for row in held}
                refused = [c for c in claims if (c.scope, c.subject, c.period) not in raised]
            if refused:
                lefts = []
                for claim in refused:
                    row = (
                        await connection.execute(
                            select(_counters.c.spent_micros, _counters.c.reserved_micros).where(
                                _key(claim)
                            )
                        )
                    ).one_or_none()
                    lefts.append((claim, _left(claim, row)))
                # Leaving the block rolls back the claims already made.
                raise _tightest(lefts, now, tz)
        return Reservation(tuple(claims), amount, key)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost of the call (once, if it is held)."""
        if not reservation.claims:
            return
        async with _reachable(), self._engine.begin() as connection:
            if reservation.hold is None:
                params = [
                    {**_key_values(claim), "amount": reservation.amount, "actual": actual}
                    for claim in reservation.claims
                ]
            else:
                held = await connection.execute(_SETTLE_HOLDS, {"hold": reservation.hold})
                params = [
                    {
                        **_row_key_values(row),
                        "amount": 0 if row.released else int(row.amount),
                        "actual": actual,
                    }
                    for row in _in_lock_order(held)
                ]
            if params:
                await connection.execute(_SETTLE, params)

    async def renew(self, reservation: Reservation, until: datetime) -> None:
        """Extend a held reservation's lease."""
        if reservation.hold is None:
            return
        async with _reachable(), self._engine.begin() as connection:
            await connection.execute(
                update(_holds)
                .where(_holds.c.reservation == reservation.hold, _holds.c.released == false())
                .values(expires_at=until)
            )

    async def release_abandoned(self, now: datetime, gone: Callable[[str], bool]) -> int:
        """Release the held reservations whose lease ran out or whose owner is gone, and
        forget released ones no settle came for within ``FORGET_RELEASED``."""
        async with _reachable(), self._engine.begin() as connection:
            await self._forget_released(connection, now)
            owners = await connection.execute(
                select(_holds.c.owner, func.min(_holds.c.expires_at))
                .where(_holds.c.released == false())
                .group_by(_holds.c.owner)
            )
            dead = []
            expired = False
            for owner, earliest in owners:
                if gone(owner):
                    dead.append(owner)
                elif _aware(earliest) < now:
                    expired = True
            if not dead and not expired:
                return 0
            abandoned = _holds.c.expires_at < now
            if dead:
                abandoned = or_(abandoned, _holds.c.owner.in_(dead))
            # Marked, not deleted: a settle may still come — from an owner only cut off, or
            # from a dead owner's spool, replayed by the process that takes its place.
            released = (
                await connection.execute(
                    update(_holds)
                    .where(_holds.c.released == false(), abandoned)
                    .values(released=True)
                    .returning(*_HOLD_KEY, _holds.c.amount, _holds.c.reservation)
                )
            ).all()
            if released:
                await connection.execute(
                    _SETTLE,
                    [
                        {**_row_key_values(row), "amount": int(row.amount), "actual": 0}
                        for row in _in_lock_order(released)
                    ],
                )
        return len({row.reservation for row in released})

    async def _forget_released(self, connection: AsyncConnection, now: datetime) -> None:
        """Delete (a bounded batch of) the released rows no settle came for in time; only
        a read when there are none."""
        ids = (await connection.execute(_FORGOTTEN, {"before": now - FORGET_RELEASED})).scalars()
        forgotten = list(ids)
        if forgotten:
            await connection.execute(delete(_holds).where(_holds.c.id.in_(forgotten)))

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
        """Forget what a user or place spent, and any estimate still held (a crashed
        process's), in the current windows."""
        current = or_(
            *(
                and_(
                    _counters.c.period == period.value,
                    _counters.c.window_start == window(period, now, tz).start,
                )
                for period in Period
            )
        )
        held = or_(
            *(
                and_(
                    _holds.c.period == period.value,
                    _holds.c.window_start == window(period, now, tz).start,
                )
                for period in Period
            )
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_counters)
                .where(_counters.c.scope == scope.value, _counters.c.subject == subject, current)
                .values(spent_micros=0, reserved_micros=0)
            )
            # What they held is dropped with the counters: their settles add the cost only.
            await connection.execute(
                update(_holds)
                .where(_holds.c.scope == scope.value, _holds.c.subject == subject, held)
                .values(released=True)
            )
        return int(result.rowcount or 0)

    async def _load(
        self, connection: AsyncConnection, subjects: Sequence[tuple[Scope, str]]
    ) -> list[Budget]:
        query = _BUDGET_COLUMNS
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
        return [_budget(row) for row in rows]


def _ordered(claims: Sequence[Claim]) -> list[Claim]:
    """Claims in a fixed order, so that two reservations never wait on each other's rows."""
    return sorted(claims, key=lambda c: (c.scope, c.subject, c.period, c.window_start))


def _oversized(claims: Sequence[Claim], amount: int) -> list[Claim]:
    """Claims that refuse ``amount`` whatever their counter holds: it is more than their
    whole limit (or the limit is zero). Checked before the upsert, whose insert branch
    cannot check a condition."""
    return [c for c in claims if c.limit_micros <= 0 or amount > c.limit_micros]


def _left(claim: Claim, counter: Sequence[Any] | None) -> int:
    """What ``claim``'s budget has left, given its counter's ``(spent, reserved)`` row."""
    used = int(counter[0]) + int(counter[1]) if counter is not None else 0
    return max(claim.limit_micros - used, 0)


def _tightest(lefts: Sequence[tuple[Claim, int]], now: datetime, tz: ZoneInfo) -> BudgetExceeded:
    """The refusal naming, of the budgets that refused, the one with the least left."""
    claim, left = min(lefts, key=lambda pair: pair[1])
    return refusal(claim, left, now, tz)


def _budget(row: Row[Any, Any, Any, Any]) -> Budget:
    return Budget(Scope(row.scope), row.subject, Period(row.period), int(row.limit_micros))


def _subjects(payer: Payer) -> list[tuple[Scope, str]]:
    return [(Scope.USER, payer.user), (Scope.DEFAULT, ""), (Scope.PLACE, payer.place)]


def _key_values(claim: Claim) -> dict[str, object]:
    """The bound values of a counter's key (named apart from the columns they fill)."""
    return {
        "k_scope": claim.scope.value,
        "k_subject": claim.subject,
        "k_period": claim.period.value,
        "k_window": claim.window_start,
    }


def _row_key_values(row: Any) -> dict[str, object]:
    """The bound key values of the counter a ``budget_holds`` row draws on."""
    return {
        "k_scope": row.scope,
        "k_subject": row.subject,
        "k_period": row.period,
        "k_window": row.window_start,
    }


def _in_lock_order(rows: Iterable[Any]) -> list[Any]:
    """``budget_holds`` rows in the order ``_ordered`` gives their counters, so that a
    settle or a release never waits on a reservation that waits on it."""
    return sorted(rows, key=lambda r: (r.scope, r.subject, r.period, _aware(r.window_start)))


def _hold_rows(key: str, hold: Hold, claims: Sequence[Claim], amount: int) -> list[dict[str, Any]]:
    return [
        {
            "reservation": key,
            "owner": hold.owner,
            "expires_at": hold.until,
            "released": False,
            "scope": claim.scope.value,
            "subject": claim.subject,
            "period": claim.period.value,
            "window_start": claim.window_start,
            "amount": amount,
        }
        for claim in claims
    ]


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes for UTC values."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_OUTAGES = (OperationalError, InterfaceError, SqlTimeoutError, OSError, sqlite3.OperationalError)


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Database outages (down, unreachable, locked, connections cut) as the core's
    ``StorageUnavailable``, which the meter answers by spooling the settle."""
    try:
        yield
    except _OUTAGES as exc:
        if broken_query(exc):
            raise
        raise StorageUnavailable(str(exc).splitlines()[0][:200]) from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise StorageUnavailable(str(exc).splitlines()[0][:200]) from exc


def _key(claim: Claim) -> ColumnElement[bool]:
    return and_(
        _counters.c.scope == claim.scope.value,
        _counters.c.subject == claim.subject,
        _counters.c.period == claim.period.value,
        _counters.c.window_start == claim.window_start,
    )


_SQLITE_PAYER_BUDGETS = (
    "SELECT scope, subject, period, limit_micros FROM budgets WHERE "
    "(scope = 'user' AND subject = ?) OR (scope = 'default' AND subject = '') "
    "OR (scope = 'place' AND subject = ?) ORDER BY id"
)
_SQLITE_CLAIM = (
    "INSERT INTO budget_counters "
    "(scope, subject, period, window_start, limit_micros, spent_micros, reserved_micros) "
    "VALUES {rows} ON CONFLICT (scope, subject, period, window_start) DO UPDATE SET "
    "reserved_micros = budget_counters.reserved_micros + excluded.reserved_micros, "
    "limit_micros = excluded.limit_micros "
    "WHERE budget_counters.spent_micros + budget_counters.reserved_micros "
    "< excluded.limit_micros "
    "AND budget_counters.spent_micros + budget_counters.reserved_micros "
    "+ excluded.reserved_micros <= excluded.limit_micros "
    "RETURNING scope, subject, period"
)
_SQLITE_COUNTER = (
    "SELECT spent_micros, reserved_micros FROM budget_counters "
    "WHERE scope = ? AND subject = ? AND period = ? AND window_start = ?"
)
_SQLITE_SETTLE = (
    "UPDATE budget_counters SET reserved_micros = MAX(reserved_micros - ?, 0), "
    "spent_micros = spent_micros + ? "
    "WHERE scope = ? AND subject = ? AND period = ? AND window_start = ?"
)
_SQLITE_HOLD = (
    "INSERT INTO budget_holds (reservation, owner, expires_at, released, scope, subject, "
    "period, window_start, amount) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)"
)
_SQLITE_SETTLE_HOLDS = (
    "DELETE FROM budget_holds WHERE reservation = ? "
    "RETURNING scope, subject, period, window_start, amount, released"
)


class SqliteBudgetLedger(SqlBudgetLedger):
    """``SqlBudgetLedger`` whose per-turn path (reserve, settle) runs as one plain-SQL
    function in the pooled aiosqlite connection's own thread: one thread hand-off each,
    where SQLAlchemy's adapter makes about four per statement (see bench/RESULTS.md). The
    same tables, statements and guarantees (one writer at a time: the function runs inside
    one transaction); everything else is inherited. Datetimes are bound exactly as
    SQLAlchemy binds them on SQLite, so both paths read and write the same counters."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        dialect = engine.dialect
        bind = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        self._bind_window: Any = bind or (lambda value: value)

    async def reserve(
        self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo, hold: Hold | None = None
    ) -> Reservation:
        """Hold ``amount`` against every budget that applies to ``payer``, all or nothing,
        only if it fits in what each has left; leased to ``hold``'s owner if given."""
        key = uuid.uuid4().hex if hold is not None else None

        def lefts(
            connection: sqlite3.Connection, refused: Sequence[Claim]
        ) -> list[tuple[Claim, int]]:
            return [
                (c, _left(c, connection.execute(_SQLITE_COUNTER, self._key_params(c)).fetchone()))
                for c in refused
            ]

        def claim(connection: sqlite3.Connection) -> list[Claim]:
            rows = connection.execute(_SQLITE_PAYER_BUDGETS, (payer.user, payer.place))
            budgets = [Budget(Scope(r[0]), r[1], Period(r[2]), int(r[3])) for r in rows]
            claims = _ordered(claims_for(budgets, payer, now, tz))
            oversized = _oversized(claims, amount)
            if oversized:
                raise _Refused(lefts(connection, oversized))
            if not claims:
                return claims
            params: list[object] = []
            for c in claims:
                params += [*self._key_params(c), c.limit_micros, amount]
            values = ", ".join(["(?, ?, ?, ?, ?, 0, ?)"] * len(claims))
            with sqlite_transaction(connection):
                held = connection.execute(_SQLITE_CLAIM.format(rows=values), params).fetchall()
                raised = {(row[0], row[1], row[2]) for row in held}
                refused = [
                    c for c in claims if (c.scope.value, c.subject, c.period.value) not in raised
                ]
                if refused:
                    # Read in the transaction, before it rolls back what was claimed.
                    raise _Refused(lefts(connection, refused))
                if hold is not None:
                    until = self._bind_window(hold.until)
                    connection.executemany(
                        _SQLITE_HOLD,
                        [(key, hold.owner, until, *self._key_params(c), amount) for c in claims],
                    )
            return claims

        work = asyncio.ensure_future(self._in_connection(claim))
        try:
            claims = await asyncio.shield(work)
        except _Refused as exc:
            raise _tightest(exc.lefts, now, tz) from None
        except asyncio.CancelledError:
            # The claim runs on in its thread: let it finish, then give back what it held.
            with contextlib.suppress(Exception):
                held = await work
                await self.settle(Reservation(tuple(held), amount, key if held else None), 0)
            raise
        return Reservation(tuple(claims), amount, key if claims else None)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost of the call (once, if it is held)."""
        if not reservation.claims:
            return
        amount, hold = reservation.amount, reservation.hold
        keys = [self._key_params(claim) for claim in reservation.claims]

        def settle(connection: sqlite3.Connection) -> None:
            with sqlite_transaction(connection):
                if hold is None:
                    params = [(amount, actual, *key) for key in keys]
                else:
                    held = connection.execute(_SQLITE_SETTLE_HOLDS, (hold,)).fetchall()
                    params = [(0 if r[5] else r[4], actual, r[0], r[1], r[2], r[3]) for r in held]
                connection.executemany(_SQLITE_SETTLE, params)

        await self._in_connection(settle)

    def _key_params(self, claim: Claim) -> tuple[object, ...]:
        """A counter's key as bound in the plain-SQL statements."""
        return (
            claim.scope.value,
            claim.subject,
            claim.period.value,
            self._bind_window(claim.window_start),
        )

    async def _in_connection(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        async with _reachable():
            return await in_sqlite_connection(self._engine, work)


class _Refused(Exception):
    """Claims were refused: unwinds the transaction and carries them out with what each
    budget had left."""

    def __init__(self, lefts: list[tuple[Claim, int]]) -> None:
        super().__init__(len(lefts))
        self.lefts = lefts


def budget_ledger(engine: AsyncEngine) -> SqlBudgetLedger:
    """The ledger for ``engine``'s database: the SQLite one, or the portable one."""
    if engine.dialect.name == "sqlite":
        return SqliteBudgetLedger(engine)
    return SqlBudgetLedger(engine)
