"""Slack events translated into core messages: which ones the bot answers, the conversation
each belongs to, and where the reply goes."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from bots.slack.files import SlackFile, files_of
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef

CHANNEL = "slack"
# Plain messages, messages with files, and thread replies also sent to the channel; the
# other subtypes (edits, deletions, joins, bot messages…) are not for the bot to answer.
ANSWERED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


@dataclass(frozen=True, slots=True)
class SlackPlace:
    """Where a reply goes: the channel and, unless it is a DM's top level, the thread."""

    team: str
    channel: str
    user: str
    thread_ts: str | None = None

    @property
    def direct(self) -> bool:
        """Whether this is a direct message channel."""
        return self.channel.startswith("D")


@dataclass(frozen=True, slots=True)
class SlackTurn:
    """A user message the bot may answer; a ``follow_up`` (a thread reply without a
    mention) is answered only if the thread is one of the bot's conversations.

    ``delivery_id`` recognises a delivery seen before: the envelope's event id, or for a
    mention the message itself (Slack sends it as an ``app_mention`` and, with files, also
    as a ``message``). ``files`` are still to be fetched into the message's attachments.
    """

    message: IncomingMessage
    place: SlackPlace
    follow_up: bool = False
    delivery_id: str | None = None
    files: tuple[SlackFile, ...] = ()


def conversation_key(team: str, channel: str, thread_ts: str | None = None) -> ConversationKey:
    """The conversation of a DM (the whole DM) or a channel thread (``thread_ts``)."""
    return ConversationKey(CHANNEL, place=channel, scope=team, thread=thread_ts or "")


def command_key(team: str, channel: str) -> ConversationKey:
    """The conversation a slash command acts on: the DM, or the channel as a whole (whose
    mode and model new threads start with)."""
    return conversation_key(team, channel)


def user_ref(user_id: str, username: str | None = None, name: str | None = None) -> UserRef:
    """The core's view of a Slack user."""
    return UserRef(CHANNEL, user_id, username=username, display_name=name)


def translate(
    event: dict[str, Any], *, team: str, bot_user_id: str, event_id: str | None = None
) -> SlackTurn | None:
    """The turn an ``app_mention`` or ``message`` event asks for, or None to ignore it;
    ``event_id`` (the envelope's) is kept to recognise a redelivered event.

    Files count like text: in a DM, with a mention, or in a thread the bot takes part in.
    """
    user = event.get("user")
    channel = event.get("channel")
    ts = event.get("ts")
    if (
        event.get("subtype") not in ANSWERED_SUBTYPES
        or event.get("bot_id")
        or not isinstance(user, str)
        or user == bot_user_id
        or not isinstance(channel, str)
        or not isinstance(ts, str)
    ):
        return None
    raw = event.get("text")
    raw = raw if isinstance(raw, str) else ""
    thread = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    mention = f"<@{bot_user_id}>"
    sender = user_ref(user)
    text = plain_text(raw.replace(mention, " ")).strip()
    files = files_of(event)
    kind = event.get("type")
    mentioned = kind == "app_mention" or (
        # Slack does not always send the app_mention of a message that shares files.
        kind == "message" and event.get("channel_type") != "im" and bool(files) and mention in raw
    )
    if mentioned:
        root = thread or ts
        key = conversation_key(team, channel, root)
        place = SlackPlace(team, channel, user, root)
        message = _message(key, sender, text, ts)
        return SlackTurn(message, place, False, f"message:{channel}:{ts}", files)
    if kind != "message":
        return None
    if event.get("channel_type") == "im":
        key = conversation_key(team, channel)
        place = SlackPlace(team, channel, user, thread)
        return SlackTurn(_message(key, sender, text, ts), place, False, event_id, files)
    if thread and mention not in raw:  # a mention arrives again as an app_mention event
        key = conversation_key(team, channel, thread)
        place = SlackPlace(team, channel, user, thread)
        return SlackTurn(_message(key, sender, text, ts), place, True, event_id, files)
    return None


def plain_text(text: str) -> str:
    """Slack message markup as readable text for the model: links and mentions unwrapped,
    ``&amp;``-style escapes undone."""

    def unwrap(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith(("@", "#")):
            return f"{target[0]}{label or target[1:]}"
        if target.startswith("!"):
            return f"@{label or target[1:].split('^')[0]}"
        return f"{label} ({target})" if label and label != target else target

    return html.unescape(_LINK.sub(unwrap, text))


def _message(key: ConversationKey, sender: UserRef, text: str, ts: str) -> IncomingMessage:
    return IncomingMessage(key, sender, text, platform_message_id=ts)
