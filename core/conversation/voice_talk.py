"""``/voice talk``: a voice note answered voice-to-voice by a realtime model.

The conversation's recent text goes to the session as context; what the user said and what
the model answered are shown (``Transcribed``, then the answer as reply text) and kept as a
user and an assistant message, so the next text turn remembers them. The spoken answer is
the turn's voice reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.conversation.context import fit_history
from core.conversation.events import ReplySink, TextDelta, Transcribed
from core.conversation.messages import (
    Conversation,
    IncomingMessage,
    NewMessage,
    Role,
    StoredMessage,
)
from core.conversation.store import ConversationStore, UsageRecord
from core.conversation.tokens import TokenCounter
from core.media.ports import VoiceNote
from core.media.steps import MediaSteps
from core.models.realtime import HistoryLine
from core.money.metering import Charge

HISTORY_TOKENS = 4_000
"""Context given to the realtime model: the newest messages within this many tokens."""
HISTORY_PAGE = 64
UNHEARD = "(a voice note)"
"""Kept as the user's words when the session heard none."""


@dataclass(frozen=True)
class TalkTurn:
    """A talk turn done: the user's words as stored, the answer and its voice note."""

    stored: StoredMessage
    answer: str
    note: VoiceNote


def is_talk(message: IncomingMessage, conversation: Conversation, media: MediaSteps) -> bool:
    """Whether ``message`` is answered voice-to-voice: one voice note or audio file and
    nothing else, in a conversation set to ``/voice talk``, on a bot that can talk."""
    return (
        conversation.voice_talk
        and media.can_talk
        and not message.text.strip()
        and len(message.attachments) == 1
        and message.attachments[0].is_audio
        and not message.attachments[0].is_image
    )


async def talk_by_voice(
    message: IncomingMessage,
    *,
    media: MediaSteps,
    store: ConversationStore,
    conversation: Conversation,
    instructions: str,
    author_id: int,
    counter: TokenCounter,
    charge: Charge,
    sink: ReplySink,
    usage: list[UsageRecord],
) -> TalkTurn:
    """Answer the voice note of ``message`` by voice; usage rows go to ``usage`` as soon
    as the session reports them (the caller stores them with the answer)."""
    newest_first = await store.recent_messages(conversation.id, limit=HISTORY_PAGE)
    turns, _ = fit_history(newest_first, HISTORY_TOKENS)
    history = [HistoryLine(turn.role, turn.text) for turn in turns]
    talked = await media.talk(
        message.attachments[0],
        instructions=instructions,
        history=history,
        charge=charge,
        usage=usage,
    )
    heard = talked.heard or UNHEARD
    await sink.emit(Transcribed(heard))
    await sink.emit(TextDelta(talked.answer))
    stored = await store.add_message(
        conversation.id,
        NewMessage(
            Role.USER,
            heard,
            counter.count(heard),
            author_id=author_id,
            platform_message_id=message.platform_message_id,
            turn_id=message.turn_id,
        ),
    )
    return TalkTurn(stored, talked.answer, talked.note)
