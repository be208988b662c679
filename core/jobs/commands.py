"""The job commands of every channel: ``/batch`` (prompts as lines after it, or a file sent
with it) and ``/jobs`` (the caller's jobs; ``/jobs cancel <id>``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.conversation.commands import Command
from core.conversation.events import CommandReply
from core.conversation.messages import ConversationKey
from core.jobs.batches import BatchJobs
from core.jobs.prompts import SUFFIXES
from core.media.ports import Attachment
from core.money.accounting import Caller

JOBS_USAGE = "Usage: /jobs to list your jobs, /jobs cancel <number> to stop one."
BATCH_USAGE = (
    "Send /batch with one prompt a line after it, or a .txt (one prompt a line), .jsonl "
    '(a "prompt" field per line) or .csv (a "prompt" column) file with /batch as its caption.'
)


class JobCommands:
    """Runs ``/batch`` and ``/jobs``; the pipeline hands them the files sent with them."""

    names = frozenset({"batch", "jobs"})

    def __init__(self, batches: BatchJobs) -> None:
        self._batches = batches

    async def run(
        self,
        key: ConversationKey,
        command: Command,
        caller: Caller,
        attachments: Sequence[Attachment] = (),
    ) -> CommandReply:
        """Run ``command`` for ``caller`` in ``key``; returns what to show."""
        if command.name == "batch":
            return CommandReply(await self._batch(key, command.args, caller, attachments))
        return CommandReply(await self._jobs(command.args, caller))

    async def _batch(
        self, key: ConversationKey, args: str, caller: Caller, attachments: Sequence[Attachment]
    ) -> str:
        if attachments:
            file = attachments[0]
            if Path(file.filename).suffix.lower() not in SUFFIXES:
                return f"I can't make a batch of {file.filename!r}. {BATCH_USAGE}"
            return await self._batches.submit(key, caller.user, file.data, file.filename)
        if not args.strip():
            return BATCH_USAGE
        return await self._batches.submit(key, caller.user, args.encode(), "")

    async def _jobs(self, args: str, caller: Caller) -> str:
        words = args.split()
        if not words:
            jobs = await self._batches.list_jobs(caller.user)
            if not jobs:
                return "You have no jobs. /batch sends a batch of prompts."
            return "Your jobs:\n" + "\n".join(self._batches.describe(job) for job in jobs)
        if words[0].lower() == "cancel" and len(words) == 2:
            number = words[1].lstrip("#")
            if number.isdigit():
                return await self._batches.cancel(
                    int(number), caller.user.principal, admin=caller.admin
                )
        return JOBS_USAGE
