"""Translating Telegram updates into the core's neutral messages, and deciding which
messages in groups are meant for the bot."""

from __future__ import annotations

from telegram import Chat, Message, MessageEntity, User
from telegram.constants import ChatType

from bots.telegram.reply import ChatPlace
from core.messages import ConversationKey, IncomingMessage, UserRef

CHANNEL = "telegram"


def conversation_key(message: Message) -> ConversationKey:
    """Private chats and groups are one conversation each; forum topics one per topic."""
    thread = str(message.message_thread_id) if message.is_topic_message else ""
    return ConversationKey(CHANNEL, place=str(message.chat.id), thread=thread)


def user_ref(user: User) -> UserRef:
    """The core's view of a Telegram user."""
    return UserRef(CHANNEL, str(user.id), username=user.username, display_name=user.full_name)


def is_group(chat: Chat) -> bool:
    """Whether the chat is a group or supergroup (slower flood limits, trigger rules)."""
    return chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)


def place_of(message: Message) -> ChatPlace:
    """Where a reply to ``message`` goes: same chat and topic; in groups, as a reply."""
    group = is_group(message.chat)
    return ChatPlace(
        chat_id=message.chat.id,
        group=group,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        reply_to=message.message_id if group else None,
    )


def addressed_text(message: Message, bot: User) -> str | None:
    """The text of ``message`` if it is for the bot, without the @mention; else None.

    Private chats: every text message. Groups: when the bot is @mentioned or the message
    replies to one of the bot's own messages.
    """
    text = message.text
    if text is None or message.chat.type == ChatType.CHANNEL:
        return None
    if message.chat.type == ChatType.PRIVATE:
        return text
    mention = f"@{bot.username}".lower() if bot.username else None
    mentioned = False
    if mention:
        for entity, value in message.parse_entities([MessageEntity.MENTION]).items():
            if value.lower() == mention:
                mentioned = True
                text = text.replace(message.parse_entity(entity), "", 1)
    replied = message.reply_to_message
    topic_opening = message.is_topic_message and (
        replied is not None and replied.message_id == message.message_thread_id
    )
    if topic_opening:
        replied = None  # in forum topics every message "replies" to the topic's first message
    replying_to_bot = (
        replied is not None and replied.from_user is not None and replied.from_user.id == bot.id
    )
    if not (mentioned or replying_to_bot):
        return None
    return text.strip()


def incoming(message: Message, bot: User) -> IncomingMessage | None:
    """The core message for a Telegram message addressed to the bot, or None."""
    text = addressed_text(message, bot)
    if text is None or message.from_user is None:
        return None
    return IncomingMessage(
        conversation_key(message),
        user_ref(message.from_user),
        text,
        platform_message_id=str(message.message_id),
    )
