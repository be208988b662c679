"""The conversation store port: users, conversations, messages, usage rows, event dedupe and
the messages the bot posted on its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.conversation.messages import (
    Conversation,
    ConversationKey,
    NewMessage,
    PostedMessage,
    StoredMessage,
    UserRef,
)
from core.media.ports import PreparedImage


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One billable API call: who, where, what, how much and at which prices.

    Token calls fill the token counts; other calls count ``units`` of ``unit``: ``images``,
    ``audio_ms`` (transcription, by real duration) or ``characters`` (speech).
    """

    user_id: int | None
    conversation_id: int | None
    kind: str
    model: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    units: int = 0
    unit: str | None = None
    cost_micros: int = 0
    prices: dict[str, int] = field(default_factory=dict)
    request_id: str | None = None
    write_key: str | None = None
    """Unique per row once set (the end-of-turn writes set it): a row written again, as a
    spool replayed after a crash does, is stored once."""


@dataclass(frozen=True, slots=True)
class Spend:
    """What one user (or, with ``user`` None, everyone) spent: cost and API calls."""

    user: UserRef | None
    cost_micros: int
    calls: int


class ConversationStore(Protocol):
    """Persistent conversation state; every implementation passes ``tests/test_store_contract``."""

    async def ensure_user(self, user: UserRef) -> int:
        """The stored id of ``user``, creating or refreshing the row (names change)."""

    async def active_conversation(self, key: ConversationKey) -> Conversation:
        """The conversation currently open for ``key``, created when there is none, with the
        id of its newest message."""

    async def find_active(self, key: ConversationKey) -> Conversation | None:
        """The conversation currently open for ``key``, or None; never creates one."""

    async def start_conversation(self, key: ConversationKey) -> Conversation:
        """Close the open conversation of ``key`` (kept, not deleted) and open a new one."""

    async def set_mode(self, conversation_id: int, mode: str | None) -> None:
        """Remember the mode chosen in a conversation (None: the default)."""

    async def set_model(self, conversation_id: int, model: str | None) -> None:
        """Remember the model chosen in a conversation (None: the mode's or the default)."""

    async def replace_model(self, old: str, new: str) -> int:
        """Move every conversation that chose model ``old`` to ``new`` (``old`` was retired);
        returns how many were moved."""

    async def set_voice(self, conversation_id: int, on: bool, *, talk: bool = False) -> None:
        """Remember whether replies in a conversation are also spoken, and whether its voice
        notes are answered voice-to-voice (``/voice talk``; only together with ``on``)."""

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message``, its pictures and its usage rows in one transaction."""

    async def record_usage(self, usage: Sequence[UsageRecord]) -> None:
        """Store usage rows that belong to no new message (a spoken reply)."""

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_id: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages older than ``before_id`` (or the newest), newest first."""

    async def message_images(self, message_ids: Sequence[int]) -> dict[int, list[PreparedImage]]:
        """The pictures stored with each of ``message_ids``, in the order they were sent."""

    async def latest_image(self, conversation_id: int) -> PreparedImage | None:
        """The newest picture in a conversation (sent or drawn), for ``/edit``."""

    async def usage(self, conversation_id: int) -> list[UsageRecord]:
        """The usage rows of one conversation, oldest first."""

    async def spending(
        self, since: datetime, user: UserRef | None = None, *, top: int = 10
    ) -> list[Spend]:
        """Usage since ``since``: the total first (``user`` None), then the ``top`` users by
        cost; with ``user``, the total and that user alone."""

    async def find_users(self, username: str) -> list[UserRef]:
        """Known users whose username is ``username`` (case-insensitive), on any channel."""

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time ``(source, event_id)`` is claimed, False for a redelivery."""

    async def access_rules(self) -> dict[str, str]:
        """Admins' runtime rules: ``channel:user id`` to ``allow`` or ``block``."""

    async def set_access_rule(self, principal: str, rule: str | None, set_by: str) -> None:
        """Set ``principal``'s rule (``allow`` or ``block``), or clear it with None."""

    async def record_posted(self, key: ConversationKey, platform_message_id: str) -> PostedMessage:
        """Keep a message the bot posted in ``key`` (a status message it may edit later)."""

    async def posted(self, posted_id: int) -> PostedMessage | None:
        """A message kept by ``record_posted``, or None."""
