"""Translating Telegram updates into the core's neutral keys and users, and deciding which
messages (texts, and files with their captions) in groups are meant for the bot."""

from __future__ import annotations

from telegram import Chat, Message, MessageEntity, User
from telegram.constants import ChatType

from bots.telegram.reply import ChatPlace
from core.conversation.messages import ConversationKey, UserRef

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
        message_id=message.message_id,
    )


def has_media(message: Message) -> bool:
    """Whether ``message`` carries a file the bot may take (photo, voice, audio, document,
    video note)."""
    return bool(
        message.photo or message.voice or message.audio or message.document or message.video_note
    )


def addressed_text(message: Message, bot: User) -> str | None:
    """The text (or caption) of ``message`` if it is for the bot, without the @mention;
    else None. A file without a caption has the text "".

    Private chats: every text message and file. Groups: when the bot is @mentioned or the
    message replies to one of the bot's own messages.
    """
    caption = message.text is None
    text = message.caption if caption else message.text
    if text is None:
        if not has_media(message):
            return None
        text = ""
    if message.chat.type == ChatType.CHANNEL:
        return None
    if message.chat.type == ChatType.PRIVATE:
        return text
    mention = f"@{bot.username}".lower() if bot.username else None
    mentioned = False
    if mention:
        entities = (
            message.parse_caption_entities([MessageEntity.MENTION])
            if caption
            else message.parse_entities([MessageEntity.MENTION])
        )
        for value in entities.values():
            if value.lower() == mention:
                mentioned = True
                text = text.replace(value, "", 1)
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
