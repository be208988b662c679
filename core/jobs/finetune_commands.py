"""``/finetune`` in every channel (admins): a JSONL training file sent with it starts a
fine-tuning job; ``/finetune status`` lists the jobs; ``/finetune cancel <n>`` stops one."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from core.conversation.commands import Command
from core.conversation.events import CommandReply
from core.conversation.messages import ConversationKey
from core.jobs.finetunes import FineTuneJobs
from core.media.ports import Attachment
from core.money.accounting import Caller

log = logging.getLogger(__name__)

FINETUNE_USAGE = (
    "Send a .jsonl training file (one chat example a line: "
    '{"messages": [{"role": "user", …}, {"role": "assistant", …}]}, at least 10) with '
    "/finetune as its caption; /finetune status lists the jobs; /finetune cancel <number> "
    "stops one."
)
ADMINS_ONLY = "Only admins can fine-tune models."


class FineTuneCommands:
    """Runs ``/finetune`` for admins and refuses everyone else."""

    names = frozenset({"finetune"})

    def __init__(self, finetunes: FineTuneJobs) -> None:
        self._finetunes = finetunes

    async def run(
        self,
        key: ConversationKey,
        command: Command,
        caller: Caller,
        attachments: Sequence[Attachment] = (),
    ) -> CommandReply:
        """Run ``/finetune`` for ``caller`` in ``key``; returns what to show."""
        if not caller.admin:
            log.warning("refused /finetune from %s: not an admin", caller.user.principal)
            return CommandReply(ADMINS_ONLY)
        words = command.args.split()
        if attachments:
            file = attachments[0]
            if Path(file.filename).suffix.lower() != ".jsonl":
                return CommandReply(f"I can't fine-tune on {file.filename!r}. {FINETUNE_USAGE}")
            return CommandReply(await self._finetunes.submit(key, caller.user, file.data))
        if words == ["status"]:
            return CommandReply(await self._finetunes.status())
        if len(words) == 2 and words[0].lower() == "cancel" and words[1].lstrip("#").isdigit():
            return CommandReply(await self._finetunes.cancel(int(words[1].lstrip("#"))))
        return CommandReply(FINETUNE_USAGE)
