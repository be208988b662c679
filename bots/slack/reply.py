"""Showing one reply in a Slack channel or thread.

While the model writes, the reply grows either through Slack's native streaming
(``chat.startStream``/``appendStream``/``stopStream``, in threads, where the workspace offers
it) or through ``chat.update`` calls, paced per channel; a "thinking" status or note shows
until text arrives. The finished reply is then rendered by our mrkdwn renderer into blocks,
split over as many messages as needed, with a plain-text fallback if Slack rejects them.

What is not text goes apart, in the same place: the transcript of the user's audio (before
the answer), drawn pictures and the spoken reply (uploaded files) and notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.pacing import FloodControl, ProgressFlusher
from bots.slack.events import SlackPlace
from bots.slack.render import (
    MESSAGE_TEXT_LIMIT,
    SECTION_TEXT_LIMIT,
    escape,
    fallback_text,
    literal,
    message_blocks,
    plain_chunks,
)
from bots.slack.uploads import upload_file, upload_picture
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
from core.errors import ChannelUnavailable
from core.media.ports import GeneratedImage, VoiceNote
from core.media.steps import speech_chunks

log = logging.getLogger(__name__)

Block = dict[str, Any]

FINAL_ATTEMPTS = 5
THINKING_AFTER_SECONDS = 0.5
THINKING = "_Thinking…_"
STOPPED_NOTE = "\n\n*(stopped)*"  # Markdown, rendered and split with the reply itself
# Slack's answers when a message was deleted or cannot be edited: carry on in new messages.
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# Slack's answers when it does not accept the blocks: send plain text instead.
_REJECTED = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long"})
# Slack's answers when native streaming is not offered to this app or workspace.
_NO_STREAMING = frozenset(
    {
        "unknown_method",
        "not_allowed_token_type",
        "missing_scope",
        "not_allowed",
        "feature_not_enabled",
    }
)
STREAM_TEXT_LIMIT = 11_000  # below the 12,000 characters one streamed message may hold
THINKING_STATUS = "is thinking…"
TRANSCRIPT_MARK = "🎙 "
VOICE_TITLE = "Spoken reply"
UPLOAD_FAILED = "I made the {what}, but Slack did not take the upload."


@dataclass
class NativeStreaming:
    """Whether replies in threads may use Slack's native streaming; switched off for the
    process when Slack says the app or workspace does not offer it."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Payload:
    """One Slack message's content: blocks (none for plain text) and the ``text`` field."""

    text: str
    blocks: tuple[Block, ...] = ()


@dataclass
class _Part:
    ts: str
    payload: Payload


@dataclass
class SlackReply:
    """A ``ReplySink`` for one reply in one Slack channel or thread."""

    client: AsyncWebClient
    place: SlackPlace
    flood: FloodControl
    streaming: NativeStreaming | None = None
    thinking_after: float = THINKING_AFTER_SECONDS
    parts: list[_Part] = field(default_factory=list)
    _text: str = ""
    _status: str = ""
    _progress: ProgressFlusher = field(init=False)
    _thinking: asyncio.Task[None] | None = None
    _plain: bool = False
    _native: bool = False
    _stream_ts: str | None = None
    _streamed: int = 0  # characters of the text already appended to the stream
    _status_line: bool = False  # the thread's assistant status line is set
    _pictures: int = 0
    _finished: bool = False

    def __post_init__(self) -> None:
        self._progress = self._new_progress()

    def _new_progress(self) -> ProgressFlusher:
        return ProgressFlusher(
            self.flood,
            self.place.channel,
            group=False,
            flush_once=self._flush_once,
            started=lambda: bool(self.parts) or self._stream_ts is not None,
        )

    async def start(self) -> None:
        """Show a "thinking" status (or note) if no text has arrived after a moment."""
        self._native = (
            self.streaming is not None
            and self.streaming.enabled
            and self.place.thread_ts is not None
        )
        self._thinking = asyncio.create_task(self._think())

    async def _think(self) -> None:
        await asyncio.sleep(self.thinking_after)
        if self._text or self._status:
            return
        if self._native and await self._set_status(THINKING_STATUS):
            return
        self._native = False  # no status line here: show a note and grow it by updates
        self._status = THINKING
        self._schedule_flush()

    async def _set_status(self, status: str) -> bool:
        """Set the thread's assistant status line; False if Slack does not offer it here."""
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.place.channel, thread_ts=str(self.place.thread_ts), status=status
            )
        except SlackApiError as exc:
            log.info("no status line in %s: %s", self.place.channel, _error(exc))
            return False
        self._status_line = bool(status)
        return True

    async def emit(self, event: ReplyEvent) -> None:
        """Show one reply event."""
        if isinstance(event, TextDelta):
            self._text += event.text
            self._status = ""
            self._schedule_flush()
        elif isinstance(event, ToolStarted):
            if self._native:
                await self._set_status(f"is using {event.name}…")
                return
            self._status = f"_using {event.name}…_"
            self._schedule_flush()
        elif isinstance(event, ToolFinished):
            self._status = ""
        elif isinstance(event, ReplyFinished):
            await self._finish(event.text + (STOPPED_NOTE if event.cancelled else ""))
        elif isinstance(event, ReplyFailed):
            await self._finish(event.partial_text, failure=event.message)
        elif isinstance(event, Transcribed):
            await self._aside(lambda note: self._show_transcript(event.text, note))
        elif isinstance(event, ImageReady):
            self._pictures += 1
            await self._aside(lambda note: self._show_picture(event.image, event.caption, note))
        elif isinstance(event, VoiceReady):
            await self._upload_voice(event.note)
        elif isinstance(event, Notice):
            await self._note(event.text)
        elif isinstance(event, CommandAnswered):
            await self.show(event.reply.text)
        elif isinstance(event, Refused):
            await self._refuse(event.text)

    async def _refuse(self, text: str) -> None:
        """A refusal: in a DM as a message, in a channel only for the person refused."""
        if self.place.direct or not self.place.user:
            await self._note(text)
            return
        await self.flood.acquire(self.place.channel, group=False)
        await self.client.chat_postEphemeral(
            channel=self.place.channel,
            user=self.place.user,
            text=literal(text),
            thread_ts=self.place.thread_ts,
        )

    async def post(self, markdown: str) -> str:
        """Show ``markdown`` as a new message (more if it is long); returns the first's ts,
        which ``edit`` can change later."""
        await self._deliver(_payloads(markdown))
        return self.parts[0].ts

    def adopt(self, ts: str) -> None:
        """Continue in an existing bot message (one the core posted earlier)."""
        self.parts = [_Part(ts, Payload(""))]

    async def send_file(self, file: OutgoingFile) -> str:
        """Upload ``file`` here; returns Slack's id for it."""
        uploaded = await upload_file(
            self.client,
            self.flood,
            self.place,
            data=file.data,
            filename=file.filename,
            title=file.filename,
            comment=literal(file.caption) if file.caption else None,
        )
        if uploaded is None:
            raise ChannelUnavailable(f"Slack did not take the upload of {file.filename}")
        return uploaded

    async def show(self, markdown: str) -> None:
        """Show a finished Markdown text at once (a refusal, a notice), paced like a reply."""
        await self._finish(markdown)

    async def close(self) -> None:
        """Stop background work (the thinking note, pending updates) without sending more,
        and end a native stream still open: a turn that failed or was cancelled before its
        final event must not leave a message Slack shows as still being written."""
        task = self._thinking
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._progress.close()
        await self._stop_stream()

    def _schedule_flush(self) -> None:
        self._progress.schedule()

    async def _aside(self, show: Callable[[list[_Part]], Awaitable[None]]) -> None:
        """Show something apart from the text (a transcript, a picture) so that the text
        follows it: while no text is shown yet, the thinking note stops and is handed to
        ``show`` (to reuse or remove), and starts again afterwards."""
        if self._text or self._stream_ts is not None or self._finished:
            await show([])
            return
        await self.close()
        self._status = ""
        note, self.parts = self.parts, []
        try:
            await show(note)
        finally:
            self._progress = self._new_progress()
            self._thinking = asyncio.create_task(self._think())

    async def _show_transcript(self, text: str, note: Sequence[_Part]) -> None:
        """The words heard, literally (``rich_text`` shows no markup and pings no one), in as
        many messages as needed; the thinking note becomes the first."""
        chunks = speech_chunks(text, SECTION_TEXT_LIMIT - len(TRANSCRIPT_MARK)) or [text]
        try:
            await self._post_apart([_transcript(chunk) for chunk in chunks], reuse=note)
        except SlackApiError as exc:
            if _error(exc) not in _REJECTED:
                raise
            log.warning("Slack rejected the transcript blocks (%s); sending text", _error(exc))
            plain = [Payload(literal(TRANSCRIPT_MARK + chunk)) for chunk in chunks]
            await self._post_apart(plain, reuse=note)

    async def _show_picture(
        self, image: GeneratedImage, caption: str | None, note: Sequence[_Part]
    ) -> None:
        """Upload a drawn picture, with the prompt the API used as its comment."""
        await self._delete(note)
        if not await upload_picture(self.client, self.flood, self.place, image, caption):
            await self._note(UPLOAD_FAILED.format(what="picture"))

    async def _upload_voice(self, note: VoiceNote) -> None:
        uploaded = await upload_file(
            self.client,
            self.flood,
            self.place,
            data=note.data,
            filename=note.filename,
            title=VOICE_TITLE,
        )
        if not uploaded:
            await self._note(UPLOAD_FAILED.format(what="spoken reply"))

    async def _note(self, text: str) -> None:
        """A short message apart from the reply (plain text: nothing Slack could reject)."""
        await self._post_apart([Payload(literal(text))])

    async def _post_apart(self, payloads: Sequence[Payload], reuse: Sequence[_Part] = ()) -> None:
        """Post messages that are not part of the reply's text (updating ``reuse`` first,
        deleting what is left of it). Slack's refusal to take the blocks is raised; other
        failures only logged, as the reply goes on without them."""
        channel = self.place.channel
        try:
            for index, payload in enumerate(payloads):
                await self.flood.acquire(channel, group=False)
                blocks = list(payload.blocks) if payload.blocks else None
                if index < len(reuse):
                    await self.client.chat_update(
                        channel=channel, ts=reuse[index].ts, text=payload.text, blocks=blocks or []
                    )
                else:
                    await self.client.chat_postMessage(
                        channel=channel,
                        thread_ts=self.place.thread_ts,
                        text=payload.text,
                        blocks=blocks,
                        unfurl_links=False,
                        unfurl_media=False,
                    )
        except SlackApiError as exc:
            if _error(exc) in _REJECTED:
                raise
            log.warning("posting in %s failed: %s", channel, _error(exc))
        await self._delete(reuse[len(payloads) :])

    async def _flush_once(self) -> bool:
        """Make one progress call; False when there is nothing more to do for now."""
        if self._native:
            return await self._stream_more()
        payloads = self._progress_payloads()
        index = next(
            (
                i
                for i, payload in enumerate(payloads)
                if i >= len(self.parts) or self.parts[i].payload != payload
            ),
            None,
        )
        if index is None:
            return False
        try:
            if index < len(self.parts):
                await self._update(self.parts[index], payloads[index])
            else:
                await self._post(payloads[index])
        except SlackApiError as exc:
            # A failed progress update is not fatal: the final message is delivered anyway,
            # as plain text if Slack did not take the blocks.
            log.info("streaming update in %s failed: %s", self.place.channel, _error(exc))
            self._plain = _error(exc) in _REJECTED
            return False
        except Exception:  # progress is best effort; the final delivery reports real trouble
            log.warning("streaming update in %s failed", self.place.channel, exc_info=True)
            return False
        return True

    async def _stream_more(self) -> bool:
        """Append the text not yet streamed; False when there is nothing more to do now."""
        pending = self._text[self._streamed :]
        if not pending or len(self._text) > STREAM_TEXT_LIMIT:
            return False  # past the stream's limit, the final messages carry the rest
        try:
            if self._stream_ts is None:
                response = await self.client.chat_startStream(
                    channel=self.place.channel,
                    thread_ts=str(self.place.thread_ts),
                    markdown_text=escape(pending),
                    recipient_user_id=self.place.user,
                    recipient_team_id=self.place.team,
                )
                self._stream_ts = str(response["ts"])
            else:
                await self.client.chat_appendStream(
                    channel=self.place.channel, ts=self._stream_ts, markdown_text=escape(pending)
                )
        except SlackApiError as exc:
            error = _error(exc)
            log.info("streaming in %s failed: %s", self.place.channel, error)
            if self._stream_ts is None and error in _NO_STREAMING:
                if self.streaming is not None:
                    self.streaming.enabled = False
                self._native = False
                return True  # carry on with updates
            return False
        except Exception:  # progress is best effort; the final delivery reports real trouble
            log.warning("streaming in %s failed", self.place.channel, exc_info=True)
            return False
        self._streamed += len(pending)
        return True

    async def _stop_stream(self) -> None:
        """End the native stream; its message then takes the final, rendered reply."""
        if self._stream_ts is None:
            return
        ts, self._stream_ts = self._stream_ts, None
        await self.flood.acquire(self.place.channel, group=False)
        try:
            await self.client.chat_stopStream(channel=self.place.channel, ts=ts)
        except Exception as exc:  # the retries gave up: the final update still follows
            log.warning("stopping the stream in %s failed: %s", self.place.channel, exc)
        self.parts.insert(0, _Part(ts, Payload("")))

    def _progress_payloads(self) -> list[Payload]:
        markdown = self._text
        if self._status:
            markdown = f"{markdown}\n\n{self._status}" if markdown.strip() else self._status
        return _payloads(markdown)

    async def _finish(self, text: str, *, failure: str | None = None) -> None:
        self._finished = True
        await self.close()  # which also ends a native stream: its message takes the reply
        markdown = text if text.strip() else ""
        if failure is not None:
            markdown = f"{markdown}\n\n⚠️ {failure}" if markdown else f"⚠️ {failure}"
        elif not markdown and self._pictures:
            await self._clear_thinking()  # the picture was the answer
            return
        elif not markdown:
            markdown = "_(no answer)_"
        if not self._plain:
            try:
                await self._deliver(_payloads(markdown))
                return
            except SlackApiError as exc:
                if _error(exc) not in _REJECTED:
                    raise
                log.warning("Slack rejected the blocks (%s); sending plain text", _error(exc))
        plain = plain_chunks(text, MESSAGE_TEXT_LIMIT) if text.strip() else []
        if failure is not None:
            plain.append(f"⚠️ {escape(failure)}")
        await self._deliver([Payload(chunk) for chunk in plain or ["(no answer)"]])

    async def _clear_thinking(self) -> None:
        """Take away what still says the bot is thinking: the note, the status line."""
        await self._delete(self.parts)
        self.parts.clear()
        if self._status_line:
            await self._set_status("")

    async def _deliver(self, payloads: Sequence[Payload]) -> None:
        """Make the channel show exactly ``payloads``: update what differs, post what is
        missing, delete what is left over. Waits out the pacing and 429s."""
        channel = self.place.channel
        for index, payload in enumerate(payloads):
            part = self.parts[index] if index < len(self.parts) else None
            if part is not None and part.payload == payload:
                continue
            for attempt in range(FINAL_ATTEMPTS):
                await self.flood.acquire(channel, group=False)
                try:
                    if part is not None:
                        await self._update(part, payload)
                    else:
                        await self._post(payload)
                    break
                except SlackApiError as exc:
                    error = _error(exc)
                    if part is not None and error in _GONE:
                        # The message being written was deleted: carry on in new messages,
                        # after removing the ones that followed it so the order stays right.
                        await self._delete(self.parts[index + 1 :])
                        del self.parts[index:]
                        part = None
                    elif error != "ratelimited" or attempt == FINAL_ATTEMPTS - 1:
                        raise
                    else:
                        self.flood.throttled()  # the client's own retries gave up on it
        await self._delete(self.parts[len(payloads) :])
        del self.parts[len(payloads) :]

    async def _post(self, payload: Payload) -> None:
        response = await self.client.chat_postMessage(
            channel=self.place.channel,
            thread_ts=self.place.thread_ts,
            text=payload.text,
            blocks=list(payload.blocks) if payload.blocks else None,
            unfurl_links=False,
            unfurl_media=False,
        )
        self.parts.append(_Part(str(response["ts"]), payload))

    async def _update(self, part: _Part, payload: Payload) -> None:
        await self.client.chat_update(
            channel=self.place.channel,
            ts=part.ts,
            text=payload.text,
            blocks=list(payload.blocks),  # an empty list clears blocks a plain text replaces
        )
        part.payload = payload

    async def _delete(self, parts: Sequence[_Part]) -> None:
        for part in parts:
            await self.flood.acquire(self.place.channel, group=False)
            with contextlib.suppress(SlackApiError):
                await self.client.chat_delete(channel=self.place.channel, ts=part.ts)


@dataclass
class SlashCommandReply:
    """A ``Reply`` for a slash command: its answer (with buttons) and any failure or note go
    only to the user who typed it, through ``respond`` (the command's ephemeral response);
    a picture it draws (``/image``, ``/edit``) goes to ``place`` for everyone to see."""

    client: AsyncWebClient
    place: SlackPlace
    flood: FloodControl
    respond: Callable[[CommandReply], Awaitable[None]]

    async def start(self) -> None:
        """The acknowledgement already told the user what is being done."""

    async def close(self) -> None:
        """Nothing is left to send."""

    async def emit(self, event: ReplyEvent) -> None:
        """Show one reply event."""
        if isinstance(event, CommandAnswered):
            await self.respond(event.reply)
        elif isinstance(event, Refused):
            await self.respond(CommandReply(event.text))
        elif isinstance(event, ImageReady):
            if not await upload_picture(
                self.client, self.flood, self.place, event.image, event.caption
            ):
                await self.respond(CommandReply(UPLOAD_FAILED.format(what="picture")))
        elif isinstance(event, ReplyFailed):
            await self.respond(CommandReply(f"⚠️ {event.message}"))
        elif isinstance(event, ReplyFinished) and event.cancelled:
            await self.respond(CommandReply("Stopped."))
        elif isinstance(event, Notice):
            await self.respond(CommandReply(event.text))


def _payloads(markdown: str) -> list[Payload]:
    messages = message_blocks(markdown)
    summary = fallback_text(markdown)
    return [
        Payload(summary if index == 0 else "(continued)", tuple(blocks))
        for index, blocks in enumerate(messages)
    ]


def _transcript(chunk: str) -> Payload:
    """A message showing (part of) a transcript in italics, as literal text."""
    section = [
        {"type": "text", "text": TRANSCRIPT_MARK},
        {"type": "text", "text": chunk, "style": {"italic": True}},
    ]
    block = {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": section}]}
    return Payload(literal(TRANSCRIPT_MARK + chunk), (block,))


def _error(exc: SlackApiError) -> str:
    error = exc.response.get("error") if exc.response is not None else None
    return str(error or "unknown_error")
