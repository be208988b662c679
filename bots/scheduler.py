"""The scheduler every ``switchboard run`` process starts: APScheduler 3's
``AsyncIOScheduler`` running the core's periodic work (turn recovery, and the poll of batch
and fine-tune jobs) on the event loop. Jobs are plain coroutine functions; what they work on
are database rows with leases, so several processes can run the same schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 5.0
"""How often open turns left by a dead process are looked for."""
STOP_GRACE_SECONDS = 5.0
"""How long a run under way at the end of the block may take to finish before it is stopped."""


@dataclass(frozen=True)
class PeriodicJob:
    """A coroutine function to run every ``seconds`` (first run at start)."""

    name: str
    run: Callable[[], Awaitable[object]]
    seconds: float


class Poller(Protocol):
    """Jobs of one kind, polled in rounds (``BatchJobs``, ``FineTuneJobs``)."""

    async def poll_once(self) -> int:
        """One polling round; returns how many jobs were polled."""


def poll_jobs(*pollers: Poller) -> Callable[[], Awaitable[int]]:
    """One polling round of every kind of job, in turn: a kind whose round fails does not
    keep the others from theirs (the failure is logged, and the next round tries again)."""

    async def poll() -> int:
        polled = 0
        for poller in pollers:
            try:
                polled += await poller.poll_once()
            except Exception as exc:
                log.error("polling %s failed: %s", type(poller).__name__, exc)
                log.debug("polling %s failed", type(poller).__name__, exc_info=True)
        return polled

    return poll


@asynccontextmanager
async def scheduled(jobs: Sequence[PeriodicJob]) -> AsyncIterator[AsyncIOScheduler]:
    """Run ``jobs`` on the current event loop until the block ends; a run never overlaps
    the previous one of the same job, and missed runs are merged into one."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    running: set[asyncio.Task[object]] = set()
    for job in jobs:
        scheduler.add_job(
            _stoppable(job, running),
            "interval",
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
        # A run still under way (the first one starts at once) is stopped here, not left
        # for the event loop's teardown, which APScheduler would log as a failure. It gets
        # a moment to finish first: a query cancelled in flight makes SQLAlchemy close its
        # aiosqlite connection in a task that can outlive the worker thread, and then the
        # event loop's teardown waits for it forever (a start-up failing at once hung so).
        if running:
            _, unfinished = await asyncio.wait(set(running), timeout=STOP_GRACE_SECONDS)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)


def _stoppable(
    job: PeriodicJob, running: set[asyncio.Task[object]]
) -> Callable[[], Awaitable[None]]:
    """``job.run`` as a task the block's end can stop quietly."""

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            await job.run()
        except asyncio.CancelledError:
            log.debug("%s was stopped by the shutdown", job.name)
        except Exception as exc:
            # One line; the next run tries again.
            log.error("scheduled job %s failed: %s", job.name, exc)
            log.debug("scheduled job %s failed", job.name, exc_info=True)
        finally:
            running.discard(task)

    return run
