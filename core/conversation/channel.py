"""The channel ports: what the core can do in a chat platform on its own (the outbound
``Channel``: open a reply in a conversation it knows, post, edit what it posted, send a
file), and how each platform names its users (``UserNames``). Telegram, Slack and the
console implement both; ``Outbox`` is the core's way to use them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from core.conversation.events import ReplyEvent
from core.conversation.messages import ConversationKey, PostedMessage
from core.conversation.store import ConversationStore
from core.errors import ChannelUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    """A file the bot sends: a batch's results, a report."""

    filename: str
    data: bytes
    mime_type: str = "application/octet-stream"
    caption: str | None = None


class Reply(Protocol):
    """One reply being shown in a conversation: a ``ReplySink`` with a start (the typing
    indicator or "thinking" note) and an end (pending output flushed, streams closed)."""

    async def start(self) -> None:
        """Show that an answer is being prepared."""

    async def emit(self, event: ReplyEvent) -> None:
        """Show or buffer ``event`` (the ``ReplySink`` contract)."""

    async def close(self) -> None:
        """Finish: nothing more is emitted after this."""


class UserNames(Protocol):
    """How one platform names its users: the ``<who>`` forms typed in its chats, and the
    ids its ``<channel>:<id>`` principals may carry."""

    channel: str

    def user_id(self, word: str) -> str | None:
        """The user id ``word`` names in this platform's own syntax (a Telegram numeric id,
        a Slack ``<@U…>`` mention), or None if it is not such a reference."""

    def valid_id(self, user_id: str) -> bool:
        """Whether ``user_id`` can be one of this platform's user ids."""


class Channel(Protocol):
    """The outbound port: a platform the core can reach without an incoming message."""

    name: str

    def reply(self, key: ConversationKey) -> Reply:
        """A reply in the conversation ``key`` (a chat, a DM, a thread)."""

    async def post(self, key: ConversationKey, markdown: str) -> str:
        """Post ``markdown`` in ``key``; returns the platform's id for the message."""

    async def edit(self, key: ConversationKey, platform_message_id: str, markdown: str) -> None:
        """Replace the text of a message the bot posted in ``key``."""

    async def send_file(self, key: ConversationKey, file: OutgoingFile) -> str:
        """Send ``file`` in ``key``; returns the platform's id for the message."""

    def direct(self, user_id: str) -> ConversationKey:
        """The private conversation between the bot and the user ``user_id`` (for notices)."""


class Outbox:
    """The core's way out: posts, edits and files through the channels running in this
    process, keeping what it posted so that any process can edit it later."""

    def __init__(self, store: ConversationStore, admins: Iterable[str] = ()) -> None:
        self._store = store
        self._admins = tuple(sorted(admins))
        self._channels: dict[str, Channel] = {}

    def attach(self, channel: Channel) -> None:
        """Make ``channel`` reachable (when it starts)."""
        self._channels[channel.name] = channel

    def detach(self, channel: Channel) -> None:
        """Stop using ``channel`` (when it stops)."""
        if self._channels.get(channel.name) is channel:
            del self._channels[channel.name]

    def reaches(self, key: ConversationKey) -> bool:
        """Whether ``key``'s channel runs in this process."""
        return key.channel in self._channels

    def reply(self, key: ConversationKey) -> Reply:
        """A reply in ``key`` with no incoming message (a late answer, a job's result)."""
        return self._channel(key).reply(key)

    async def post(self, key: ConversationKey, markdown: str) -> PostedMessage:
        """Post ``markdown`` in ``key`` and keep it, so it can be edited later."""
        platform_id = await self._channel(key).post(key, markdown)
        return await self._store.record_posted(key, platform_id)

    async def send_file(self, key: ConversationKey, file: OutgoingFile) -> PostedMessage:
        """Send ``file`` in ``key`` and keep the message."""
        platform_id = await self._channel(key).send_file(key, file)
        return await self._store.record_posted(key, platform_id)

    async def edit(self, posted_id: int, markdown: str) -> None:
        """Replace the text of a message posted with ``post`` (by any process)."""
        posted = await self._store.posted(posted_id)
        if posted is None:
            raise ChannelUnavailable(f"no posted message #{posted_id}")
        await self._channel(posted.key).edit(posted.key, posted.platform_message_id, markdown)

    async def tell_admins(self, markdown: str) -> int:
        """Post ``markdown`` privately to every admin (``SWITCHBOARD_ADMINS``) whose
        channel runs in this process; returns how many were told. A post that fails is
        logged and the others still go out."""
        told = 0
        for principal in self._admins:
            channel_name, _, user_id = principal.partition(":")
            channel = self._channels.get(channel_name)
            if channel is None:
                continue
            try:
                await channel.post(channel.direct(user_id), markdown)
            except Exception as exc:
                log.warning("could not tell admin %s: %s", principal, exc)
                continue
            told += 1
        return told

    def _channel(self, key: ConversationKey) -> Channel:
        channel = self._channels.get(key.channel)
        if channel is None:
            raise ChannelUnavailable(f"the {key.channel} channel is not running in this process")
        return channel
