"""Fine-tuning jobs, the use cases (admins): ``submit`` (check the training file by line,
estimate the training cost and hold it from the admin's budget, upload, create the job,
record it, post its status message), ``poll_once`` (each open job under a lease, through
``core.jobs.polling`` as batches are: the status message edited with the state and the last
events; a finished job's model added to the registry and the database, its outcome told,
and only then the job closed once, its cost settled and its training file deleted; a job
the API will not describe for a day closed as failed), webhooks, and ``/finetune status``
and ``cancel``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.conversation.channel import Outbox
from core.conversation.choices import ConversationChoices
from core.conversation.messages import ConversationKey, UserRef
from core.conversation.store import ConversationStore, UsageRecord
from core.errors import (
    SwitchboardError,
    UpstreamMisconfigured,
    UpstreamRejected,
    UserInputError,
    user_message,
)
from core.jobs.finetune_api import (
    OPEN_STATES,
    WEBHOOK_EVENTS,
    FineTuneEvent,
    FineTuneState,
    FineTuningAPI,
)
from core.jobs.polling import (
    JobPolling,
    PollingOptions,
    WebhookVerifier,
    accept_webhook,
    job_age,
    job_key,
    key_payload,
)
from core.jobs.reservations import reservation_from_json, reservation_to_json
from core.jobs.store import Job, JobStore, NewJob
from core.jobs.training import TrainingSet, check_training_file
from core.metrics import Metrics
from core.models.fine_tuned import FineTunedModel, FineTunedModels, offer_fine_tuned
from core.money.budgets import BudgetExceeded, BudgetLedger, Payer
from core.money.money import format_usd
from core.money.prices import PriceTable

log = logging.getLogger(__name__)

KIND = "finetune"
EVENTS_SHOWN = 5
"""How many of a job's newest events its status message shows."""
SWITCHED_OFF = (
    "Fine-tuning is switched off on this bot (SWITCHBOARD_FINETUNE=off). "
    "Models fine-tuned before keep working."
)
NO_API = "Fine-tuning needs the OpenAI API; it is not available in this mode."
OUTCOME_RETRY = timedelta(days=1)
"""How long each poll tries again to post how a job ended before the job is closed with
the failure recorded (the admin's chat gone for good), and how long the API may refuse to
say how a job is (it no longer knows it, the key lost access) before the job is closed as
failed."""
OUTCOME_UNSENT_SINCE = "outcome_unsent_since"
"""The payload's note of when posting a job's outcome first failed."""
UNFOLLOWED_SINCE = "unfollowed_since"
"""The payload's note of when the API first refused to say how a job is."""
TRAINING_FILE_NAME = "training.jsonl"
"""The name a training file is uploaded under."""
REFUSED = "refused"
"""The final status of a job the API would not create (it has no OpenAI id)."""
_API_STATUS = re.compile(r"^Error code: \d+ - ")
"""The SDK's prefix on an error's message; the admin is shown the API's own words."""
_LABELS = {
    "validating_files": "validating the file",
    "queued": "queued",
    "running": "training",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    REFUSED: "refused by the API",
}


@dataclass(frozen=True)
class FineTuneOptions:
    """How fine-tuning jobs are made and polled."""

    enabled: bool
    """``SWITCHBOARD_FINETUNE``: whether new jobs may be created."""
    poll_seconds: float
    """``SWITCHBOARD_JOBS_POLL_SECONDS``."""
    owner: str
    """This process's name on the leases it takes."""
    timezone: ZoneInfo
    """The bot's time zone, where budget periods begin."""
    epochs: int = 3
    """Epochs each job trains for (sent to the API, so the estimate is what is charged)."""
    webhook_secret: str | None = None
    """``OPENAI_WEBHOOK_SECRET``: webhooks are accepted only when it is set."""


class FineTuneJobs:
    """Submits, polls, lists and cancels fine-tuning jobs, and offers their models."""

    def __init__(
        self,
        *,
        api: FineTuningAPI | None,
        webhooks: WebhookVerifier | None,
        jobs: JobStore,
        models: FineTunedModels,
        store: ConversationStore,
        choices: ConversationChoices,
        outbox: Outbox,
        ledger: BudgetLedger,
        prices: PriceTable,
        count_tokens: Callable[[str | None], Callable[[str], int]],
        clock: Clock,
        options: FineTuneOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self._api = api
        self._webhooks = webhooks
        self._jobs = jobs
        self._models = models
        self._store = store
        self._choices = choices
        self._outbox = outbox
        self._ledger = ledger
        self._prices = prices
        self._count_tokens = count_tokens
        self._clock = clock
        self._options = options
        self._polling = JobPolling(
            kind=KIND,
            label="fine-tune",
            open_states=OPEN_STATES,
            jobs=jobs,
            outbox=outbox,
            clock=clock,
            options=PollingOptions(options.owner, options.poll_seconds),
            metrics=metrics,
        )

    # --- submitting ----------------------------------------------------------------------

    async def submit(self, key: ConversationKey, user: UserRef, data: bytes) -> str:
        """Fine-tune on the training file ``data`` for the admin ``user``; returns the line
        to show. Nothing is uploaded when the file has problems, the switch is off or the
        estimate does not fit the admin's budgets."""
        if not self._options.enabled:
            return SWITCHED_OFF
        if self._api is None:
            return NO_API
        registry = self._choices.registry
        _, current = await self._choices.current(key)
        base = registry.fine_tune_base(current)
        if base is None:
            return (
                f"{current.title or current.id} cannot be fine-tuned, and the registry names "
                "no default model for fine-tuning (defaults.fine_tune)."
            )
        if base.id not in self._prices.fine_tuning_training_per_million_tokens:
            return f"There is no training price for {base.id} in the price table."
        try:
            training = await asyncio.to_thread(
                check_training_file,
                data,
                self._count_tokens(base.encoding),
                max_example_tokens=base.training_example_tokens or base.context_window,
            )
        except UserInputError as exc:
            return str(exc)
        epochs = self._options.epochs
        estimate = self._prices.training_cost(base.id, training.tokens * epochs)
        described = _describe(training, epochs, base.id, estimate)
        user_id = await self._store.ensure_user(user)
        conversation = await self._store.active_conversation(key)
        try:
            reservation = await self._ledger.reserve(
                Payer.of(user, key), estimate, self._clock.now(), self._options.timezone
            )
        except BudgetExceeded as exc:
            return f"{described} {exc}"
        payload: dict[str, Any] = {
            "key": key_payload(key),
            "user": user.principal,
            "model": base.id,
            "examples": training.examples,
            "tokens": training.tokens,
            "epochs": epochs,
            "estimate": estimate,
        }
        try:
            file_id = await self._api.upload(TRAINING_FILE_NAME, data)
            payload["training_file"] = file_id
            state = await self._api.create(file_id, base.id, epochs=epochs, suffix=_suffix(user))
        except SwitchboardError as exc:
            await self._ledger.release(reservation)
            refused = isinstance(exc, UpstreamRejected | UpstreamMisconfigured)
            log.warning("a fine-tuning job could not be created: %s", exc)
            reason = (_API_STATUS.sub("", str(exc)) if refused else user_message(exc)).rstrip(".")
            job = await self._jobs.add(
                NewJob(
                    KIND,
                    REFUSED if refused else "failed",
                    user_id,
                    conversation.id,
                    None,
                    payload,
                    error=reason,
                )
            )
            await self._delete_training_file(payload.get("training_file"), f"fine-tune #{job.id}")
            if refused:
                return (
                    f"OpenAI refused fine-tune #{job.id}: {reason}. Nothing was charged; "
                    "models fine-tuned before keep working."
                )
            return f"Fine-tune #{job.id} could not be sent: {reason}. Nothing was charged."
        payload["reservation"] = reservation_to_json(reservation)
        try:
            job = await self._jobs.add(
                NewJob(KIND, state.status, user_id, conversation.id, state.job_id, payload)
            )
        except Exception:
            # A job nothing here would follow must not train and charge unseen.
            log.exception("fine-tuning job %s could not be recorded", state.job_id)
            cancelled = await self._abandon(state.job_id, file_id)
            await self._ledger.release(reservation)
            if cancelled:
                return (
                    "The fine-tune could not be recorded (the database failed), so it was "
                    "cancelled at OpenAI. Nothing was charged; try again later."
                )
            return (
                f"The fine-tune could not be recorded (the database failed) nor cancelled: "
                f"OpenAI job {state.job_id} may still run and be charged there; cancel it "
                "in OpenAI's dashboard."
            )
        await self._polling.post_status(job, status_text(job, state, ()))
        return (
            f"Fine-tune #{job.id} started: {described} (held from your budget until it "
            f"is done). /finetune status shows it; /finetune cancel {job.id} stops it."
        )

    # --- polling -------------------------------------------------------------------------

    async def offer_stored_models(self) -> None:
        """At start-up, offer the fine-tuned models made before; a database that cannot
        be read yet (not migrated) is logged, and every polling round tries again."""
        try:
            await offer_fine_tuned(self._choices.registry, self._models)
        except Exception as exc:
            log.warning("the fine-tuned models could not be read: %s", exc)

    async def poll_once(self) -> int:
        """One polling round: the fine-tuned models made elsewhere are offered, and each
        due job whose channel runs here is polled under a lease; returns how many were."""
        await offer_fine_tuned(self._choices.registry, self._models)
        if self._api is None:
            return 0
        return await self._polling.poll_due(self._poll)

    async def on_webhook(self, payload: bytes, headers: Mapping[str, str]) -> bool:
        """An OpenAI webhook delivery about a fine-tuning job: verified (``InvalidWebhook``
        if not), each delivery id once; a ``fine_tuning.job.*`` event polls its job now.
        Returns whether a job was polled."""
        event = await accept_webhook(
            self._webhooks, self._options.webhook_secret, self._store, payload, headers
        )
        if event is None or event.type not in WEBHOOK_EVENTS:
            return False
        job = await self._jobs.by_openai_id(event.object_id)
        if job is None:
            return False
        return await self._polling.poll_leased(job, self._clock.now(), self._poll)

    async def _poll(self, job: Job) -> None:
        """Ask the API how ``job`` is: show it while it runs, close it once it ended."""
        assert self._api is not None
        try:
            state = await self._api.retrieve(job.openai_id)
            events = await self._api.events(job.openai_id, EVENTS_SHOWN)
        except UpstreamMisconfigured as exc:
            await self._unfollowed(job, exc)
            return
        if state.open:
            payload = await self._polling.show(job, status_text(job, state, events))
            payload.pop(UNFOLLOWED_SINCE, None)
            await self._jobs.update(
                job.id, self._polling.owner, state.status, payload, self._polling.next_poll()
            )
            return
        await self._close(job, state, events)

    async def _unfollowed(self, job: Job, exc: UpstreamMisconfigured) -> None:
        """The API refused to say how ``job`` is, in a way that does not mend by itself
        (404: it no longer knows the job; 401 or 403: the key lost access). Logged at the
        first refusal; polled again until ``OUTCOME_RETRY`` has passed, then closed as
        failed with the reason, the hold released, and the admin told."""
        payload = dict(job.payload)
        if UNFOLLOWED_SINCE not in payload:
            log.warning(
                "the API will not say how fine-tune #%d is (closed as failed after %g hours "
                "of this): %s",
                job.id,
                OUTCOME_RETRY.total_seconds() / 3600,
                exc,
            )
        if not self._gave_up(payload, UNFOLLOWED_SINCE):
            await self._jobs.update(
                job.id, self._polling.owner, job.status, payload, self._polling.next_poll()
            )
            return
        reason = f"OpenAI would not say how it is for {OUTCOME_RETRY.days} day(s): {exc}"
        failed = FineTuneState(job.openai_id, "failed", str(payload["model"]), error=reason)
        await self._close(replace(job, payload=payload), failed, ())

    async def _close(self, job: Job, state: FineTuneState, events: Sequence[FineTuneEvent]) -> None:
        """A finished job: its model offered (succeeded), the admin told how it ended, and
        only then the job closed with its usage row in one step, the reservation settled and
        the training file deleted. A process that dies before the close leaves the job open
        and the next poll (any process's) tells it again, so the outcome is never lost; a
        post that fails leaves the job open for the next poll, for ``OUTCOME_RETRY``."""
        payload = job.payload
        base = str(payload["model"])
        name = state.fine_tuned_model if state.status == "succeeded" else None
        problem = None
        if state.status == "succeeded" and not name:
            problem = "the API named no fine-tuned model"
        cost = 0
        usage = None
        if name:
            await self._models.add(FineTunedModel(name, base), job.id)
            if self._choices.registry.add_fine_tuned(name, base) is None:
                problem = f"its base model {base} is not in the registry"
            tokens = state.trained_tokens or payload["tokens"] * payload["epochs"]
            cost = self._prices.training_cost(base, tokens)
            usage = UsageRecord(
                user_id=job.user_id,
                conversation_id=job.conversation_id,
                kind="fine_tune",
                model=base,
                input_tokens=tokens,
                cached_input_tokens=0,
                output_tokens=0,
                cost_micros=cost,
                prices={
                    "training_per_million_tokens": (
                        self._prices.fine_tuning_training_per_million_tokens[base]
                    )
                },
                request_id=state.job_id,
            )
        error = state.error if state.status == "failed" else problem
        final = status_text(job, state, events, cost=cost if name else None)
        new_payload = await self._polling.show(job, final)
        if name:
            new_payload["fine_tuned_model"] = name
        unsent = await self._tell_outcome(job, outcome_text(job.id, state, name, error))
        if unsent is not None:
            if not self._gave_up(new_payload, OUTCOME_UNSENT_SINCE):
                await self._jobs.update(
                    job.id, self._polling.owner, job.status, new_payload, self._polling.next_poll()
                )
                return
            log.warning("fine-tune #%d is closed without its outcome told: %s", job.id, unsent)
            error = f"{error}; {unsent}" if error else unsent
        else:
            new_payload.pop(OUTCOME_UNSENT_SINCE, None)
        if not await self._jobs.finish(
            job.id,
            self._polling.owner,
            status=state.status,
            payload=new_payload,
            usage=usage,
            error=error,
            open_states=self._polling.open_states,
        ):
            log.warning("fine-tune #%d was closed by another process meanwhile", job.id)
            return
        reservation = reservation_from_json(payload["reservation"])
        if usage is not None:
            await self._ledger.settle(reservation, cost)
        else:
            await self._ledger.release(reservation)
        log.info("fine-tune #%d %s", job.id, state.status)
        await self._delete_training_file(payload.get("training_file"), f"fine-tune #{job.id}")

    async def _tell_outcome(self, job: Job, text: str) -> str | None:
        """Post how ``job`` ended; None once posted, else what went wrong. A first failure
        is noted in the payload (``OUTCOME_UNSENT_SINCE``) and logged."""
        try:
            await self._outbox.post(job_key(job), text)
        except Exception as exc:
            if OUTCOME_UNSENT_SINCE not in job.payload:
                log.warning(
                    "could not tell the outcome of fine-tune #%d (tried again at each poll "
                    "for %g hours): %s",
                    job.id,
                    OUTCOME_RETRY.total_seconds() / 3600,
                    exc,
                )
            return f"its outcome could not be posted: {exc}"
        return None

    def _gave_up(self, payload: dict[str, Any], since_key: str) -> bool:
        """Whether a failure first noted in ``payload`` under ``since_key`` (noted now if it
        was not) has gone on for ``OUTCOME_RETRY``."""
        now = self._clock.now()
        since = payload.setdefault(since_key, now.isoformat())
        return now - datetime.fromisoformat(str(since)) >= OUTCOME_RETRY

    async def _abandon(self, openai_id: str, file_id: str) -> bool:
        """Cancel a job the API created but the database did not record, and delete its
        training file; returns whether it was cancelled (a failure is logged)."""
        assert self._api is not None
        try:
            await self._api.cancel(openai_id)
        except SwitchboardError as exc:
            log.error("fine-tuning job %s could not be cancelled: %s", openai_id, exc)
            return False
        await self._delete_training_file(file_id, f"fine-tuning job {openai_id}")
        return True

    async def _delete_training_file(self, file_id: object, of: str) -> None:
        """Best effort: remove the training file of a finished job (``of`` names it in the
        log) from the account; a failure is logged and nothing else waits on it."""
        if self._api is None or not isinstance(file_id, str) or not file_id:
            return
        try:
            await self._api.delete_file(file_id)
        except Exception as exc:
            log.warning("could not delete the training file %s of %s: %s", file_id, of, exc)

    # --- /finetune status and cancel -----------------------------------------------------

    async def status(self, limit: int = 20) -> str:
        """Every fine-tuning job, newest first: state, age, model."""
        jobs = await self._jobs.jobs(None, limit=limit, kind=KIND)
        if not jobs:
            return "No fine-tuning jobs yet. Send a .jsonl training file with /finetune."
        now = self._clock.now()
        lines = ["Fine-tuning jobs:"]
        for job in jobs:
            label = _LABELS.get(job.status, job.status)
            model = str(job.payload.get("model", "?"))
            if made := job.payload.get("fine_tuned_model"):
                model += f" → {made}"
            line = f"#{job.id} {model} — {label} — {job_age(now - job.created_at)} ago"
            lines.append(line + (f" — {job.error}" if job.error else ""))
        return "\n".join(lines)

    async def cancel(self, job_id: int) -> str:
        """Ask the API to stop the fine-tuning job ``job_id``."""
        job = await self._jobs.job(job_id)
        if job is None or job.kind != KIND:
            return f"There is no fine-tune #{job_id}. /finetune status lists them."
        if job.status not in OPEN_STATES:
            return f"Fine-tune #{job_id} is already {_LABELS.get(job.status, job.status)}."
        if self._api is None:
            return NO_API
        try:
            await self._api.cancel(job.openai_id)
        except SwitchboardError as exc:
            return f"Fine-tune #{job_id} could not be cancelled: {user_message(exc)}"
        return f"Cancelling fine-tune #{job_id}; its status message will say when it stopped."


def status_text(
    job: Job, state: FineTuneState, events: Sequence[FineTuneEvent], *, cost: int | None = None
) -> str:
    """The status message: the job's state, its newest events, and its model and cost once
    it succeeded."""
    lines = [
        f"Fine-tune #{job.id} of {job.payload.get('model', state.model)}: "
        f"{_LABELS.get(state.status, state.status)}"
    ]
    if events:
        lines += ["Latest events:", *(f"• {event.message}" for event in events[-EVENTS_SHOWN:])]
    if state.fine_tuned_model and state.status == "succeeded":
        lines.append(f"Model: {state.fine_tuned_model}")
    if state.status == "failed" and state.error:
        lines.append(f"Error: {state.error}")
    if cost is not None:
        lines.append(f"Cost: {format_usd(cost)}.")
    return "\n".join(lines)


def outcome_text(job_id: int, state: FineTuneState, name: str | None, error: str | None) -> str:
    """The one message that tells how a job ended."""
    if state.status == "succeeded" and name and not error:
        return f"Fine-tune #{job_id} succeeded: {name} is ready. Choose it with /model {name}"
    if state.status == "cancelled":
        return f"Fine-tune #{job_id} was cancelled; nothing was charged."
    label = _LABELS.get(state.status, state.status)
    return f"Fine-tune #{job_id} {label}: {error or 'no reason given'}."


def _describe(training: TrainingSet, epochs: int, base: str, estimate: int) -> str:
    return (
        f"{training.examples} examples, {training.tokens:,} tokens x {epochs} epochs on {base}, "
        f"estimated {format_usd(estimate)}"
    )


def _suffix(user: UserRef) -> str:
    """A short label for the model's name (letters, digits and dashes; at most 18)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in (user.username or user.user_id))
    return cleaned.strip("-")[:18] or "switchboard"
