"""The job store port: batch and fine-tune jobs as rows that any process can poll, one at a
time under a lease, and finish exactly once (the final status and the usage row in one
transaction). ``core.jobs.sql_jobs`` implements it on SQLAlchemy."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from core.conversation.store import UsageRecord

LEASE_SECONDS = 120
"""How long one process keeps a job to itself while it polls or delivers it."""
SUBMITTING = "submitting"
"""A job recorded before its batch is created at the API (``openai_id`` still None): if
its process dies, the next poller looks for the batch by the job's metadata."""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to record: before the API is asked to run it (``openai_id`` None, state
    ``submitting``), once the API accepted it, or, with no ``openai_id``, a job the API
    refused, recorded in its final state."""

    kind: str
    status: str
    user_id: int | None
    conversation_id: int | None
    openai_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A recorded job: ``status`` is the API's status while it runs; a final status is
    written only when its results were delivered."""

    id: int
    kind: str
    status: str
    user_id: int | None
    conversation_id: int | None
    openai_id: str
    """The API's id of the job ("" until it is known: a job being submitted, or one the
    API refused)."""
    payload: dict[str, Any]
    error: str | None
    created_at: datetime


class JobStore(Protocol):
    """Jobs and their leases; safe for several processes on one database."""

    async def add(
        self, job: NewJob, owner: str | None = None, until: datetime | None = None
    ) -> Job:
        """Record a new job, leased to ``owner`` until ``until`` when they are given."""

    async def job(self, job_id: int) -> Job | None:
        """One job, or None."""

    async def by_openai_id(self, openai_id: str) -> Job | None:
        """The job of an OpenAI batch id, or None."""

    async def jobs(
        self, user_id: int | None = None, limit: int = 20, *, kind: str | None = None
    ) -> list[Job]:
        """The newest jobs, of one user or of everyone, of one kind or of all."""

    async def count_open(self, open_states: Sequence[str]) -> int:
        """How many jobs are open."""

    async def due(
        self, open_states: Sequence[str], now: datetime, limit: int, after: int = 0
    ) -> list[Job]:
        """Open jobs due for a poll that nobody holds a lease on, by id from ``after`` on
        (not leased yet)."""

    async def lease(self, job_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew a job's lease while it is open; True if ``owner`` holds it now."""

    async def lease_owners(self) -> list[str]:
        """Who holds job leases now (each owner once)."""

    async def release_leases(self, owner: str) -> int:
        """Let go every job lease ``owner`` holds (a process known to be dead); returns
        how many."""

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
        """Record a poll's outcome (and the API's id for the job, when given) and let the
        lease go; False if ``owner`` lost the lease."""

    async def checkpoint(
        self, job_id: int, owner: str, payload: dict[str, Any], until: datetime
    ) -> bool:
        """Write ``payload`` and keep the lease until ``until``, only while ``owner``
        holds it: a step is recorded before the next one starts. False if it was lost."""

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
        """Close an open (or submitting) job leased by ``owner`` with its final ``status``
        and its usage row, in one transaction; False (and nothing written) if it was
        closed already or the lease was lost. ``open_states``: the statuses of the job's
        kind that are still open (None: a batch's, ``submitting`` included)."""
