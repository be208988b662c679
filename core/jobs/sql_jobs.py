"""``JobStore`` on SQLAlchemy 2 async (Core statements), for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.conversation.store import UsageRecord
from core.jobs.batch_api import OPEN_STATES
from core.jobs.store import SUBMITTING, Job, NewJob
from core.storage.schema import JobRow, UsageRow
from core.storage.sql_store import usage_values

_jobs = cast(Table, JobRow.__table__)
_usage = cast(Table, UsageRow.__table__)


class SqlJobStore:
    """Jobs in the ``jobs`` table; leases are conditional updates, so two processes never
    hold one job at once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self, job: NewJob, owner: str | None = None, until: datetime | None = None
    ) -> Job:
        """Insert the job row (with its lease, if any)."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                insert(_jobs).values(
                    kind=job.kind,
                    status=job.status,
                    user_id=job.user_id,
                    conversation_id=job.conversation_id,
                    openai_id=job.openai_id,
                    payload=job.payload,
                    lease_owner=owner,
                    lease_until=until,
                    error=job.error,
                )
            )
            primary_key = result.inserted_primary_key
            assert primary_key is not None
            job_id = int(primary_key[0])
            row = (await connection.execute(select(_jobs).where(_jobs.c.id == job_id))).one()
        return _job(row)

    async def job(self, job_id: int) -> Job | None:
        """One job by id."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(_jobs).where(_jobs.c.id == job_id))).first()
            await connection.rollback()
        return None if row is None else _job(row)

    async def by_openai_id(self, openai_id: str) -> Job | None:
        """The job of an OpenAI id."""
        query = select(_jobs).where(_jobs.c.openai_id == openai_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
            await connection.rollback()
        return None if row is None else _job(row)

    async def jobs(
        self, user_id: int | None = None, limit: int = 20, *, kind: str | None = None
    ) -> list[Job]:
        """Newest first."""
        query = select(_jobs).order_by(_jobs.c.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(_jobs.c.user_id == user_id)
        if kind is not None:
            query = query.where(_jobs.c.kind == kind)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [_job(row) for row in rows]

    async def count_open(self, open_states: Sequence[str]) -> int:
        """How many jobs have an open status."""
        query = select(func.count()).select_from(_jobs).where(_jobs.c.status.in_(list(open_states)))
        async with self._engine.connect() as connection:
            count = (await connection.execute(query)).scalar_one()
            await connection.rollback()
        return int(count)

    async def due(
        self, open_states: Sequence[str], now: datetime, limit: int, after: int = 0
    ) -> list[Job]:
        """Open, unleased jobs whose next poll is due, in id order after ``after``."""
        query = (
            select(_jobs)
            .where(
                _jobs.c.id > after,
                _jobs.c.status.in_(list(open_states)),
                or_(_jobs.c.lease_until.is_(None), _jobs.c.lease_until < now),
                or_(_jobs.c.next_poll_at.is_(None), _jobs.c.next_poll_at <= now),
            )
            .order_by(_jobs.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [_job(row) for row in rows]

    async def lease(self, job_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Conditional update: free, expired or already ours."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_jobs)
                .where(
                    _jobs.c.id == job_id,
                    or_(
                        _jobs.c.lease_owner.is_(None),
                        _jobs.c.lease_owner == owner,
                        _jobs.c.lease_until < now,
                    ),
                )
                .values(lease_owner=owner, lease_until=until)
            )
        return bool(result.rowcount)

    async def lease_owners(self) -> list[str]:
        """Distinct owners of the leases held."""
        query = select(_jobs.c.lease_owner).where(_jobs.c.lease_owner.is_not(None)).distinct()
        async with self._engine.connect() as connection:
            owners = (await connection.execute(query)).scalars().all()
            await connection.rollback()
        return [str(owner) for owner in owners]

    async def release_leases(self, owner: str) -> int:
        """Clear ``owner``'s leases."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_jobs)
                .where(_jobs.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
        return int(result.rowcount)

    async def update(
        self,
        job_id: int,
        owner: str,
        status: str,
        payload: dict[str, Any],
        next_poll_at: datetime,
        *,
        openai_id: str | None = None,
    ) -> bool:
        """Store the poll's outcome and release the lease."""
        values: dict[str, Any] = {
            "status": status,
            "payload": payload,
            "next_poll_at": next_poll_at,
            "lease_owner": None,
            "lease_until": None,
        }
        if openai_id is not None:
            values["openai_id"] = openai_id
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.lease_owner == owner)
                .values(**values)
            )
        return bool(result.rowcount)

    async def checkpoint(
        self, job_id: int, owner: str, payload: dict[str, Any], until: datetime
    ) -> bool:
        """Conditional on the lease: a lost lease writes nothing."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.lease_owner == owner)
                .values(payload=payload, lease_until=until)
            )
        return bool(result.rowcount)

    async def finish(
        self,
        job_id: int,
        owner: str,
        *,
        status: str,
        payload: dict[str, Any],
        usage: UsageRecord | None,
        error: str | None = None,
        open_states: Collection[str] | None = None,
    ) -> bool:
        """The final status and the usage row together, once."""
        still_open = list([*OPEN_STATES, SUBMITTING] if open_states is None else open_states)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_jobs)
                .where(
                    _jobs.c.id == job_id,
                    _jobs.c.lease_owner == owner,
                    _jobs.c.status.in_(still_open),
                )
                .values(
                    status=status,
                    payload=payload,
                    error=error,
                    lease_owner=None,
                    lease_until=None,
                    next_poll_at=None,
                )
            )
            if not result.rowcount:
                return False
            if usage is not None:
                await connection.execute(insert(_usage).values(**usage_values(usage)))
        return True


def _job(row: Row[Any]) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        status=row.status,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        openai_id=row.openai_id or "",
        payload=dict(row.payload or {}),
        error=row.error,
        created_at=_aware(row.created_at),
    )


def _aware(moment: datetime) -> datetime:
    """SQLite gives times back without their zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
