"""Polling jobs of one kind under leases, the part every kind of job shares: the due jobs read
a page at a time and polled a few at once, each only where its channel runs and under this
process's lease (a poll that fails is logged and the job polled again later), its status
message posted once and then edited when its text changes, and webhook deliveries verified
and taken once. What a poll does with the API's answer is the kind's own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.clock import Clock
from core.conversation.channel import Outbox
from core.conversation.messages import ConversationKey
from core.conversation.store import ConversationStore
from core.errors import InvalidWebhook
from core.jobs import batch_api, finetune_api
from core.jobs.store import LEASE_SECONDS, SUBMITTING, Job, JobStore
from core.metrics import Metrics, NullMetrics

log = logging.getLogger(__name__)

POLL_PAGE = 100
"""How many due jobs are read from the database at a time in a polling round."""
POLL_CONCURRENCY = 8
"""How many jobs one process polls at once."""
OPEN_JOB_STATES = sorted(batch_api.OPEN_STATES | {SUBMITTING} | finetune_api.OPEN_STATES)
"""The open states of every kind of job (no state is open for one kind and final for
another): what the ``switchboard_open_jobs`` gauge counts."""
WEBHOOK_EVENTS = "openai-webhook"
"""The namespace of OpenAI webhook delivery ids in the store's claimed events."""


class LeaseLost(Exception):
    """This process no longer holds the job it was working on (it stalled past the lease
    and another process took the job over): it stops touching the job."""


class NotHere(Exception):
    """The job's channel stopped running in this process (a shutdown) while the job was
    being worked on: the job is left open for the next process."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified OpenAI webhook: its delivery id, event type and the object it is about."""

    webhook_id: str
    type: str
    object_id: str


class WebhookVerifier(Protocol):
    """Checks an OpenAI webhook's signature (``core.jobs.openai_webhooks.OpenAIWebhooks``
    does, with the SDK)."""

    def verify_webhook(
        self, payload: bytes, headers: Mapping[str, str], secret: str
    ) -> WebhookEvent:
        """The event of a delivery signed with ``secret``; ``InvalidWebhook`` if the
        signature, its headers or its age do not verify."""


@dataclass(frozen=True)
class PollingOptions:
    """Who polls and how often."""

    owner: str
    """This process's name on the leases it takes."""
    poll_seconds: float
    lease_to_next_poll: bool = False
    """Whether a poll's lease lasts until the job's next poll is due (a poll that finds
    nothing new then writes nothing, and the job comes due again when the lease runs out)
    rather than ``LEASE_SECONDS`` (each poll then records its outcome)."""


class JobPolling:
    """The leases, paging and status message of the jobs of one ``kind``; ``label`` names
    a job of that kind in log lines (``fine-tune``)."""

    def __init__(
        self,
        *,
        kind: str,
        label: str,
        open_states: Collection[str],
        jobs: JobStore,
        outbox: Outbox,
        clock: Clock,
        options: PollingOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self._kind = kind
        self._label = label
        self.open_states = sorted(open_states)
        self._jobs = jobs
        self._outbox = outbox
        self._clock = clock
        self._options = options
        self._metrics = metrics or NullMetrics()

    @property
    def owner(self) -> str:
        """This process's name on the leases it takes."""
        return self._options.owner

    def next_poll(self) -> datetime:
        """When a job polled now is due again."""
        # Half the interval: with several processes each polls a job about once a round.
        return self._clock.now() + timedelta(seconds=self._options.poll_seconds / 2)

    async def poll_due(self, poll: Callable[[Job], Awaitable[None]]) -> int:
        """One round: the open jobs of every kind counted (the open-jobs gauge), then
        ``poll`` each due job of this kind (see ``poll_leased``), a few at a time; returns
        how many were polled here."""
        self._metrics.open_jobs(await self._jobs.count_open(OPEN_JOB_STATES))
        now = self._clock.now()
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def one(job: Job) -> bool:
            async with gate:
                return await self.poll_leased(job, now, poll)

        polled = 0
        after = 0
        # Page by id, so jobs left due (another process's channel) are not read twice.
        while page := await self._jobs.due(self.open_states, now, POLL_PAGE, after):
            polled += sum(await asyncio.gather(*(one(job) for job in page)))
            after = page[-1].id
        return polled

    async def poll_leased(
        self, job: Job, now: datetime, poll: Callable[[Job], Awaitable[None]]
    ) -> bool:
        """``poll`` an open ``job`` of this kind if its channel runs here and this process
        gets its lease; a poll that fails is logged and the job is due again later."""
        if job.kind != self._kind or job.status not in self.open_states:
            return False
        if not self._outbox.reaches(job_key(job)):
            return False
        if self._options.lease_to_next_poll:
            until = self.next_poll()
        else:
            until = now + timedelta(seconds=LEASE_SECONDS)
        if not await self._jobs.lease(job.id, self.owner, until, now):
            return False  # another process has it
        try:
            await poll(job)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except Exception as exc:
            if isinstance(exc, NotHere):
                log.info("%s", exc)
            else:
                log.exception(
                    "polling %s #%d failed; it is polled again later", self._label, job.id
                )
            # The row, not ``job``: it may hold steps recorded since (files sent).
            current = await self._jobs.job(job.id)
            payload = current.payload if current is not None else job.payload
            await self._jobs.update(job.id, self.owner, job.status, payload, self.next_poll())
        return True

    async def post_status(
        self, job: Job, text: str, *, status: str | None = None, openai_id: str | None = None
    ) -> None:
        """Post a job's status message and record it on the job (under a lease, so pollers
        keep off meanwhile), with its new ``status`` and the API's ``openai_id`` when they
        are given (recorded even if the post fails); a post that fails is logged, and the
        job goes on."""
        payload = dict(job.payload)
        try:
            posted = await self._outbox.post(job_key(job), text)
        except Exception as exc:
            log.warning("could not post the status of %s #%d: %s", self._label, job.id, exc)
            if status is None and openai_id is None:
                return
        else:
            payload.update(status_message=posted.id, shown=text)
        now = self._clock.now()
        if await self._jobs.lease(job.id, self.owner, now + timedelta(seconds=LEASE_SECONDS), now):
            await self._jobs.update(
                job.id,
                self.owner,
                status or job.status,
                payload,
                self.next_poll(),
                openai_id=openai_id,
            )

    async def show(self, job: Job, text: str) -> dict[str, Any]:
        """Edit the job's status message when its text changed; returns the new payload."""
        payload = dict(job.payload)
        posted = payload.get("status_message")
        if posted is None or payload.get("shown") == text:
            return payload
        try:
            await self._outbox.edit(posted, text)
        except Exception as exc:
            log.warning("could not update the status of %s #%d: %s", self._label, job.id, exc)
            return payload
        payload["shown"] = text
        return payload


async def accept_webhook(
    verifier: WebhookVerifier | None,
    secret: str | None,
    store: ConversationStore,
    payload: bytes,
    headers: Mapping[str, str],
) -> WebhookEvent | None:
    """The event of an OpenAI webhook delivery, verified with ``secret`` (``InvalidWebhook``
    if it is not, or if webhooks are not accepted); None for a delivery taken before."""
    if verifier is None or secret is None:
        raise InvalidWebhook("webhooks are not accepted: OPENAI_WEBHOOK_SECRET is not set")
    event = verifier.verify_webhook(payload, headers, secret)
    if event.webhook_id and not await store.claim_event(WEBHOOK_EVENTS, event.webhook_id):
        log.info("dropping redelivered webhook %s", event.webhook_id)
        return None
    return event


def job_key(job: Job) -> ConversationKey:
    """The conversation a job was started in (where its messages go)."""
    return ConversationKey(**job.payload["key"])


def key_payload(key: ConversationKey) -> dict[str, Any]:
    """``key`` as a job's payload keeps it (``job_key`` reads it back)."""
    return {"channel": key.channel, "place": key.place, "scope": key.scope, "thread": key.thread}


def job_age(elapsed: timedelta) -> str:
    """How long ago, in words a chat line can hold (``42 s``, ``5 min``, ``3 h``)."""
    seconds = max(int(elapsed.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
