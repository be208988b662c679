"""The realtime voice port on the ``openai`` SDK's Realtime WebSocket client.

Each call opens one session (``client.realtime.connect``), configures it, sends its input,
reads events until the response is done, and closes it: on success, on errors, on timeout
and on cancellation alike. The WebSocket URL comes from the client's ``base_url`` (or
``websocket_base_url``), so a client pointed at another server talks realtime to it too.

The SDK's realtime resources and types and the ``websockets`` client are imported by the
first session, not at start-up: most processes never open one (issue 17).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import openai
from openai import AsyncOpenAI

from core.errors import (
    QuotaExhausted,
    RateLimited,
    SessionCut,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from core.models.openai_gateway import translate
from core.models.realtime import (
    HistoryLine,
    RealtimeUsage,
    SpokenAnswer,
    SpokenText,
)

if TYPE_CHECKING:
    from openai.resources.realtime.realtime import AsyncRealtimeConnection
    from openai.types.realtime import RealtimeSessionCreateRequestParam
    from openai.types.realtime.realtime_audio_config_input_param import (
        RealtimeAudioConfigInputParam,
    )
    from openai.types.realtime.realtime_audio_formats_param import AudioPCM
    from openai.types.realtime.realtime_response_usage import RealtimeResponseUsage
    from openai.types.websocket_connection_options import WebSocketConnectionOptions
    from websockets.exceptions import InvalidStatus

_PCM_FORMAT: AudioPCM = {"type": "audio/pcm", "rate": 24_000}  # core.models.realtime.PCM_RATE
# Closing waits at most 2 s for the server's answer, so a stopped reply never hangs on a
# silent server. The SDK passes these options on to websockets.connect, whose close_timeout
# its TypedDict does not list.
_CONNECTION = cast("WebSocketConnectionOptions", {"close_timeout": 2.0})
_AUDIO_DELTA = "response.output_audio.delta"
_TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
_APPEND_BYTES = 256 * 1024
"""Audio sent per ``input_audio_buffer.append`` (the API takes events up to 15 MiB)."""


@dataclass
class _Heard:
    """What one session's events said, gathered until its response is done."""

    audio: bytearray = field(default_factory=bytearray)
    transcript: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    heard: str | None = None
    usage: RealtimeUsage | None = None
    response_id: str | None = None
    done: bool = False


class OpenAIRealtime:
    """``RealtimeVoice`` over ``client.realtime``; a session lasts at most ``timeout_seconds``."""

    def __init__(self, client: AsyncOpenAI, *, timeout_seconds: float = 60.0) -> None:
        self._client = client
        self._timeout = timeout_seconds

    async def speak(
        self,
        text: str,
        *,
        model: str,
        voice: str,
        instructions: str,
        max_output_tokens: int,
        speed: float = 1.0,
    ) -> SpokenText:
        """Read ``text`` aloud in one session; the audio is PCM16 at 24 kHz."""
        session = _session(instructions, voice, max_output_tokens, None, speed)

        async def exchange(connection: AsyncRealtimeConnection) -> None:
            await connection.conversation.item.create(item=_message("user", text))
            await connection.response.create()

        heard = await self._run(model, session, exchange, wait_for_transcript=False)
        assert heard.usage is not None
        return SpokenText(
            bytes(heard.audio), "".join(heard.transcript), heard.usage, heard.response_id
        )

    async def answer(
        self,
        audio: bytes,
        *,
        model: str,
        voice: str,
        instructions: str,
        history: Sequence[HistoryLine],
        transcription_model: str,
        max_output_tokens: int,
    ) -> SpokenAnswer:
        """Give ``history`` as context, send ``audio`` (PCM16, 24 kHz) as the user's turn
        and wait for both the spoken answer and the transcript of what was heard."""
        session = _session(instructions, voice, max_output_tokens, transcription_model)

        async def exchange(connection: AsyncRealtimeConnection) -> None:
            for line in history:
                await connection.conversation.item.create(item=_message(line.role, line.text))
            for start in range(0, len(audio), _APPEND_BYTES):
                chunk = audio[start : start + _APPEND_BYTES]
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(chunk).decode("ascii")
                )
            await connection.input_audio_buffer.commit()
            await connection.response.create()

        heard = await self._run(model, session, exchange, wait_for_transcript=True)
        assert heard.usage is not None
        answer = "".join(heard.transcript) or "".join(heard.text)
        return SpokenAnswer(
            heard.heard or "", answer, bytes(heard.audio), heard.usage, heard.response_id
        )

    async def _run(
        self,
        model: str,
        session: RealtimeSessionCreateRequestParam,
        exchange: Callable[[AsyncRealtimeConnection], Awaitable[None]],
        *,
        wait_for_transcript: bool,
    ) -> _Heard:
        """One session from connect to close, its failures translated."""
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        heard = _Heard()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.realtime.connect(
                    model=model, websocket_connection_options=_CONNECTION
                ) as connection:
                    await connection.session.update(session=session)
                    await exchange(connection)
                    await _read(connection, heard, wait_for_transcript=wait_for_transcript)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"the realtime session gave no complete answer within {self._timeout:g} s"
            ) from None
        except ConnectionClosed as exc:
            raise SessionCut(f"the realtime session closed mid-answer ({exc})") from None
        except InvalidStatus as exc:
            raise _handshake_error(exc) from None
        except (InvalidHandshake, OSError) as exc:
            raise UpstreamUnavailable(
                f"cannot reach the realtime API: {type(exc).__name__}"
            ) from None
        except openai.OpenAIError as exc:
            raise translate(exc) from None
        return heard


async def _read(
    connection: AsyncRealtimeConnection, heard: _Heard, *, wait_for_transcript: bool
) -> None:
    """Gather events until the response is done (and, when asked, the input is transcribed)."""
    from openai.types.realtime import (
        ConversationItemInputAudioTranscriptionCompletedEvent,
        ConversationItemInputAudioTranscriptionFailedEvent,
        RealtimeErrorEvent,
        ResponseDoneEvent,
        ResponseTextDeltaEvent,
    )

    while not heard.done or (wait_for_transcript and heard.heard is None):
        raw = await connection.recv_bytes()
        # recv does not wait while frames are buffered: yield, so that one busy session
        # never holds the event loop for a whole answer.
        await asyncio.sleep(0)
        fields = json.loads(raw)
        kind = fields.get("type")
        # The deltas are most of a session's events: read without building the SDK's model
        # of each, which costs several times the decoding itself.
        if kind == _AUDIO_DELTA:
            heard.audio += _decoded(str(fields.get("delta", "")))
            continue
        if kind == _TRANSCRIPT_DELTA:
            heard.transcript.append(str(fields.get("delta", "")))
            continue
        event = connection.parse_event(raw)
        if isinstance(event, RealtimeErrorEvent):
            raise _event_error(event.error.type, event.error.code, event.error.message)
        if isinstance(event, ResponseTextDeltaEvent):
            heard.text.append(event.delta)
        elif isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            heard.heard = event.transcript.strip()
        elif isinstance(event, ConversationItemInputAudioTranscriptionFailedEvent):
            heard.heard = ""
        elif isinstance(event, ResponseDoneEvent):
            response = event.response
            heard.response_id = response.id
            if response.status == "failed":
                details = response.status_details
                error = details.error if details is not None else None
                raise _event_error(
                    error.type if error else "server_error",
                    error.code if error else None,
                    "the realtime response failed",
                )
            if response.status == "cancelled":
                raise SessionCut("the realtime response was cancelled before it was complete")
            heard.usage = _usage(response.usage)
            heard.done = True


def _session(
    instructions: str,
    voice: str,
    max_output_tokens: int,
    transcription_model: str | None,
    speed: float = 1.0,
) -> RealtimeSessionCreateRequestParam:
    audio_input: RealtimeAudioConfigInputParam = {"format": _PCM_FORMAT, "turn_detection": None}
    if transcription_model is not None:
        # The input's transcript is the only way to show the user what the model heard.
        audio_input["transcription"] = {"model": transcription_model}
    return {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "max_output_tokens": max_output_tokens,
        "audio": {
            "input": audio_input,
            "output": {"format": _PCM_FORMAT, "voice": voice, "speed": speed},
        },
    }


def _message(role: str, text: str) -> Any:
    kind = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _decoded(delta: str) -> bytes:
    try:
        return base64.b64decode(delta, validate=True)
    except binascii.Error:
        raise UpstreamUnavailable("the realtime API sent audio that is not base64") from None


def _usage(reported: RealtimeResponseUsage | None) -> RealtimeUsage:
    """The API's usage, by modality. Tokens it counts but does not break down are taken as
    audio, the dearer kind, so the cost is never under what the API bills."""
    if reported is None:
        return RealtimeUsage()
    given = reported.input_token_details
    cached = given.cached_tokens_details if given is not None else None
    text_input = (given.text_tokens if given else None) or 0
    audio_input = max((reported.input_tokens or 0) - text_input, 0)
    cached_text = (cached.text_tokens if cached else None) or 0
    cached_total = (given.cached_tokens if given else None) or 0
    out = reported.output_token_details
    text_output = (out.text_tokens if out else None) or 0
    return RealtimeUsage(
        text_input=text_input,
        cached_text_input=cached_text,
        audio_input=audio_input,
        cached_audio_input=max(cached_total - cached_text, 0),
        text_output=text_output,
        audio_output=max((reported.output_tokens or 0) - text_output, 0),
    )


def _event_error(kind: str | None, code: str | None, message: str) -> UpstreamError:
    """An ``error`` event (or a failed response) as Switchboard's error tree."""
    if code == "insufficient_quota":
        return QuotaExhausted(message)
    if code == "rate_limit_exceeded" or kind == "rate_limit_error":
        return RateLimited(message)
    if kind == "server_error":
        return UpstreamUnavailable(message)
    return UpstreamRejected(message)


def _handshake_error(exc: InvalidStatus) -> UpstreamError:
    """An HTTP answer refusing the WebSocket upgrade, as the REST API's status would be."""
    status = exc.response.status_code
    message = f"the realtime API refused the session with HTTP {status}"
    if status == 429:
        return RateLimited(message)
    if status >= 500 or status == 408:
        return UpstreamUnavailable(message)
    return UpstreamRejected(message)
