"""The scheduler every ``switchboard run`` process starts: APScheduler 3's
``AsyncIOScheduler`` running the core's periodic work (turn recovery now; the jobs poll
next) on the event loop. Jobs are plain coroutine functions; what they work on are database
rows with leases, so several processes can run the same schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 5.0
"""How often open turns left by a dead process are looked for."""


@dataclass(frozen=True)
class PeriodicJob:
    """A coroutine function to run every ``seconds`` (first run at start)."""

    name: str
    run: Callable[[], Awaitable[object]]
    seconds: float


async def _guarded(job: PeriodicJob) -> None:
    """Run ``job`` once: stopped quietly at shutdown, and a failure logged as one line
    naming the job (the next run tries again)."""
    try:
        await job.run()
    except asyncio.CancelledError:
        return  # the scheduler is shutting down
    except Exception as exc:
        log.error("scheduled job %s failed: %s", job.name, exc)
        log.debug("scheduled job %s failed", job.name, exc_info=True)


@asynccontextmanager
async def scheduled(jobs: Sequence[PeriodicJob]) -> AsyncIterator[AsyncIOScheduler]:
    """Run ``jobs`` on the current event loop until the block ends; a run never overlaps
    the previous one of the same job, and missed runs are merged into one."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    for job in jobs:
        scheduler.add_job(
            _guarded,
            "interval",
            args=(job,),
            seconds=job.seconds,
            id=job.name,
            name=job.name,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)
