"""Batch jobs, the use cases: ``submit`` (read the prompts, build the request file with the
conversation's model and mode, reserve the estimate at batch prices, upload, create, record,
post the status message), ``poll_once`` (each open job under a lease: its status message
edited with a progress bar; a finished batch's results delivered as files, its cost settled
and the job closed in one step, so they are delivered once), and ``/jobs`` listing and
cancelling."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.conversation.channel import Outbox, OutgoingFile
from core.conversation.choices import ConversationChoices
from core.conversation.messages import ConversationKey, UserRef
from core.conversation.store import ConversationStore, UsageRecord
from core.errors import (
    RateLimited,
    SwitchboardError,
    UpstreamUnavailable,
    UserInputError,
    user_message,
)
from core.jobs.batch_api import OPEN_STATES, BatchAPI, BatchState
from core.jobs.polling import (
    JobPolling,
    LeaseLost,
    NotHere,
    PollingOptions,
    WebhookVerifier,
    accept_webhook,
    job_age,
    job_key,
    key_payload,
)
from core.jobs.prompts import BuiltBatch, build_requests, prompt_of, read_prompts
from core.jobs.reservations import reservation_from_json, reservation_to_json
from core.jobs.store import LEASE_SECONDS, SUBMITTING, Job, JobStore, NewJob
from core.metrics import Metrics
from core.models.llm import Usage
from core.models.registry import ModelSpec
from core.money.budgets import BudgetExceeded, BudgetLedger, Payer, Scope
from core.money.money import format_usd
from core.money.prices import PriceTable
from core.money.pricing import price_sheet, token_cost

log = logging.getLogger(__name__)

KIND = "batch"
BAR_WIDTH = 20
LIVE = OPEN_STATES | {SUBMITTING}
"""The job states a poll can change."""
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
"""Error codes of requests a batch never ran (it expired or was cancelled first)."""
TOKEN_KEY = "switchboard_job"
"""The batch metadata key that carries the job's token, by which a batch whose creation
was not recorded is found again."""
CLOCK_SKEW = timedelta(minutes=10)
"""How far back before a job's row (the database's clock) its batch (OpenAI's clock) is
looked for."""
NO_API = "Batch jobs need the OpenAI API; they are not available in this mode."
_LABELS = {
    SUBMITTING: "being sent",
    "validating": "validating",
    "in_progress": "in progress",
    "finalizing": "finalizing",
    "cancelling": "cancelling",
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}


@dataclass(frozen=True, slots=True)
class _Sent:
    """What became of sending a batch: its state if it was created; else why not, and
    whether it might exist all the same (then the next poller looks for it)."""

    state: BatchState | None
    payload: dict[str, Any]
    file_id: str = ""
    problem: str = ""
    undecided: bool = False


@dataclass(frozen=True)
class BatchOptions:
    """How batches are made and polled."""

    poll_seconds: float
    output_cap: int
    """The most output tokens one answer may use (it bounds the estimate)."""
    owner: str
    """This process's name on the leases it takes."""
    timezone: ZoneInfo
    webhook_secret: str | None = None
    """``OPENAI_WEBHOOK_SECRET``: webhooks are accepted only when it is set."""
    gone: Callable[[str], bool] = lambda owner: False
    """Whether a lease owner is a process known to be dead (its jobs are taken over at
    once rather than when the lease runs out)."""


class BatchJobs:
    """Submits, polls, delivers, lists and cancels batch jobs."""

    def __init__(
        self,
        *,
        api: BatchAPI | None,
        webhooks: WebhookVerifier | None,
        jobs: JobStore,
        store: ConversationStore,
        choices: ConversationChoices,
        outbox: Outbox,
        ledger: BudgetLedger,
        prices: PriceTable,
        count_tokens: Callable[[str | None], Callable[[str], int]],
        clock: Clock,
        options: BatchOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self._api = api
        self._webhooks = webhooks
        self._jobs = jobs
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
            label="batch",
            open_states=LIVE,
            jobs=jobs,
            outbox=outbox,
            clock=clock,
            options=PollingOptions(options.owner, options.poll_seconds, lease_to_next_poll=True),
            metrics=metrics,
        )

    # --- submitting ----------------------------------------------------------------------

    async def submit(self, key: ConversationKey, user: UserRef, data: bytes, filename: str) -> str:
        """Send the prompts of ``data`` (a file called ``filename``, or the lines typed after
        ``/batch`` when ``filename`` is empty) as a batch; returns the line to show the user.
        Nothing is uploaded when the prompts are invalid or the estimate does not fit the
        user's budgets."""
        if self._api is None:
            return NO_API
        mode, model = await self._choices.current(key)
        with tempfile.TemporaryDirectory(prefix="switchboard-batch-") as folder:
            try:
                built = await asyncio.to_thread(
                    build_requests,
                    read_prompts(data, filename),
                    Path(folder) / "requests.jsonl",
                    model=model,
                    mode=mode,
                    output_cap=min(self._options.output_cap, model.max_output_tokens),
                    count_tokens=self._count_tokens(model.encoding),
                )
            except UserInputError as exc:
                return str(exc)
            estimate = self._cost(
                model, Usage(built.input_tokens, 0, built.requests * built.output_cap)
            )
            payer = Payer.of(user, key)
            short = await self._short_of(payer, estimate)
            if short is not None:
                return (
                    f"That batch of {built.requests} prompts could cost up to "
                    f"{format_usd(estimate)} at batch prices, more than {short}"
                )
            try:
                reservation = await self._ledger.reserve(
                    payer, estimate, self._clock.now(), self._options.timezone
                )
            except BudgetExceeded as exc:
                return (
                    f"That batch of {built.requests} prompts could cost up to "
                    f"{format_usd(estimate)} at batch prices. {exc}"
                )
            user_id = await self._store.ensure_user(user)
            conversation = await self._store.active_conversation(key)
            payload = _payload(key, user, model=model, built=built, estimate=estimate)
            payload["reservation"] = reservation_to_json(reservation)
            # The row comes first, leased to this process, with a token the batch carries
            # in its metadata: if this process dies between creating the batch and
            # recording it, the next poller finds the batch by the token (``_resume``).
            payload["token"] = secrets.token_hex(16)
            now = self._clock.now()
            job = await self._jobs.add(
                NewJob(KIND, SUBMITTING, user_id, conversation.id, None, payload),
                self._options.owner,
                now + timedelta(seconds=LEASE_SECONDS),
            )
            sent = await self._send(job, built)
        if sent.state is None:
            if sent.undecided:
                return (
                    f"Batch #{job.id} may not have been sent ({sent.problem}); it is checked "
                    "again shortly, and /jobs shows what became of it."
                )
            await self._ledger.release(reservation)
            await self._jobs.finish(
                job.id, self._options.owner, status="failed", payload=payload, usage=None,
                error=sent.problem,
            )  # fmt: skip
            return f"The batch could not be sent: {sent.problem}"
        state = sent.state
        payload = {**sent.payload, "input_file_id": state.input_file_id or sent.file_id}
        await self._polling.post_status(
            replace(job, payload=payload),
            status_text(job.id, state, built.requests),
            status=state.status,
            openai_id=state.batch_id,
        )
        return (
            f"Batch #{job.id} sent: {built.requests} prompt{'s' if built.requests != 1 else ''} "
            f"for {model.title or model.id}, at most {format_usd(estimate)} at batch prices "
            "(held from your budget until it is done). The answers come here as files, "
            f"usually within 24 hours. /jobs shows its state; /jobs cancel {job.id} stops it."
        )

    async def _send(self, job: Job, built: BuiltBatch) -> _Sent:
        """Upload the request file and create the batch, at most once."""
        assert self._api is not None
        owner = self._options.owner
        try:
            file_id = await self._api.upload(built.path)
        except SwitchboardError as exc:
            log.warning("batch #%d could not be uploaded: %s", job.id, exc)
            return _Sent(None, job.payload, problem=user_message(exc))
        # The upload may have taken long: renew the lease, and create nothing if another
        # process took the job over meanwhile (it finds no batch and closes the job).
        payload = {**job.payload, "input_file_id": file_id}
        now = self._clock.now()
        if not await self._jobs.checkpoint(
            job.id, owner, payload, now + timedelta(seconds=LEASE_SECONDS)
        ):
            return _Sent(None, payload, problem="the upload took too long", undecided=True)
        metadata = {"switchboard_user": payload["user"], TOKEN_KEY: payload["token"]}
        try:
            state = await self._api.create(file_id, built.endpoint, metadata)
        except SwitchboardError as exc:
            # The API may have made the batch and its answer been lost on the way.
            log.warning("creating batch #%d failed (%s); looking for it", job.id, exc)
            problem = user_message(exc)
            try:
                found = await self._api.find(
                    TOKEN_KEY, payload["token"], job.created_at - CLOCK_SKEW
                )
            except SwitchboardError:
                return _Sent(None, payload, file_id, problem, undecided=True)
            return _Sent(found, payload, file_id, problem)
        return _Sent(state, payload, file_id)

    async def _short_of(self, payer: Payer, estimate: int) -> str | None:
        """Why ``estimate`` does not fit what is left of ``payer``'s budgets, or None: a
        batch is held whole, so it must fit (a chat turn instead caps its output)."""
        now = self._clock.now()
        for status in await self._ledger.status(payer, now, self._options.timezone):
            if estimate > status.left_micros:
                budget = status.budget
                whose = "this chat's" if budget.scope is Scope.PLACE else "your"
                return (
                    f"{format_usd(status.left_micros)} left of {whose} {budget.period.value} "
                    f"budget of {format_usd(budget.limit_micros)}. Send fewer prompts, or ask "
                    "an admin to raise it with /quota."
                )
        return None

    # --- polling and delivering ----------------------------------------------------------

    async def poll_once(self) -> int:
        """One polling round: every due job whose channel runs here, each under a lease so
        that one process polls it; returns how many were polled."""
        if self._api is None:
            return 0
        await self._release_dead()
        return await self._polling.poll_due(self._poll)

    async def _release_dead(self) -> None:
        """Free the leases of processes that died holding them (on this machine)."""
        for owner in await self._jobs.lease_owners():
            if owner != self._options.owner and self._options.gone(owner):
                released = await self._jobs.release_leases(owner)
                log.info("took over %d jobs of %s, which is gone", released, owner)

    async def on_webhook(self, payload: bytes, headers: Mapping[str, str]) -> bool:
        """An OpenAI webhook delivery: verified (``InvalidWebhook`` if it is not),
        each delivery id once, and a ``batch.*`` event polls its job now; returns whether
        a job was polled. Polling on schedule stays the safety net."""
        event = await accept_webhook(
            self._webhooks if self._api is not None else None,
            self._options.webhook_secret,
            self._store,
            payload,
            headers,
        )
        if event is None or not event.type.startswith("batch."):
            return False
        job = await self._jobs.by_openai_id(event.object_id)
        if job is None:
            return False
        return await self._polling.poll_leased(job, self._clock.now(), self._poll)

    async def _poll(self, job: Job) -> None:
        assert self._api is not None
        if not job.openai_id:
            await self._resume(job)
            return
        state = await self._api.retrieve(job.openai_id)
        owner = self._options.owner
        if state.open:
            text = status_text(job.id, state, job.payload["requests"])
            counts = {"completed": state.completed, "failed": state.failed}
            if (
                state.status == job.status
                and job.payload.get("counts") == counts
                and job.payload.get("shown", text) == text
            ):
                return  # nothing new: the lease stands until the next poll
            payload = await self._polling.show(job, text)
            payload["counts"] = counts
            await self._jobs.update(job.id, owner, state.status, payload, self._polling.next_poll())
            return
        # Delivering takes longer than a poll: hold the job for as long as a step may take.
        now = self._clock.now()
        if not await self._jobs.lease(job.id, owner, now + timedelta(seconds=LEASE_SECONDS), now):
            raise LeaseLost(f"batch #{job.id} was taken over by another process")
        await self._deliver(job, state)

    async def _resume(self, job: Job) -> None:
        """A job whose process died while sending it: the batch is looked for by the
        job's token; found, it is recorded and polled from now on; not found, it was never
        created, and the job is closed as failed, its estimate released, the user told."""
        assert self._api is not None
        owner = self._options.owner
        found = await self._api.find(TOKEN_KEY, job.payload["token"], job.created_at - CLOCK_SKEW)
        key = job_key(job)
        if found is not None:
            payload = {**job.payload, "input_file_id": found.input_file_id}
            await self._polling.post_status(
                replace(job, payload=payload),
                status_text(job.id, found, payload["requests"]),
                status=found.status,
                openai_id=found.batch_id,
            )
            log.info("batch #%d: found %s after a restart", job.id, found.batch_id)
            return
        problem = "the bot restarted before the batch was sent; nothing was charged"
        if not await self._jobs.finish(
            job.id, owner, status="failed", payload=job.payload, usage=None, error=problem
        ):
            return
        await self._ledger.release(reservation_from_json(job.payload["reservation"]))
        try:
            await self._outbox.post(
                key, f"Batch #{job.id} was not sent: {problem}. Please send it again."
            )
        except Exception as exc:
            log.warning("could not tell the owner of batch #%d: %s", job.id, exc)

    async def _deliver(self, job: Job, state: BatchState) -> None:
        """Send a finished batch's results, then close the job with its usage row (one
        transaction) and settle its reservation."""
        assert self._api is not None
        payload = job.payload
        problem: str | None = None
        try:
            answers, failures, raw, line_usage = await self._results(state)
            prompts = await self._prompts(payload["input_file_id"])
        except (RateLimited, UpstreamUnavailable):
            raise  # passing: the next poll reads them again
        except (ValueError, KeyError, AttributeError, SwitchboardError) as exc:
            # Unreadable results are reported once and the job is closed, not retried forever.
            log.warning("batch #%d: its result files could not be read: %s", job.id, exc)
            problem = "its result files could not be read"
            answers, failures, raw, line_usage, prompts = {}, {}, b"", Usage(), {}
        report = results_markdown(
            job.id, state, payload=payload, prompts=prompts, answers=answers, failures=failures
        )
        if problem is not None:
            report += f"\nThe answers could not be shown: {problem}.\n"
        files = [
            OutgoingFile(
                f"batch-{job.id}-results.md",
                report.encode(),
                "text/markdown",
                caption=f"Batch #{job.id}: {_LABELS.get(state.status, state.status)}",
            )
        ]
        if raw:
            files.append(OutgoingFile(f"batch-{job.id}-results.jsonl", raw, "application/jsonl"))
        payload, trouble = await self._send_files(job, files)
        if trouble is not None:
            problem = trouble if problem is None else f"{problem}; {trouble}"
        usage = state.usage or line_usage
        model = self._choices.registry.models.get(payload["model"])
        token_prices = model.prices if model is not None else None
        cost = self._cost(model, usage) if model is not None else 0
        record = UsageRecord(
            user_id=job.user_id,
            conversation_id=job.conversation_id,
            kind=KIND,
            model=payload["model"],
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            cost_micros=cost,
            prices={
                **(price_sheet(token_prices) if token_prices else {}),
                "batch_discount_bp": self._prices.batch_discount_bp,
            },
            request_id=state.batch_id,
        )
        final = status_text(job.id, state, payload["requests"], cost=cost)
        if problem is not None:
            final += f"\nProblem: {problem}."
        new_payload = await self._polling.show(replace(job, payload=payload), final)
        errors = "; ".join(state.errors) or None
        if not await self._jobs.finish(
            job.id,
            self._options.owner,
            status=state.status,
            payload=new_payload,
            usage=record,
            error=problem or errors,
        ):
            log.warning("batch #%d was closed by another process meanwhile", job.id)
            return
        reservation = reservation_from_json(payload["reservation"])
        await self._ledger.settle(reservation, cost)
        log.info("batch #%d %s: delivered, cost %s", job.id, state.status, format_usd(cost))

    async def _send_files(
        self, job: Job, files: list[OutgoingFile]
    ) -> tuple[dict[str, Any], str | None]:
        """Send a job's result files, each at most once across processes and restarts:
        before a file goes out the job records that it is being sent, and after, that it
        was. A file that a dead process was sending (recorded as being sent, never as
        sent) may have arrived or not — the platform cannot say — so it is not sent again,
        and the user is told; returns the payload and what went wrong, if anything."""
        owner = self._options.owner
        payload = dict(job.payload)
        trouble: list[str] = []
        for file in files:
            delivery: dict[str, Any] = payload.get("delivery") or {"done": [], "sending": None}
            if file.filename in delivery["done"]:
                continue
            if delivery["sending"] == file.filename:
                trouble.append(
                    f"a restart interrupted sending {file.filename}; it may not have arrived"
                )
                delivery = {"done": [*delivery["done"], file.filename], "sending": None}
                payload["delivery"] = delivery
                continue
            if not self._outbox.reaches(job_key(job)):
                raise NotHere(f"batch #{job.id}: its channel stopped here; delivered later")
            payload["delivery"] = {**delivery, "sending": file.filename}
            until = self._clock.now() + timedelta(seconds=LEASE_SECONDS)
            if not await self._jobs.checkpoint(job.id, owner, payload, until):
                raise LeaseLost(f"batch #{job.id} was taken over by another process")
            try:
                await self._outbox.send_file(job_key(job), file)
            except Exception as exc:
                if not self._outbox.reaches(job_key(job)):
                    # The channel stopped under the call (a shutdown): whether the file
                    # arrived is unknown, so it stays "being sent" for the next process,
                    # which sends the rest and closes the job.
                    raise NotHere(f"batch #{job.id}: its channel stopped while sending") from exc
                trouble.append(f"the results could not be sent: {exc}")
                log.warning("batch #%d: %s could not be sent: %s", job.id, file.filename, exc)
                # Refused by the platform (the chat is gone): not tried again.
                payload["delivery"] = {"done": [*delivery["done"], file.filename], "sending": None}
                break
            payload["delivery"] = {"done": [*delivery["done"], file.filename], "sending": None}
            until = self._clock.now() + timedelta(seconds=LEASE_SECONDS)
            await self._jobs.checkpoint(job.id, owner, payload, until)
        return payload, "; ".join(trouble) or None

    async def _results(
        self, state: BatchState
    ) -> tuple[dict[str, str], dict[str, str], bytes, Usage]:
        """The answers and failures by request number, the raw output and error lines, and
        the usage the lines report."""
        assert self._api is not None
        answers: dict[str, str] = {}
        failures: dict[str, str] = {}
        raw = b""
        usage = Usage()
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            content = await self._api.content(file_id)
            raw += content if content.endswith(b"\n") or not content else content + b"\n"
            for line in content.decode("utf-8", "replace").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                custom_id = str(item.get("custom_id"))
                response = item.get("response") or {}
                body = response.get("body") or {}
                if (item.get("error") or {}).get("code") in NOT_RUN:
                    continue  # never run: reported as such, not as a failure
                if item.get("error") or response.get("status_code", 200) >= 400:
                    error = item.get("error") or body.get("error") or {}
                    failures[custom_id] = str(error.get("message") or "failed")
                    continue
                answers[custom_id] = _answer_text(body)
                usage = _add_usage(usage, body.get("usage") or {})
        return answers, failures, raw, usage

    async def _prompts(self, file_id: str) -> dict[str, str]:
        """The prompts by request number, read back from the uploaded request file."""
        assert self._api is not None
        prompts: dict[str, str] = {}
        content = await self._api.content(file_id)
        for line in content.decode("utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                prompts[str(item["custom_id"])] = prompt_of(item.get("body") or {})
        return prompts

    def _cost(self, model: ModelSpec, usage: Usage) -> int:
        return self._prices.batch_cost(token_cost(model.prices, usage))

    # --- /jobs ---------------------------------------------------------------------------

    async def list_jobs(self, user: UserRef, limit: int = 20) -> list[Job]:
        """The newest batch jobs of ``user``."""
        return await self._jobs.jobs(await self._store.ensure_user(user), limit=limit, kind=KIND)

    def describe(self, job: Job) -> str:
        """One line about a job: number, state with progress, and age."""
        counts = job.payload.get("counts") or {}
        state = _LABELS.get(job.status, job.status)
        if job.status in OPEN_STATES and counts:
            state += f" {counts.get('completed', 0)}/{job.payload.get('requests', 0)}"
        age = job_age(self._clock.now() - job.created_at)
        return f"#{job.id} batch of {job.payload.get('requests', '?')} — {state} — {age} ago" + (
            f" — {job.error}" if job.error else ""
        )

    async def cancel(self, job_id: int, principal: str, *, admin: bool) -> str:
        """Cancel the batch ``job_id`` for its owner (admins: anyone's)."""
        job = await self._jobs.job(job_id)
        if job is None or job.kind != KIND or (not admin and job.payload.get("user") != principal):
            return f"There is no job #{job_id} of yours. /jobs lists them."
        if job.status not in LIVE:
            return f"Job #{job_id} is already {_LABELS.get(job.status, job.status)}."
        if not job.openai_id:
            return f"Batch #{job_id} is still being sent; cancel it in a moment."
        if self._api is None:
            return NO_API
        try:
            await self._api.cancel(job.openai_id)
        except SwitchboardError as exc:
            return f"Job #{job_id} could not be cancelled: {user_message(exc)}"
        return f"Cancelling batch #{job_id}; whatever answers exist will still be delivered."


def status_text(job_id: int, state: BatchState, requests: int, *, cost: int | None = None) -> str:
    """The status message: state, a progress bar (completed / failed / total), and the
    cost once it is known."""
    total = state.total or requests
    done = state.completed + state.failed
    filled = round(BAR_WIDTH * done / total) if total else 0
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    lines = [
        f"Batch #{job_id}: {_LABELS.get(state.status, state.status)}",
        f"{bar} {state.completed} done, {state.failed} failed, of {total}",
    ]
    if state.errors:
        lines += ["Problems:", *(f"• {error}" for error in state.errors[:10])]
    if cost is not None:
        lines.append(f"Cost: {format_usd(cost)} at batch prices.")
    return "\n".join(lines)


def results_markdown(
    job_id: int,
    state: BatchState,
    *,
    payload: dict[str, Any],
    prompts: dict[str, str],
    answers: dict[str, str],
    failures: dict[str, str],
) -> str:
    """The readable results: each prompt followed by its answer, in the order submitted."""
    labels: dict[str, dict[str, str]] = payload.get("labels") or {}
    lines = [
        f"# Batch #{job_id} — {_LABELS.get(state.status, state.status)}",
        "",
        f"Model: {payload['model']}. {len(answers)} answered, {len(failures)} failed, "
        f"of {payload['requests']} prompts.",
    ]
    if state.errors:
        lines += ["", "Problems the API reported:", *(f"- {error}" for error in state.errors)]
    missing = {
        "expired": "not answered: the batch expired first",
        "cancelled": "not answered: the batch was cancelled first",
        "failed": "not answered: the batch failed",
    }.get(state.status, "no answer")
    for number in range(1, payload["requests"] + 1):
        custom_id = str(number)
        title = ", ".join(f"{k}: {v}" for k, v in labels.get(custom_id, {}).items())
        lines += ["", f"## {number}{f' ({title})' if title else ''}", ""]
        lines += ["**Prompt:**", "", prompts.get(custom_id, ""), ""]
        if custom_id in answers:
            lines += ["**Answer:**", "", answers[custom_id]]
        elif custom_id in failures:
            lines += [f"**Failed:** {failures[custom_id]}"]
        else:
            lines += [f"*{missing}*"]
    return "\n".join(lines) + "\n"


def _payload(
    key: ConversationKey,
    user: UserRef,
    *,
    model: ModelSpec,
    built: BuiltBatch,
    estimate: int,
) -> dict[str, Any]:
    return {
        "key": key_payload(key),
        "user": user.principal,
        "model": model.id,
        "requests": built.requests,
        "estimate": estimate,
        "labels": built.labels,
    }


def _answer_text(body: dict[str, Any]) -> str:
    """The text of a Responses or Chat Completions body."""
    if "output" in body:
        texts = [
            part.get("text", "")
            for item in body.get("output") or []
            if item.get("type") == "message"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        ]
        return "".join(texts)
    choices = body.get("choices") or []
    return str((choices[0].get("message") or {}).get("content") or "") if choices else ""


def _add_usage(total: Usage, reported: dict[str, Any]) -> Usage:
    """Add one answer's reported usage (either API's field names)."""
    input_tokens = reported.get("input_tokens", reported.get("prompt_tokens", 0))
    output_tokens = reported.get("output_tokens", reported.get("completion_tokens", 0))
    details = reported.get("input_tokens_details") or reported.get("prompt_tokens_details") or {}
    return Usage(
        total.input_tokens + int(input_tokens),
        total.cached_input_tokens + int(details.get("cached_tokens", 0)),
        total.output_tokens + int(output_tokens),
    )
