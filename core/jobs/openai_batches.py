"""``BatchAPI`` on the OpenAI SDK (``client.files``, ``client.uploads``,
``client.batches``); vendor errors are translated into the core's ``UpstreamError`` tree."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import openai
from openai import AsyncOpenAI

from core.errors import UpstreamUnavailable
from core.jobs.batch_api import BatchState
from core.models.llm import Usage
from core.models.openai_gateway import translate

Endpoint = Literal["/v1/responses", "/v1/chat/completions"]

PART_BYTES = 8 * 1024 * 1024
"""The size of one upload part (the API takes up to 64 MB): what an upload holds in memory."""
JSONL = "application/jsonl"


class OpenAIBatches:
    """The Batch API of an ``AsyncOpenAI`` client (or a compatible server)."""

    def __init__(self, client: AsyncOpenAI, *, part_bytes: int = PART_BYTES) -> None:
        self._client = client
        self._part_bytes = part_bytes

    async def upload(self, path: Path) -> str:
        """Upload ``path`` with purpose ``batch``: a file of one part in one request
        (``files.create``), a larger one through the Uploads API, part by part, so that
        only one part is ever read into memory."""
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size <= self._part_bytes:
                return (await self._client.files.create(file=path, purpose="batch")).id
            upload = await self._client.uploads.upload_file_chunked(
                file=path, mime_type=JSONL, purpose="batch", bytes=size, part_size=self._part_bytes
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        if upload.file is None:
            raise UpstreamUnavailable(f"upload {upload.id} was completed without a file")
        return upload.file.id

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> BatchState:
        """Create a batch with the 24 h completion window (the only one the API offers)."""
        try:
            # No retry by the SDK: a retried create whose first answer was lost makes a
            # second batch (the Batch API takes no idempotency key).
            batch = await self._client.with_options(max_retries=0).batches.create(
                input_file_id=file_id,
                endpoint=cast(Endpoint, endpoint),
                completion_window="24h",
                metadata=metadata,
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return state_of(batch)

    async def find(self, key: str, value: str, since: datetime) -> BatchState | None:
        """Page through the batches, newest first, back to ``since``."""
        oldest = since.timestamp()
        try:
            async for batch in self._client.batches.list(limit=100):
                if (batch.metadata or {}).get(key) == value:
                    return state_of(batch)
                if batch.created_at < oldest:
                    return None
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return None

    async def retrieve(self, batch_id: str) -> BatchState:
        """The batch's state now."""
        try:
            return state_of(await self._client.batches.retrieve(batch_id))
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def cancel(self, batch_id: str) -> BatchState:
        """Ask for the batch to be cancelled."""
        try:
            return state_of(await self._client.batches.cancel(batch_id))
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def content(self, file_id: str) -> bytes:
        """A file's bytes."""
        try:
            response = await self._client.files.content(file_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return response.content


def state_of(batch: Any) -> BatchState:
    """A ``BatchState`` from the SDK's ``Batch`` model."""
    counts = batch.request_counts
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    usage = batch.usage
    return BatchState(
        batch_id=batch.id,
        status=batch.status,
        total=counts.total if counts is not None else 0,
        completed=counts.completed if counts is not None else 0,
        failed=counts.failed if counts is not None else 0,
        output_file_id=batch.output_file_id,
        input_file_id=batch.input_file_id,
        error_file_id=batch.error_file_id,
        errors=tuple(
            (f"line {error.line}: " if error.line is not None else "")
            + (error.message or error.code or "invalid")
            for error in errors
        ),
        usage=None
        if usage is None
        else Usage(
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.input_tokens_details.cached_tokens,
            output_tokens=usage.output_tokens,
        ),
    )
