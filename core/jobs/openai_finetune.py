"""``FineTuningAPI`` on the OpenAI SDK (``client.files``, ``client.fine_tuning.jobs``);
vendor errors are translated into the core's ``UpstreamError`` tree."""

from __future__ import annotations

import openai
from openai import AsyncOpenAI
from openai.types.fine_tuning import FineTuningJob

from core.jobs.finetune_api import FineTuneEvent, FineTuneState
from core.models.openai_gateway import translate


class OpenAIFineTuning:
    """The fine-tuning API of an ``AsyncOpenAI`` client (or a compatible server)."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def upload(self, name: str, data: bytes) -> str:
        """Upload ``data`` as ``name`` with purpose ``fine-tune``; returns the file id."""
        try:
            uploaded = await self._client.files.create(file=(name, data), purpose="fine-tune")
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return uploaded.id

    async def create(
        self, training_file: str, model: str, *, epochs: int, suffix: str | None
    ) -> FineTuneState:
        """A supervised job with a fixed number of epochs, so the estimate is the charge."""
        try:
            job = await self._client.fine_tuning.jobs.create(
                model=model,
                training_file=training_file,
                method={
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": epochs}},
                },
                suffix=suffix if suffix else openai.omit,
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return state_of(job)

    async def retrieve(self, job_id: str) -> FineTuneState:
        """The job's state now."""
        try:
            return state_of(await self._client.fine_tuning.jobs.retrieve(job_id))
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def events(self, job_id: str, limit: int) -> list[FineTuneEvent]:
        """The API lists events newest first; they are returned oldest first."""
        try:
            page = await self._client.fine_tuning.jobs.list_events(job_id, limit=limit)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return [
            FineTuneEvent(event.id, event.created_at, event.level, event.message)
            for event in reversed(page.data)
        ]

    async def cancel(self, job_id: str) -> FineTuneState:
        """Ask for the job to be cancelled."""
        try:
            return state_of(await self._client.fine_tuning.jobs.cancel(job_id))
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def delete_file(self, file_id: str) -> None:
        """``DELETE /v1/files/{file_id}``."""
        try:
            await self._client.files.delete(file_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc


def state_of(job: FineTuningJob) -> FineTuneState:
    """A ``FineTuneState`` from the SDK's ``FineTuningJob`` model."""
    error = job.error
    message = None
    if error is not None and (error.message or error.code):
        message = error.message or error.code
    return FineTuneState(
        job_id=job.id,
        status=job.status,
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        error=message,
    )
