"""The fine-tuning API port: upload a training file, create a supervised fine-tuning job on
it, follow its status and events, cancel it, delete its training file once it is done.
``core.jobs.openai_finetune`` implements it with the OpenAI SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

OPEN_STATES = frozenset({"validating_files", "queued", "running"})
"""Fine-tuning job states that will still change; the others (``succeeded``, ``failed``,
``cancelled``) are final."""
WEBHOOK_EVENTS = frozenset(
    {"fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"}
)
"""The webhook events about a fine-tuning job that poll it at once."""


@dataclass(frozen=True, slots=True)
class FineTuneState:
    """What the API says about a fine-tuning job now."""

    job_id: str
    status: str
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    """Tokens billed for training (epochs included), once it succeeded."""
    error: str | None = None
    """Why a failed job failed, as the API says it."""

    @property
    def open(self) -> bool:
        """Whether the job is still running."""
        return self.status in OPEN_STATES


@dataclass(frozen=True, slots=True)
class FineTuneEvent:
    """One line of a job's event log."""

    event_id: str
    created_at: int
    level: str
    message: str


class FineTuningAPI(Protocol):
    """The provider's fine-tuning endpoints (and the Files upload they need)."""

    async def upload(self, name: str, data: bytes) -> str:
        """Upload the JSONL training file ``data`` as ``name``; returns its file id."""

    async def create(
        self, training_file: str, model: str, *, epochs: int, suffix: str | None
    ) -> FineTuneState:
        """Create a supervised fine-tuning job of ``model`` on an uploaded file."""

    async def retrieve(self, job_id: str) -> FineTuneState:
        """The job's current state."""

    async def events(self, job_id: str, limit: int) -> list[FineTuneEvent]:
        """The job's newest ``limit`` events, oldest first."""

    async def cancel(self, job_id: str) -> FineTuneState:
        """Ask the API to stop the job."""

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (a finished job's training file) from the account."""
