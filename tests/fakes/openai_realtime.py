"""The Realtime API's WebSocket protocol, for :class:`tests.fakes.openai_server.FakeOpenAI`.

``GET /v1/realtime?model=...`` upgrades to a WebSocket (after the fake's usual API key
check: a bad key is a 401 at the handshake, as OpenAI answers). An unknown model gets an
``error`` event (``model_not_found``) and the socket is closed, like the real service.

A session answers the client events the product uses:

* ``session.update`` → ``session.updated`` (unknown voices are an ``invalid_value`` error);
* ``conversation.item.create`` (text, or ``input_audio`` content) → ``conversation.item.added``
  and ``conversation.item.done``;
* ``input_audio_buffer.append`` / ``commit`` → ``input_audio_buffer.committed``; the audio
  (PCM16, 24 kHz) is "heard" like the transcription endpoint hears files, each tone between
  silences a word ``tone<Hz>``, and when the session asks for input transcription a
  ``conversation.item.input_audio_transcription.completed`` event says so;
* ``response.create`` → ``response.created``, audio deltas (a real PCM16 sine tone, one
  second per ``chars_per_second`` characters of the answer) interleaved with transcript
  deltas, then ``response.done`` with usage by modality.

The answer is the next queued one (:meth:`FakeRealtime.enqueue`), else the newest user text
read back (a model told to read a text aloud), else ``"You said: <heard>."``.

Token counts: text ``ceil(chars / 4)``; input audio 10 tokens a second, output audio 20.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import json
import math
import secrets
import threading
import wave
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSMsgType, web

REALTIME_PATH: Final = "/v1/realtime"
RATE: Final = 24_000
MODELS: Final = (
    "gpt-realtime-2.1-mini",
    "gpt-realtime-2.1",
    "gpt-realtime",
    "gpt-realtime-mini",
)
"""The realtime models the fake serves."""
VOICES: Final = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
_MIN_COMMIT_MS: Final = 100
_DELTA_SECONDS: Final = 0.1
_INPUT_AUDIO_TOKENS_PER_SECOND: Final = 10
_OUTPUT_AUDIO_TOKENS_PER_SECOND: Final = 20
_AMPLITUDE: Final = 12_000

Hear = Callable[[bytes], list[str]]
"""Blocking: the words heard in a WAV file (the transcription endpoint's ear)."""


@dataclass
class RealtimeResponse:
    """One response a session gave: its answer, its usage and whether it was cut."""

    answer: str
    usage: dict[str, Any]
    audio_seconds: float
    cut: bool = False


@dataclass
class RealtimeSession:
    """One WebSocket session, as the fake saw it."""

    model: str
    voice: str = "alloy"
    instructions: str = ""
    max_output_tokens: int | None = None
    transcription_model: str | None = None
    items: list[tuple[str, str]] = field(default_factory=list)
    """``(role, text)`` per conversation item; audio items read ``<audio: words>``."""
    responses: list[RealtimeResponse] = field(default_factory=list)
    closed: bool = False


@dataclass
class _Item:
    id: str
    role: str
    text: str
    audio_seconds: float = 0.0


@dataclass
class _State:
    record: RealtimeSession
    items: list[_Item] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    responding: asyncio.Task[bool] | None = None


class FakeRealtime:
    """The realtime part of the fake OpenAI server; its attributes are the test API.

    Attributes:
        sessions: every session opened with a known model, in order.
        chars_per_second: characters of answer spoken per second of audio.
        delta_delay: seconds to wait between audio deltas (a slow answer).
        cached_text_tokens: text input tokens reported as cached (at most all of them).
    """

    def __init__(self, lock: threading.Lock, hear: Hear) -> None:
        self.sessions: list[RealtimeSession] = []
        self.chars_per_second = 15.0
        self.delta_delay = 0.0
        self.cached_text_tokens = 0
        self._lock = lock
        self._hear = hear
        self._answers: deque[str] = deque()
        self._cut_after: int | None = None
        self._responses = 0

    def enqueue(self, *answers: str) -> None:
        """Queue answers (FIFO); each response speaks the next one."""
        with self._lock:
            self._answers.extend(answers)

    def cut_next(self, after_deltas: int = 1) -> None:
        """Make the next response drop the connection (no close frame) after
        ``after_deltas`` audio deltas, before ``response.done``."""
        with self._lock:
            self._cut_after = after_deltas

    @property
    def open_sessions(self) -> int:
        """Sessions whose socket is still open."""
        with self._lock:
            return sum(not s.closed for s in self.sessions)

    def reset(self) -> None:
        """Forget sessions, queued answers and faults."""
        with self._lock:
            self.sessions.clear()
            self._answers.clear()
            self._cut_after = None
            self._responses = 0
            self.delta_delay = 0.0
            self.cached_text_tokens = 0

    # ------------------------------------------------------------------ the protocol

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/realtime``: the WebSocket session."""
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return web.json_response(
                _error_body("invalid_request_error", "missing_upgrade", "Expected a WebSocket."),
                status=400,
            )
        await ws.prepare(request)
        model = request.query.get("model", "")
        if model not in MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            await _send(ws, _error_event("invalid_request_error", "model_not_found", message))
            await ws.close()
            return ws
        state = _State(RealtimeSession(model))
        with self._lock:
            self.sessions.append(state.record)
        try:
            await _send(ws, {"type": "session.created", "session": _session_view(state.record)})
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(message.data)
                except ValueError:
                    await _send(ws, _invalid("The event is not valid JSON."))
                    continue
                if not isinstance(event, dict):
                    await _send(ws, _invalid("The event must be a JSON object."))
                    continue
                await self._dispatch(ws, request, state, event)
        finally:
            if state.responding is not None:
                state.responding.cancel()
            with self._lock:
                state.record.closed = True
        return ws

    async def _dispatch(
        self, ws: web.WebSocketResponse, request: web.Request, state: _State, event: dict[str, Any]
    ) -> None:
        """Answer one client event; a response streams in its own task, as the service
        keeps reading client events (a close, a cancel) while it answers."""
        kind = event.get("type")
        if kind == "session.update":
            await self._update_session(ws, state, event.get("session"))
        elif kind == "conversation.item.create":
            await self._create_item(ws, state, event.get("item"))
        elif kind == "input_audio_buffer.append":
            try:
                state.buffer += base64.b64decode(str(event.get("audio", "")), validate=True)
            except binascii.Error:
                await _send(
                    ws, _invalid("Invalid 'audio': expected base64-encoded audio.", "audio")
                )
        elif kind == "input_audio_buffer.commit":
            await self._commit(ws, state)
        elif kind == "input_audio_buffer.clear":
            state.buffer.clear()
            await _send(ws, {"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            if state.responding is not None and not state.responding.done():
                message = "Conversation already has an active response in progress."
                code = "conversation_already_has_active_response"
                await _send(ws, _error_event("invalid_request_error", code, message))
            else:
                state.responding = asyncio.create_task(self._respond(ws, request, state))
        else:
            await _send(ws, _invalid(f"Invalid value: '{kind}'. Unknown event type.", "type"))

    async def _update_session(
        self, ws: web.WebSocketResponse, state: _State, session: object
    ) -> None:
        if not isinstance(session, dict) or session.get("type") != "realtime":
            await _send(ws, _invalid("Missing required parameter: 'session.type'.", "session.type"))
            return
        record = state.record
        audio = session.get("audio") or {}
        output = audio.get("output") or {}
        voice = output.get("voice", record.voice)
        if voice not in VOICES:
            message = (
                f"Invalid value: '{voice}'. Supported values are: "
                + ", ".join(f"'{v}'" for v in VOICES)
                + "."
            )
            await _send(ws, _error_event("invalid_request_error", "invalid_value", message))
            return
        speed = output.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 1.5:
            message = f"Invalid 'session.audio.output.speed': {speed}; expected 0.25 to 1.5."
            await _send(ws, _invalid(message, "session.audio.output.speed"))
            return
        for part in (audio.get("input") or {}, output):
            rate = (part.get("format") or {}).get("rate", RATE)
            if rate != RATE:
                await _send(ws, _invalid(f"Invalid audio rate {rate}; expected {RATE}."))
                return
        record.voice = voice
        record.instructions = str(session.get("instructions", record.instructions))
        limit = session.get("max_output_tokens")
        record.max_output_tokens = limit if isinstance(limit, int) else None
        transcription = (audio.get("input") or {}).get("transcription")
        record.transcription_model = (
            str(transcription.get("model")) if isinstance(transcription, dict) else None
        )
        await _send(ws, {"type": "session.updated", "session": _session_view(record)})

    async def _create_item(self, ws: web.WebSocketResponse, state: _State, item: object) -> None:
        if not isinstance(item, dict) or item.get("type") != "message":
            await _send(ws, _invalid("Only message items are supported.", "item.type"))
            return
        role = item.get("role")
        if role not in ("user", "assistant", "system"):
            await _send(ws, _invalid(f"Invalid value: '{role}'.", "item.role"))
            return
        texts: list[str] = []
        seconds = 0.0
        for part in item.get("content") or []:
            if part.get("type") in ("input_text", "output_text", "text"):
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "input_audio":
                try:
                    pcm = base64.b64decode(str(part.get("audio", "")), validate=True)
                except binascii.Error:
                    await _send(ws, _invalid("Invalid 'audio'.", "item.content.audio"))
                    return
                words = await asyncio.to_thread(self._hear, _wav(pcm))
                texts.append(" ".join(words))
                seconds += len(pcm) / 2 / RATE
        added = _Item(_id("item_"), str(role), " ".join(texts), seconds)
        await self._add(ws, state, added)

    async def _commit(self, ws: web.WebSocketResponse, state: _State) -> None:
        pcm = bytes(state.buffer)
        milliseconds = len(pcm) / 2 / RATE * 1000
        if milliseconds < _MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {milliseconds:.2f}ms of audio."
            )
            await _send(
                ws,
                _error_event("invalid_request_error", "input_audio_buffer_commit_empty", message),
            )
            return
        state.buffer.clear()
        heard = " ".join(await asyncio.to_thread(self._hear, _wav(pcm)))
        item = _Item(_id("item_"), "user", heard, milliseconds / 1000)
        previous = state.items[-1].id if state.items else None
        await _send(
            ws,
            {
                "type": "input_audio_buffer.committed",
                "item_id": item.id,
                "previous_item_id": previous,
            },
        )
        await self._add(ws, state, item, audio=True)
        if state.record.transcription_model:
            await _send(
                ws,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item.id,
                    "content_index": 0,
                    "transcript": heard,
                    "usage": {"type": "duration", "seconds": round(milliseconds / 1000, 3)},
                },
            )

    async def _add(
        self, ws: web.WebSocketResponse, state: _State, item: _Item, *, audio: bool = False
    ) -> None:
        state.items.append(item)
        audio = audio or item.audio_seconds > 0
        with self._lock:
            state.record.items.append((item.role, f"<audio: {item.text}>" if audio else item.text))
        content = (
            [{"type": "input_audio", "transcript": None}]
            if audio
            else [{"type": "input_text", "text": item.text}]
        )
        view = {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": item.role,
            "content": content,
        }
        await _send(ws, {"type": "conversation.item.added", "item": view})
        await _send(ws, {"type": "conversation.item.done", "item": view})

    async def _respond(
        self, ws: web.WebSocketResponse, request: web.Request, state: _State
    ) -> bool:
        record = state.record
        with self._lock:
            answer = self._answers.popleft() if self._answers else None
            cut_after, self._cut_after = self._cut_after, None
            self._responses += 1
            frequency = 220 + 110 * ((self._responses - 1) % 8)
        if answer is None:
            answer = _default_answer(state.items)
        response_id = _id("resp_")
        item_id = _id("item_")
        await _send(ws, {"type": "response.created", "response": _response_view(response_id)})
        await _send(
            ws,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": {"id": item_id, "type": "message", "role": "assistant", "content": []},
            },
        )
        seconds = max(0.3, len(answer) / self.chars_per_second)
        text_output = math.ceil(len(answer) / 4)
        audio_output = math.ceil(seconds * _OUTPUT_AUDIO_TOKENS_PER_SECOND)
        status, details = "completed", None
        limit = record.max_output_tokens
        if limit is not None and text_output + audio_output > limit:
            # Cut where the token limit falls, as the API does.
            audio_output = max(limit - text_output, 0)
            seconds = audio_output / _OUTPUT_AUDIO_TOKENS_PER_SECOND
            status, details = "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
        pcm = _tone(frequency, seconds)
        step = int(RATE * _DELTA_SECONDS) * 2
        pieces = max(1, math.ceil(len(pcm) / step))
        words = _split(answer, pieces)
        base = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        for index in range(pieces):
            if ws.closed:  # the client went away mid-answer
                with self._lock:
                    record.responses.append(RealtimeResponse(answer, {}, seconds, cut=True))
                return False
            if cut_after is not None and index >= cut_after:
                with self._lock:
                    record.responses.append(RealtimeResponse(answer, {}, seconds, cut=True))
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return False
            if words[index]:
                await _send(
                    ws,
                    {
                        "type": "response.output_audio_transcript.delta",
                        **base,
                        "content_index": 0,
                        "delta": words[index],
                    },
                )
            chunk = pcm[index * step : (index + 1) * step]
            await _send(
                ws,
                {
                    "type": "response.output_audio.delta",
                    **base,
                    "content_index": 0,
                    "delta": base64.b64encode(chunk).decode("ascii"),
                },
            )
            if self.delta_delay:
                await asyncio.sleep(self.delta_delay)
        await _send(ws, {"type": "response.output_audio.done", **base, "content_index": 0})
        await _send(
            ws,
            {
                "type": "response.output_audio_transcript.done",
                **base,
                "content_index": 0,
                "transcript": answer,
            },
        )
        usage = self._usage(state, text_output, audio_output)
        with self._lock:
            record.responses.append(RealtimeResponse(answer, usage, seconds))
        state.items.append(_Item(item_id, "assistant", answer))
        done = _response_view(response_id, status=status, usage=usage)
        done["status_details"] = details
        done["output"] = [
            {
                "id": item_id,
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": [{"type": "output_audio", "transcript": answer}],
            }
        ]
        await _send(ws, {"type": "response.done", "response": done})
        return True

    def _usage(self, state: _State, text_output: int, audio_output: int) -> dict[str, Any]:
        record = state.record
        text_input = math.ceil(len(record.instructions) / 4) + sum(
            math.ceil(len(i.text) / 4) for i in state.items if not i.audio_seconds
        )
        audio_input = sum(
            math.ceil(i.audio_seconds * _INPUT_AUDIO_TOKENS_PER_SECOND) for i in state.items
        )
        cached = min(self.cached_text_tokens, text_input)
        return {
            "total_tokens": text_input + audio_input + text_output + audio_output,
            "input_tokens": text_input + audio_input,
            "output_tokens": text_output + audio_output,
            "input_token_details": {
                "text_tokens": text_input,
                "audio_tokens": audio_input,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {
                    "text_tokens": cached,
                    "audio_tokens": 0,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_output, "audio_tokens": audio_output},
        }


def _default_answer(items: list[_Item]) -> str:
    """The newest user text read back, or what the newest user audio was heard to say."""
    for item in reversed(items):
        if item.role != "user":
            continue
        if item.audio_seconds:
            return f"You said: {item.text or 'nothing I could hear'}."
        return item.text
    return "Hello."


def _split(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` consecutive parts (some may be empty), joined back unchanged."""
    size = math.ceil(len(text) / pieces) if text else 0
    return [text[i * size : (i + 1) * size] for i in range(pieces)]


@functools.lru_cache(maxsize=16)
def _second_of(frequency: int) -> bytes:
    """One second of a sine at a whole number of hertz: it repeats seamlessly."""
    samples = array(
        "h",
        (round(_AMPLITUDE * math.sin(2 * math.pi * frequency * n / RATE)) for n in range(RATE)),
    )
    return samples.tobytes()


def _tone(frequency: int, seconds: float) -> bytes:
    """``seconds`` of PCM16 sine at ``frequency`` Hz (mono, 24 kHz)."""
    size = int(seconds * RATE) * 2
    second = _second_of(frequency)
    return (second * (size // len(second) + 1))[:size]


def _wav(pcm: bytes) -> bytes:
    """PCM16 mono 24 kHz in a WAV container, for the ear that decodes files."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(RATE)
        file.writeframes(pcm)
    return out.getvalue()


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def _session_view(record: RealtimeSession) -> dict[str, Any]:
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": RATE},
        "turn_detection": None,
        "transcription": {"model": record.transcription_model}
        if record.transcription_model
        else None,
    }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_" + secrets.token_hex(8),
        "model": record.model,
        "output_modalities": ["audio"],
        "instructions": record.instructions,
        "max_output_tokens": record.max_output_tokens or "inf",
        "audio": {
            "input": audio_input,
            "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": record.voice},
        },
    }


def _response_view(
    response_id: str, *, status: str = "in_progress", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": [],
        "output_modalities": ["audio"],
        "usage": usage,
    }


def _error_body(kind: str, code: str | None, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message, "param": None}}


def _error_event(
    kind: str, code: str | None, message: str, param: str | None = None
) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": _id("event_"),
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": None},
    }


def _invalid(message: str, param: str | None = None) -> dict[str, Any]:
    return _error_event("invalid_request_error", "invalid_value", message, param)


async def _send(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    event.setdefault("event_id", _id("event_"))
    await ws.send_str(json.dumps(event, separators=(",", ":")))
