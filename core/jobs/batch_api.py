"""The Batch API port: upload a JSONL file of requests, create a batch over it, follow its
status, cancel it and read its output and error files. ``core.jobs.openai_batches``
implements it with the OpenAI SDK."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from core.models.llm import Usage

OPEN_STATES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
"""Batch states that will still change; the others are final."""


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the API says about a batch now."""

    batch_id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()
    """Validation errors of a failed batch, each naming its line when the API does."""
    usage: Usage | None = None
    """Tokens the batch used, as the API reports them (None: not reported)."""
    input_file_id: str | None = None

    @property
    def open(self) -> bool:
        """Whether the batch is still running."""
        return self.status in OPEN_STATES


class BatchAPI(Protocol):
    """The provider's Batch and Files endpoints."""

    async def upload(self, path: Path) -> str:
        """Upload the JSONL file at ``path`` for a batch, reading it a part at a time (so
        memory does not grow with the file); returns its file id."""

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> BatchState:
        """Create a batch over an uploaded file, answered by ``endpoint`` within 24 h. Tried
        once: a create whose answer was lost may have made the batch, so the caller looks
        for it with ``find`` rather than creating it again."""

    async def find(self, key: str, value: str, since: datetime) -> BatchState | None:
        """The batch created since ``since`` whose metadata has ``key`` = ``value``, or
        None if there is none."""

    async def retrieve(self, batch_id: str) -> BatchState:
        """The batch's current state."""

    async def cancel(self, batch_id: str) -> BatchState:
        """Ask the API to stop the batch; it goes through ``cancelling`` to ``cancelled``."""

    async def content(self, file_id: str) -> bytes:
        """The bytes of a file (a batch's input, output or error file)."""
