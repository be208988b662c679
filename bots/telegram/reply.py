"""Showing one reply in a Telegram chat: progressive edits within the flood limits, then the
final, well-formatted message(s), with a plain-text fallback if Telegram rejects the HTML;
the transcript of a voice note before the answer, drawn pictures as photos and spoken
replies as voice notes, all paced like the text."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from bots.pacing import FloodControl, FloodLimits, ProgressFlusher, backoff
from bots.telegram.render import (
    TELEGRAM_TEXT_LIMIT,
    escape,
    html_chunks,
    plain_chunks,
    split_html,
    truncate,
    visible_length,
)
from bots.telegram.typing import TypingIndicators
from core.conversation.channel import OutgoingFile
from core.conversation.events import (
    CommandAnswered,
    CommandReply,
    ImageReady,
    Notice,
    Refused,
    ReplyEvent,
    ReplyFailed,
    ReplyFinished,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Transcribed,
    VoiceReady,
)
from core.media.ports import GeneratedImage, VoiceNote
from core.settings import Settings

log = logging.getLogger(__name__)

FINAL_ATTEMPTS = 5
CALLBACK_DATA_LIMIT = 64  # bytes Telegram keeps for an inline button's callback data
STOPPED_NOTE = "\n\n*(stopped)*"  # Markdown, rendered and split with the reply itself
CAPTION_LIMIT = 1024  # UTF-16 units of a photo's caption
TRANSCRIPT_MESSAGES = 3  # a longer transcript is shortened: the answer matters more
TRANSCRIPT_MARK = "🎙 "
NOTICE_MARK = "\u2139\ufe0f "  # the "information" emoji
PHOTO_FAILED = "I drew the picture, but Telegram would not take it."
VOICE_FAILED = "I couldn't send the spoken reply here."


@dataclass(frozen=True)
class ChatPlace:
    """Where a reply goes: the chat, the forum topic, and the message it answers."""

    chat_id: int
    group: bool
    thread_id: int | None = None
    reply_to: int | None = None
    message_id: int | None = None
    """The user's message being answered (a voice note's transcript replies to it)."""


@dataclass
class _Part:
    message_id: int
    html: str


@dataclass
class TelegramReply:
    """A ``ReplySink`` for one reply in one chat."""

    bot: Bot
    place: ChatPlace
    flood: FloodControl
    typing: TypingIndicators | None = None
    action: str = ChatAction.TYPING
    parts: list[_Part] = field(default_factory=list)
    _text: str = ""
    _status: str = ""
    _progress: ProgressFlusher = field(init=False)
    first_after: float = 0.0
    """Seconds from the first text to the first message; a reply finished by then is sent
    as one message (0: the first text shows as soon as the limits allow)."""
    _typing_shown: bool = False
    _media_sent: bool = False
    _rendered: tuple[str, list[str]] = ("", [])
    _shown: tuple[str, str] | None = None  # the text and status progress last showed

    def __post_init__(self) -> None:
        self._progress = ProgressFlusher(
            self.flood,
            self.place.chat_id,
            group=self.place.group,
            flush_once=self._flush_once,
            started=lambda: bool(self.parts),
            pending=lambda: self._shown != (self._text, self._status),
            first_after=self.first_after,
        )

    async def start(self) -> None:
        """Show the typing indicator (or ``action``, e.g. uploading a photo) from half a
        second on, until something is shown."""
        if self.typing is not None:
            self.typing.waiting(self._typing_place, self.action)
            self._typing_shown = True

    @property
    def _typing_place(self) -> tuple[int, int | None]:
        return self.place.chat_id, self.place.thread_id

    def _stop_typing(self) -> None:
        if self._typing_shown and self.typing is not None:
            self._typing_shown = False
            self.typing.done(self._typing_place)

    async def emit(self, event: ReplyEvent) -> None:
        """Show one reply event."""
        if isinstance(event, TextDelta):
            self._text += event.text
            self._status = ""
            self._schedule_flush()
        elif isinstance(event, ToolStarted):
            self._status = f"<i>using {escape(event.name)}…</i>"
            self._schedule_flush()
        elif isinstance(event, ToolFinished):
            self._status = ""
        elif isinstance(event, Transcribed):
            await self._show_transcript(event.text)
        elif isinstance(event, ImageReady):
            await self._send_picture(event.image, event.caption)
        elif isinstance(event, ReplyFinished):
            await self._finish(event.text + (STOPPED_NOTE if event.cancelled else ""))
        elif isinstance(event, ReplyFailed):
            await self._finish(event.partial_text, failure=event.message)
        elif isinstance(event, VoiceReady):
            await self._send_voice(event.note)
        elif isinstance(event, Notice):
            await self._notify(event.text)
        elif isinstance(event, CommandAnswered):
            await self.show(escape(event.reply.text), keyboard(event.reply))
        elif isinstance(event, Refused):
            await self.show(escape(event.text))

    async def show(self, html: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Show a finished HTML text (a command's answer) at once, paced like any reply;
        if this reply already has a message (a menu being answered), it is edited."""
        await self.close()
        await self._deliver([html], ParseMode.HTML, markup)

    async def post(self, markdown: str) -> int:
        """Show ``markdown`` as a new message (more than one if it is long); returns the
        id of the first, which ``edit`` can change later."""
        await self._deliver(self._chunks(markdown) or ["<i>(empty)</i>"], ParseMode.HTML)
        return self.parts[0].message_id

    async def send_file(self, file: OutgoingFile) -> int:
        """Send ``file`` as a document; returns its message id."""
        caption = escape(truncate(file.caption, CAPTION_LIMIT)) if file.caption else None
        message = await self._paced(
            lambda: self.bot.send_document(
                self.place.chat_id,
                InputFile(file.data, filename=file.filename),
                caption=caption,
                parse_mode=ParseMode.HTML if caption else None,
                message_thread_id=self.place.thread_id,
            )
        )
        return message.message_id

    def adopt(self, message_id: int) -> None:
        """Continue in an existing bot message (e.g. the menu whose button was pressed)."""
        self.parts = [_Part(message_id, "")]

    async def close(self) -> None:
        """Stop background work (typing, pending edits) without sending anything more."""
        self._stop_typing()
        await self._progress.close()

    def _schedule_flush(self) -> None:
        self._progress.schedule()

    async def _flush_once(self) -> bool:
        """Make one progress call; False when there is nothing more to do for now."""
        chat = self.place.chat_id
        source = (self._text, self._status)
        # Rendered only with a slot in hand: rendering is the costly part of a flush.
        chunks = self._progress_chunks()
        index = self._first_difference(chunks)
        if index is None:
            self._shown = source
            return False
        try:
            if index < len(self.parts):
                await self._edit(self.parts[index], chunks[index], ParseMode.HTML)
            else:
                await self._send(chunks[index], ParseMode.HTML)
        except RetryAfter as exc:
            self._blocked(exc)  # shown again when the block ends
            return True
        except TelegramError as exc:
            # A failed progress edit is not fatal: the final message is delivered anyway.
            log.info("streaming edit in chat %s failed: %s", chat, exc)
            self._shown = source
            return False
        if self._first_difference(chunks) is None:
            self._shown = source  # one call shows one message: a long text takes several
        return True

    def _first_difference(self, chunks: Sequence[str]) -> int | None:
        """The first of ``chunks`` the chat does not show yet."""
        return next(
            (
                i
                for i, html in enumerate(chunks)
                if i >= len(self.parts) or self.parts[i].html != html
            ),
            None,
        )

    def _progress_chunks(self) -> list[str]:
        chunks = self._chunks(self._text)
        if not self._status:
            return chunks
        if (
            chunks
            and visible_length(chunks[-1]) + visible_length(self._status) + 2 <= TELEGRAM_TEXT_LIMIT
        ):
            return [*chunks[:-1], f"{chunks[-1]}\n\n{self._status}"]
        return [*chunks, self._status]

    def _chunks(self, text: str) -> list[str]:
        """``text`` as HTML messages; the last rendering is kept, since the final text is
        usually what the last progress call already showed."""
        if self._rendered[0] != text:
            self._rendered = (text, html_chunks(text) if text.strip() else [])
        return list(self._rendered[1])

    async def _finish(self, text: str, *, failure: str | None = None) -> None:
        await self.close()
        chunks = self._chunks(text)
        if failure is not None:
            chunks.append(f"⚠️ {escape(failure)}")
        elif not chunks and not self._media_sent:
            chunks = ["<i>(no answer)</i>"]
        try:
            await self._deliver(chunks, ParseMode.HTML)
        except BadRequest as exc:
            if "can't parse entities" not in str(exc).lower():
                raise
            log.warning("Telegram rejected the HTML (%s); sending plain text", exc)
            plain = plain_chunks(text) if text.strip() else []
            if failure is not None:
                plain.append(f"⚠️ {failure}")
            await self._deliver(plain or ([] if self._media_sent else ["(no answer)"]), None)

    async def _show_transcript(self, text: str) -> None:
        """What was heard, escaped and in italics, as its own message(s) replying to the
        voice note; it does not end the typing indicator, the answer is still coming."""
        room = TELEGRAM_TEXT_LIMIT - len(" …")
        pieces = split_html(f"{TRANSCRIPT_MARK}<i>{escape(text.strip())}</i>", room)
        if len(pieces) > TRANSCRIPT_MESSAGES:
            pieces = pieces[:TRANSCRIPT_MESSAGES]
            pieces[-1] = pieces[-1].removesuffix("</i>") + " …</i>"
        for index, html in enumerate(pieces):
            quoted = self.place.message_id if index == 0 else None
            try:
                await self._paced(
                    functools.partial(
                        self.bot.send_message,
                        self.place.chat_id,
                        html,
                        parse_mode=ParseMode.HTML,
                        message_thread_id=self.place.thread_id,
                        reply_parameters=_replying_to(quoted),
                    )
                )
            except TelegramError as exc:
                # The answer matters more than the transcript: carry on without it.
                log.warning("showing a transcript in chat %s failed: %s", self.place.chat_id, exc)
                return

    async def _send_picture(self, picture: GeneratedImage, caption: str | None) -> None:
        """A drawn picture as a photo, with the prompt the image API used as its caption;
        as a file if Telegram refuses it as a photo, as a note if it refuses both."""
        image = picture.image
        html = escape(truncate(caption.strip(), CAPTION_LIMIT)) if caption else None
        filename = "picture" + image.suffix
        reply = _replying_to(self.place.reply_to)
        sends = (self.bot.send_photo, self.bot.send_document)
        try:
            for send in sends:
                try:
                    await self._paced(
                        lambda send=send: send(  # type: ignore[misc]
                            self.place.chat_id,
                            InputFile(image.data, filename=filename),
                            caption=html,
                            parse_mode=ParseMode.HTML if html else None,
                            message_thread_id=self.place.thread_id,
                            reply_parameters=reply,
                        )
                    )
                    break
                except BadRequest as exc:
                    if send is sends[-1]:
                        raise
                    log.info("Telegram refused a picture as a photo (%s); sending a file", exc)
        except TelegramError as exc:
            log.warning("sending a picture to chat %s failed: %s", self.place.chat_id, exc)
            await self._notify(PHOTO_FAILED)
        self._media_sent = True
        self._stop_typing()

    async def _send_voice(self, note: VoiceNote) -> None:
        """The spoken reply as a voice note (OGG/Opus) with its duration."""
        try:
            await self._paced(
                lambda: self.bot.send_voice(
                    self.place.chat_id,
                    InputFile(note.data, filename=note.filename),
                    duration=max(1, round(note.seconds)),
                    message_thread_id=self.place.thread_id,
                    reply_parameters=_replying_to(self.place.reply_to),
                )
            )
        except TelegramError as exc:
            # e.g. the user does not accept voice messages: the text answer is there.
            log.warning("sending a voice note to chat %s failed: %s", self.place.chat_id, exc)
            await self._notify(VOICE_FAILED)
        self._media_sent = True

    async def _notify(self, text: str) -> None:
        """A short note apart from the reply."""
        try:
            await self._paced(
                lambda: self.bot.send_message(
                    self.place.chat_id,
                    NOTICE_MARK + escape(text),
                    parse_mode=ParseMode.HTML,
                    message_thread_id=self.place.thread_id,
                    reply_parameters=_replying_to(self.place.reply_to),
                )
            )
        except TelegramError as exc:
            log.warning("sending a note to chat %s failed: %s", self.place.chat_id, exc)

    async def _paced(self, call: Callable[[], Awaitable[Message]]) -> Message:
        """Make one send within the flood limits, waiting out 429s and retrying transient
        failures like the final text."""
        for attempt in range(FINAL_ATTEMPTS):
            try:
                async with self.flood.call(self.place.chat_id, group=self.place.group):
                    return await call()
            except RetryAfter as exc:
                self._blocked(exc)
                if attempt == FINAL_ATTEMPTS - 1:
                    raise
            except BadRequest:
                raise
            except NetworkError as exc:
                await self._wait_transient(exc, attempt)
        raise AssertionError("unreachable")

    async def _wait_transient(self, exc: NetworkError, attempt: int) -> None:
        """After a transient failure (a 5xx, a dropped connection, a timeout): wait before
        the next attempt, or raise it when the attempts are used up. A timed-out send may
        have arrived after all: sending it again risks a duplicate, never a lost reply."""
        if attempt == FINAL_ATTEMPTS - 1:
            raise exc
        delay = backoff(attempt)
        log.warning(
            "Telegram call in chat %s failed (%s); retry %d in %.2fs",
            self.place.chat_id,
            exc,
            attempt + 1,
            delay,
        )
        await asyncio.sleep(delay)

    async def _deliver(
        self,
        chunks: Sequence[str],
        parse_mode: str | None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Make the chat show exactly ``chunks``: edit what differs, send what is missing,
        delete what is left over. Waits out flood limits and 429s, retries transient
        failures; raises when they persist, so the turn stays open for recovery."""
        for index, html in enumerate(chunks):
            part = self.parts[index] if index < len(self.parts) else None
            last = markup if index == len(chunks) - 1 else None
            if part is not None and part.html == html and last is None:
                continue
            for attempt in range(FINAL_ATTEMPTS):
                try:
                    async with self.flood.call(self.place.chat_id, group=self.place.group):
                        if part is not None:
                            await self._edit(part, html, parse_mode, last)
                        else:
                            await self._send(html, parse_mode, last)
                    break
                except BadRequest as exc:
                    if part is None or "message to edit not found" not in str(exc).lower():
                        raise
                    # The user deleted the message being written: carry on in new messages,
                    # after removing the ones that followed it so the order stays right.
                    for later in self.parts[index + 1 :]:
                        with contextlib.suppress(TelegramError):
                            await self.bot.delete_message(self.place.chat_id, later.message_id)
                    del self.parts[index:]
                    part = None
                except RetryAfter as exc:
                    self._blocked(exc)
                    if attempt == FINAL_ATTEMPTS - 1:
                        raise
                except NetworkError as exc:  # BadRequest, one of them, is handled above
                    await self._wait_transient(exc, attempt)
        for part in self.parts[len(chunks) :]:
            async with self.flood.call(self.place.chat_id, group=self.place.group):
                # What is left over is only tidied: the reply itself is shown already.
                with contextlib.suppress(TelegramError):
                    await self.bot.delete_message(self.place.chat_id, part.message_id)
        del self.parts[len(chunks) :]

    def _blocked(self, exc: RetryAfter) -> None:
        """Telegram answered 429: the chat's bucket waits ``retry_after`` out."""
        self.flood.blocked(self.place.chat_id, _seconds(exc.retry_after), group=self.place.group)

    async def _send(
        self, html: str, parse_mode: str | None, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        reply = (
            ReplyParameters(self.place.reply_to, allow_sending_without_reply=True)
            if self.place.reply_to and not self.parts
            else None
        )
        message: Message = await self.bot.send_message(
            self.place.chat_id,
            html,
            parse_mode=parse_mode,
            message_thread_id=self.place.thread_id,
            reply_parameters=reply,
            reply_markup=markup,
        )
        self.parts.append(_Part(message.message_id, html))
        self._stop_typing()

    async def _edit(
        self,
        part: _Part,
        html: str,
        parse_mode: str | None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        try:
            await self.bot.edit_message_text(
                html,
                chat_id=self.place.chat_id,
                message_id=part.message_id,
                parse_mode=parse_mode,
                reply_markup=markup,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
        part.html = html


def telegram_limits(settings: Settings) -> FloodLimits:
    """The flood limits the settings give (Telegram's public ones unless raised)."""
    return FloodLimits(
        chat_per_second=settings.telegram_chat_per_second,
        chat_burst=settings.telegram_chat_burst,
        group_per_minute=settings.telegram_group_per_minute,
        group_burst=settings.telegram_group_burst,
        overall_per_second=settings.telegram_overall_per_second,
    )


def keyboard(answer: CommandReply) -> InlineKeyboardMarkup | None:
    """A command's choices as inline buttons, two a row (those whose command fits in a
    button's callback data)."""
    buttons = [
        InlineKeyboardButton(choice.label, callback_data=choice.command)
        for choice in answer.choices
        if len(choice.command.encode()) <= CALLBACK_DATA_LIMIT
    ]
    if not buttons:
        return None
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    return InlineKeyboardMarkup(rows)


def _replying_to(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)


def _seconds(value: int | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
