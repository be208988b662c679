"""The fake OpenAI's fine-tuning API: supervised jobs over files uploaded with purpose
``fine-tune`` (kept by the fake's Files API), whose status advances one step each time they
are read (validating_files → queued → running → running, half the steps → succeeded, with a
``ft:…`` model name and the trained tokens), their event logs (newest first, as the API lists
them), cancellation, listing, and the API's errors. A fine-tuned model made here then answers
the fake's Responses and Chat Completions calls; an ``ft:`` name it never made does not.

Steering: ``fail_with`` makes the next jobs fail while they run (with that message);
``refuse_creation`` makes job creation answer an error, as the API does once it stops
accepting new fine-tuning jobs. Trained tokens are ``ceil(chars / 4)`` of every message's
content, times the epochs."""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.openai_batches import StoredFile, error_response, new_id

FINE_TUNABLE = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini")
"""The base models the fake fine-tunes (as OpenAI's supervised fine-tuning does)."""
MIN_EXAMPLES = 10
OPEN = ("validating_files", "queued", "running")
STEPS_PER_EPOCH = 2
ORGANIZATION = "org-switchboard-test"


@dataclass(frozen=True)
class Refusal:
    """How the API answers job creation once it no longer accepts new jobs."""

    status: int = 400
    message: str = (
        "Fine-tuning job creation is no longer available: OpenAI stopped accepting new "
        "fine-tuning jobs on 2027-01-06."
    )
    code: str = "fine_tuning_unavailable"


@dataclass
class FakeJob:
    """One fine-tuning job and what has happened to it."""

    id: str
    model: str
    training_file: str
    epochs: int
    suffix: str | None
    metadata: dict[str, str] | None
    tokens: int
    examples: int
    status: str = "validating_files"
    step: int = 0
    fail_with: str | None = None
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    finished_at: int | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    events: list[dict[str, Any]] = field(default_factory=list)
    """Oldest first (the API lists them newest first)."""

    @property
    def steps(self) -> int:
        return STEPS_PER_EPOCH * self.epochs


class FakeFineTuning:
    """The ``/v1/fine_tuning/jobs`` endpoints; tests steer outcomes through the attributes.

    Attributes:
        fail_with: when set, jobs created from now on fail while running, with this message.
        refuse_creation: when set, creating a job answers this error (nothing is created).
        jobs: every job by id; models: the fine-tuned models made, to their base model.
    """

    def __init__(
        self,
        lock: threading.Lock,
        files: dict[str, StoredFile],
        parsed: Callable[[web.Request], tuple[Any, dict[str, object] | None]],
    ) -> None:
        self._lock = lock
        self._files = files
        self._parsed = parsed
        self.fail_with: str | None = None
        self.refuse_creation: Refusal | None = None
        self.jobs: dict[str, FakeJob] = {}
        self.models: dict[str, str] = {}

    def register(self, app: web.Application) -> None:
        """Add the routes (before the fake's catch-all)."""
        app.router.add_post("/v1/fine_tuning/jobs", self._create)
        app.router.add_get("/v1/fine_tuning/jobs", self._list)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}", self._retrieve)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", self._events)
        app.router.add_post("/v1/fine_tuning/jobs/{job_id}/cancel", self._cancel)

    def reset(self) -> None:
        """Forget every job and model and the steering."""
        with self._lock:
            self.fail_with = None
            self.refuse_creation = None
            self.jobs.clear()
            self.models.clear()

    def knows(self, model: str) -> bool:
        """Whether ``model`` is a fine-tuned model this fake made."""
        with self._lock:
            return model in self.models

    # --- routes --------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        _, body = self._parsed(request)
        if body is None:
            return error_response(400, "We could not parse the JSON body of your request.")
        for required in ("model", "training_file"):
            if not isinstance(body.get(required), str) or not body[required]:
                return error_response(
                    400,
                    f"Missing required parameter: '{required}'.",
                    required,
                    "missing_required_parameter",
                )
        refusal = self.refuse_creation
        if refusal is not None:
            return error_response(refusal.status, refusal.message, None, refusal.code)
        model = str(body["model"])
        if model not in FINE_TUNABLE:
            return error_response(
                400,
                f"Model {model} is not available for fine-tuning or does not exist.",
                "model",
                "model_not_available",
            )
        with self._lock:
            stored = self._files.get(str(body["training_file"]))
        if stored is None:
            return error_response(
                400,
                f"File {body['training_file']} not found.",
                "training_file",
                "invalid_training_file",
            )
        if stored.purpose != "fine-tune":
            return error_response(
                400,
                f"File {stored.id} has purpose '{stored.purpose}'; a training file must be "
                "uploaded with purpose 'fine-tune'.",
                "training_file",
                "invalid_training_file",
            )
        epochs = _epochs(body)
        if epochs is None:
            return error_response(
                400,
                "Invalid value for 'n_epochs': expected an integer from 1 to 50, or 'auto'.",
                "method.supervised.hyperparameters.n_epochs",
                "invalid_value",
            )
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
            return error_response(
                400, "suffix must be a string of at most 64 characters.", "suffix"
            )
        examples, tokens = _count(stored.data)
        metadata = body.get("metadata")
        job = FakeJob(
            new_id("ftjob-"),
            model,
            stored.id,
            epochs,
            suffix if isinstance(suffix, str) else None,
            metadata if isinstance(metadata, dict) else None,
            tokens,
            examples,
            fail_with=self.fail_with,
        )
        self._event(job, f"Validating training file: {stored.id}")
        with self._lock:
            self.jobs[job.id] = job
        return web.json_response(self._object(job))

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
            ids = [job.id for job in jobs]
            start = ids.index(after) + 1 if after in ids else 0
            page = jobs[start : start + limit]
            return web.json_response(
                {
                    "object": "list",
                    "data": [self._object(job) for job in page],
                    "has_more": start + limit < len(jobs),
                }
            )

    async def _retrieve(self, request: web.Request) -> web.Response:
        with self._lock:
            job = self.jobs.get(request.match_info["job_id"])
            if job is None:
                return self._missing(request)
            self._advance(job)
            return web.json_response(self._object(job))

    async def _events(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self._lock:
            job = self.jobs.get(request.match_info["job_id"])
            if job is None:
                return self._missing(request)
            newest_first = list(reversed(job.events))
            ids = [event["id"] for event in newest_first]
            start = ids.index(after) + 1 if after in ids else 0
            page = newest_first[start : start + limit]
            return web.json_response(
                {"object": "list", "data": page, "has_more": start + limit < len(newest_first)}
            )

    async def _cancel(self, request: web.Request) -> web.Response:
        with self._lock:
            job = self.jobs.get(request.match_info["job_id"])
            if job is None:
                return self._missing(request)
            if job.status not in OPEN:
                return error_response(
                    400, f"Job {job.id} has already {job.status}; it cannot be cancelled.", "id"
                )
            job.status = "cancelled"
            job.finished_at = int(time.time())
            self._event(job, "Fine-tuning job cancelled")
            return web.json_response(self._object(job))

    def _missing(self, request: web.Request) -> web.Response:
        return error_response(
            404,
            f"Could not find fine tune job: {request.match_info['job_id']}",
            "fine_tune_id",
            "fine_tune_not_found",
        )

    # --- the job's life (called with the lock held) --------------------------------------

    def _advance(self, job: FakeJob) -> None:
        """One step per read."""
        if job.status == "validating_files":
            if job.examples < MIN_EXAMPLES:
                self._fail(
                    job,
                    "invalid_training_file",
                    f"The job failed due to an invalid training file. Training file has "
                    f"{job.examples} example(s), but must have at least {MIN_EXAMPLES} examples.",
                )
                return
            job.status = "queued"
            self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "Fine-tuning job started")
        elif job.status == "running":
            if job.fail_with is not None:
                self._fail(job, "training_failed", job.fail_with)
                return
            if job.step >= job.steps:
                self._succeed(job)
                return
            until = min(job.step + math.ceil(job.steps / 2), job.steps)
            while job.step < until:
                job.step += 1
                loss = round(1.0 / (1 + job.step), 4)
                self._event(job, f"Step {job.step}/{job.steps}: training loss={loss}")

    def _succeed(self, job: FakeJob) -> None:
        label = job.suffix or ""
        job.fine_tuned_model = f"ft:{job.model}:{ORGANIZATION}:{label}:{secrets.token_hex(4)}"
        job.trained_tokens = job.tokens * job.epochs
        job.status = "succeeded"
        job.finished_at = int(time.time())
        self.models[job.fine_tuned_model] = job.model
        self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
        self._event(job, "The job has successfully completed")

    def _fail(self, job: FakeJob, code: str, message: str) -> None:
        job.status = "failed"
        job.error = {"code": code, "message": message, "param": None}
        job.finished_at = int(time.time())
        self._event(job, message, level="error")

    def _event(self, job: FakeJob, message: str, level: str = "info") -> None:
        job.events.append(
            {
                "id": new_id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": {},
                "type": "message",
            }
        )

    def _object(self, job: FakeJob) -> dict[str, Any]:
        hyperparameters = {"batch_size": 1, "learning_rate_multiplier": 1.8, "n_epochs": job.epochs}
        return {
            "id": job.id,
            "object": "fine_tuning.job",
            "created_at": job.created_at,
            "error": job.error,
            "fine_tuned_model": job.fine_tuned_model,
            "finished_at": job.finished_at,
            "hyperparameters": hyperparameters,
            "model": job.model,
            "organization_id": ORGANIZATION,
            "result_files": [],
            "seed": 42,
            "status": job.status,
            "trained_tokens": job.trained_tokens,
            "training_file": job.training_file,
            "validation_file": None,
            "estimated_finish": None,
            "integrations": None,
            "metadata": job.metadata,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": hyperparameters},
            },
        }


def _epochs(body: dict[str, object]) -> int | None:
    """``n_epochs`` from ``method.supervised.hyperparameters`` or the older
    ``hyperparameters``; ``auto`` is 3. None: not a valid value."""
    method = body.get("method")
    chosen: object = "auto"
    if isinstance(method, dict):
        supervised = method.get("supervised") or {}
        chosen = (supervised.get("hyperparameters") or {}).get("n_epochs", "auto")
    elif isinstance(body.get("hyperparameters"), dict):
        chosen = body["hyperparameters"].get("n_epochs", "auto")  # type: ignore[union-attr]
    if chosen == "auto":
        return 3
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 1 <= chosen <= 50:
        return chosen
    return None


def _count(data: bytes) -> tuple[int, int]:
    """The examples of a training file and their tokens (``ceil(chars / 4)`` per message)."""
    examples = tokens = 0
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list):
            continue
        examples += 1
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                tokens += math.ceil(len(content) / 4)
    return examples, tokens
