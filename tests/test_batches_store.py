"""The SQL job store's leases, on SQLite and PostgreSQL: a job recorded leased before its
batch exists, steps written only by the lease holder, a dead owner's leases let go, the
API's id recorded once known, and a job closed once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from core.jobs.batch_api import OPEN_STATES
from core.jobs.sql_jobs import SqlJobStore
from core.jobs.store import SUBMITTING, NewJob
from core.storage.database import create_engine, upgrade

LIVE = sorted({*OPEN_STATES, SUBMITTING})


@pytest.fixture
async def jobs(database_url: str) -> AsyncIterator[SqlJobStore]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        yield SqlJobStore(engine)
    finally:
        await engine.dispose()


async def test_a_job_recorded_before_its_batch_is_held_by_its_submitter_until_recorded(
    jobs: SqlJobStore,
) -> None:
    now = datetime.now(UTC)
    job = await jobs.add(
        NewJob("batch", SUBMITTING, None, None, None, {"token": "t1"}),
        "alpha",
        now + timedelta(seconds=120),
    )
    assert (job.status, job.openai_id) == (SUBMITTING, "")  # not known yet
    assert await jobs.due(LIVE, now, 10) == []  # leased: nobody else polls it
    assert not await jobs.checkpoint(job.id, "beta", {"x": 1}, now)  # not beta's to write
    assert await jobs.checkpoint(job.id, "alpha", {"token": "t1", "file": "f"}, now)
    assert await jobs.update(
        job.id, "alpha", "validating", {"token": "t1"}, now, openai_id="batch_1"
    )
    recorded = await jobs.by_openai_id("batch_1")
    assert recorded is not None and (recorded.id, recorded.status) == (job.id, "validating")
    assert [due.id for due in await jobs.due(LIVE, now, 10)] == [job.id]


async def test_a_dead_owners_leases_are_let_go_and_a_job_is_closed_once(
    jobs: SqlJobStore,
) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    first = await jobs.add(NewJob("batch", SUBMITTING, None, None, None, {}), "dead", later)
    second = await jobs.add(NewJob("batch", "in_progress", None, None, "batch_2", {}))
    assert await jobs.lease(second.id, "alive", later, now)
    assert sorted(await jobs.lease_owners()) == ["alive", "dead"]
    assert await jobs.release_leases("dead") == 1
    assert await jobs.lease_owners() == ["alive"]
    assert [due.id for due in await jobs.due(LIVE, now, 10)] == [first.id]
    assert await jobs.lease(first.id, "alive", later, now)
    assert await jobs.finish(first.id, "alive", status="failed", payload={}, usage=None)
    assert not await jobs.finish(first.id, "alive", status="failed", payload={}, usage=None)
    closed = await jobs.job(first.id)
    assert closed is not None and closed.status == "failed"
