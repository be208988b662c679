"""``FileCommandSet``: the job commands that answer at once and may take a file (``/batch``,
``/jobs``, ``/finetune``) as the one ``FileCommands`` the inbound pipeline is given."""

from __future__ import annotations

from collections.abc import Sequence

from core.conversation.commands import Command
from core.conversation.events import CommandReply
from core.conversation.messages import ConversationKey
from core.conversation.pipeline import FileCommands
from core.media.ports import Attachment
from core.money.accounting import Caller


class FileCommandSet:
    """Several ``FileCommands`` as one: each command goes to the set that names it."""

    def __init__(self, *groups: FileCommands) -> None:
        self._groups = groups
        self.names = frozenset(name for group in groups for name in group.names)

    async def run(
        self,
        key: ConversationKey,
        command: Command,
        caller: Caller,
        attachments: Sequence[Attachment] = (),
    ) -> CommandReply:
        """Run ``command`` with the group that names it."""
        for group in self._groups:
            if command.name in group.names:
                return await group.run(key, command, caller, attachments)
        return CommandReply(f"I don't know /{command.name}. Send /help for the commands.")
