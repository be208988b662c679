"""Value objects that every channel normalises its events into, and that the store keeps."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from core.media.ports import Attachment, PreparedImage


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation lives: channel, workspace (Slack team), place (chat) and thread.

    Normalised at the edge so that every adapter keys conversations the same way; ``str()``
    gives the stable text form the store indexes.
    """

    channel: str
    place: str
    scope: str = ""
    thread: str = ""

    def __str__(self) -> str:
        parts = (self.channel, self.scope, self.place, self.thread)
        return ":".join(quote(part, safe="") for part in parts)


@dataclass(frozen=True, slots=True)
class UserRef:
    """A person on one channel: the channel's user id plus what we know of their name."""

    channel: str
    user_id: str
    username: str | None = None
    display_name: str | None = None

    @property
    def principal(self) -> str:
        """The ``channel:id`` form used by the admin and allow-list settings."""
        return f"{self.channel}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One user message, already translated from the platform's event, with the files (photos,
    voice notes, audio) the adapter downloaded for it."""

    key: ConversationKey
    sender: UserRef
    text: str
    platform_message_id: str | None = None
    event_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    turn_id: int | None = None
    """The durable turn answering it (set by the inbound pipeline)."""
    stored: bool = False
    """Already in the conversation: a turn resumed after a restart is answered, not asked
    again."""


class Role(enum.StrEnum):
    """Who wrote a stored message."""

    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message about to be stored."""

    role: Role
    text: str
    token_count: int
    author_id: int | None = None
    platform_message_id: str | None = None
    meta: dict[str, object] = field(default_factory=dict)
    images: tuple[PreparedImage, ...] = ()
    turn_id: int | None = None
    """The durable turn this message asks (user) or answers (assistant)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the store keeps it."""

    id: int
    conversation_id: int
    role: Role
    text: str
    token_count: int
    created_at: datetime
    platform_message_id: str | None = None
    image_count: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    """The active conversation of a key, with the choices the user made in it (mode, model,
    spoken replies, voice-to-voice talk) and the id of its newest message (None while it has
    none)."""

    id: int
    key: ConversationKey
    mode: str | None
    model: str | None
    created_at: datetime
    last_message_id: int | None = None
    voice: bool = False
    voice_talk: bool = False


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A message the bot posted on its own, as stored: which conversation or place it is
    in and the platform's id for it, so it can be edited later from any process."""

    id: int
    key: ConversationKey
    platform_message_id: str
