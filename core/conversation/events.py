"""Reply events the engine emits while answering; each channel decides how to show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.media.ports import GeneratedImage, VoiceNote


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of reply text as it streams in."""

    text: str


@dataclass(frozen=True, slots=True)
class Transcribed:
    """What was heard in the user's voice note or audio; shown before the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ImageReady:
    """A picture drawn for the user (``/image``, ``/edit`` or the image tool); ``caption`` is
    the prompt the image API actually used, when it said."""

    image: GeneratedImage
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class VoiceReady:
    """The reply spoken (``/voice on``): one OGG/Opus voice note. It comes after the
    ``ReplyFinished`` of the reply's text."""

    note: VoiceNote


@dataclass(frozen=True, slots=True)
class Notice:
    """A short note to show apart from the reply (a spoken reply that failed, an answer cut
    short by its budget); it may come after ``ReplyFinished``."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """The model asked for a tool call that is now running."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool call ended; ``ok`` is false when its result is an error fed back to the model."""

    call_id: str
    name: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Choice:
    """A button a channel may offer: its label and the command it sends."""

    label: str
    command: str


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A command's answer, with optional choices (shown as buttons where the channel can)."""

    text: str
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandAnswered:
    """A command ran; ``reply`` is its answer. Nothing else follows for that message."""

    reply: CommandReply


@dataclass(frozen=True, slots=True)
class Refused:
    """The sender may not use the bot; ``text`` says so politely (shown once per user, in
    a way only they see where the channel can). Nothing else follows."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """The final reply text; ``cancelled`` when the user stopped it with /cancel."""

    text: str
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    """The turn failed; ``message`` is short, friendly and safe to show. ``postponed``:
    not a failure of the message itself — the bot is restarting and answers it after."""

    message: str
    partial_text: str = ""
    postponed: bool = False


ReplyEvent = (
    TextDelta
    | Transcribed
    | ImageReady
    | VoiceReady
    | Notice
    | ToolStarted
    | ToolFinished
    | ReplyFinished
    | ReplyFailed
    | CommandAnswered
    | Refused
)


class ReplySink(Protocol):
    """Where a channel receives the events of one reply."""

    async def emit(self, event: ReplyEvent) -> None:
        """Show or buffer ``event``; called in order, never concurrently for one reply.

        Order: ``Transcribed`` first when the user spoke, then text, tool and picture
        events, then ``ReplyFinished`` or ``ReplyFailed``; ``VoiceReady`` and ``Notice`` may
        follow ``ReplyFinished``. ``CommandAnswered`` and ``Refused`` come alone."""
