"""A fake OpenAI API server speaking the real wire formats.

The fake listens on ``127.0.0.1`` (in a background thread with its own event
loop) and implements enough of the OpenAI HTTP API for the official ``openai``
SDK to be pointed at it with ``base_url=fake.base_url``:

* ``POST /v1/responses`` (Responses API), streaming (SSE) and non-streaming,
  with ``input_image`` parts (data URLs only; http URLs fail as undownloadable);
* ``POST /v1/chat/completions`` (Chat Completions), streaming and non-streaming,
  with ``image_url`` parts (same rules);
* ``POST /v1/audio/transcriptions`` (multipart): decodes the audio with ffmpeg and
  "hears" each tone between silences as a word ``tone<Hz>``;
* ``POST /v1/audio/speech``: returns real audio (a sine tone) in the asked format;
* ``POST /v1/images/generations`` and ``POST /v1/images/edits`` (multipart): real
  PNG/JPEG/WebP pictures made with Pillow; ``GET /v1/_fake/images/{name}`` serves
  the pictures whose URL a DALL-E answer gives (no API key needed, like a CDN);
* ``GET /v1/models`` and ``GET /v1/models/{id}``;
* ``GET /v1/realtime`` (WebSocket): the Realtime API, see :mod:`tests.fakes.openai_realtime`
  (:attr:`FakeOpenAI.realtime` is its test API).

Model lifecycle: set :attr:`FakeOpenAI.today` and every request naming a model whose
shutdown date (from :attr:`FakeOpenAI.shutdowns`, by default the shipped registry's) has
come is answered 404 ``model_not_found``, as OpenAI answers for a shut-down model; such
models also leave ``GET /v1/models``, which lists :attr:`FakeOpenAI.offered` (by default the
shipped registry's models plus those in ``context_limits``).

Model answers are scripted with :class:`Scripted` objects queued through
:meth:`FakeOpenAI.enqueue`; when the queue is empty the fake echoes the last
user message (or calls ``default_reply``).  Transcripts can be scripted with
:meth:`FakeOpenAI.enqueue_transcript`.  Every request is recorded as a
:class:`RecordedRequest`; limits and error bodies follow the real API.

Run ``python -m tests.fakes.openai_server --port 8765`` to serve it in the
foreground from another process; it prints ``FAKE_OPENAI <base_url>`` once
listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import hashlib
import importlib
import io
import json
import math
import operator
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, NamedTuple

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from PIL import Image, ImageOps

from tests.fakes.background import BackgroundLoop
from tests.fakes.openai_batches import FakeBatches
from tests.fakes.openai_finetune import FakeFineTuning
from tests.fakes.openai_realtime import REALTIME_PATH, FakeRealtime

__all__ = [
    "AUDIO_EXTENSIONS",
    "AUDIO_UPLOAD_LIMIT",
    "ERROR_KINDS",
    "SPEECH_INPUT_LIMIT",
    "VISION_PAYLOAD_LIMIT",
    "VOICES",
    "FakeOpenAI",
    "ImageRecord",
    "RecordedFile",
    "RecordedRequest",
    "Scripted",
    "SeenImage",
    "SpeechRecord",
    "TranscriptionRecord",
    "main",
]

ERROR_KINDS: Final[frozenset[str]] = frozenset(
    {"rate_limit", "insufficient_quota", "context_length_exceeded", "server_error", "bad_request"}
)
"""The values accepted by :attr:`Scripted.error`."""

RESPONSES_PATH: Final = "/v1/responses"
CHAT_PATH: Final = "/v1/chat/completions"
MODEL_PATHS: Final[frozenset[str]] = frozenset({RESPONSES_PATH, CHAT_PATH})
TRANSCRIPTIONS_PATH: Final = "/v1/audio/transcriptions"
SPEECH_PATH: Final = "/v1/audio/speech"
IMAGE_GENERATIONS_PATH: Final = "/v1/images/generations"
IMAGE_EDITS_PATH: Final = "/v1/images/edits"
FAKE_FILES_PREFIX: Final = "/v1/_fake/"
FAKE_IMAGES_PATH: Final = "/v1/_fake/images"

AUDIO_UPLOAD_LIMIT: Final = 26_214_400
"""Largest audio file (bytes) ``/v1/audio/transcriptions`` accepts (25 MB)."""
AUDIO_EXTENSIONS: Final = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
"""File name extensions ``/v1/audio/transcriptions`` accepts."""
SPEECH_INPUT_LIMIT: Final = 4096
"""Most characters of ``input`` that ``/v1/audio/speech`` accepts."""
VISION_PAYLOAD_LIMIT: Final = 50 * 1024 * 1024
"""Most bytes of image data URLs accepted in one model request (50 MB)."""
VOICES: Final = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
"""Built-in voices of ``/v1/audio/speech``."""

_WHISPER: Final = "whisper-1"
_TRANSCRIPTION_MODELS: Final = (
    _WHISPER,
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
)
_TRANSCRIPTION_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt")
_LANGUAGE_NAMES: Final[dict[str, str]] = {
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fr": "french",
    "it": "italian",
    "ja": "japanese",
    "nl": "dutch",
    "pl": "polish",
    "pt": "portuguese",
    "ru": "russian",
    "uk": "ukrainian",
    "zh": "chinese",
}
_PCM_RATE: Final = 16_000
_RMS_WINDOW: Final = _PCM_RATE // 50  # 20 ms
_SILENCE_RMS: Final = 0.01 * 32768  # -40 dBFS
_MIN_SILENCE_WINDOWS: Final = 15  # 300 ms of silence separates two words
_MIN_SOUND_WINDOWS: Final = 3  # shorter sounds are clicks, not words
_MIN_AUDIO_SECONDS: Final = 0.1
_AUDIO_TOKENS_PER_SECOND: Final = 1000 / 60  # gpt-4o-transcribe bills ~1000 tokens a minute

_SPEECH_MODELS: Final = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_SPEECH_RATE: Final = 24_000
_SPEECH_FORMATS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "mp3": ("audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3")),
    "opus": ("audio/ogg", ("-c:a", "libopus", "-b:a", "32k", "-f", "ogg")),
    "aac": ("audio/aac", ("-c:a", "aac", "-b:a", "64k", "-f", "adts")),
    "flac": ("audio/flac", ("-c:a", "flac", "-f", "flac")),
    "wav": ("audio/wav", ("-c:a", "pcm_s16le", "-f", "wav")),
    "pcm": ("audio/pcm", ("-c:a", "pcm_s16le", "-f", "s16le")),
}
_MIN_SPEECH_SECONDS: Final = 0.3

_GPT_IMAGE_SIZES: Final = ("1024x1024", "1024x1536", "1536x1024", "auto")
_GPT_IMAGE_QUALITIES: Final = ("low", "medium", "high", "auto")
_GPT_IMAGE_ONLY: Final = ("background", "output_format", "output_compression", "moderation")
_GPT_IMAGE_FORMATS: Final[dict[str, str]] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_IMAGE_OUTPUT_TOKENS: Final[dict[str, dict[str, int]]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
_GPT_IMAGE_EDIT_LIMIT: Final = 50 * 1024 * 1024
_GPT_IMAGE_EDIT_FORMATS: Final = frozenset({"PNG", "WEBP", "JPEG"})
_GPT_IMAGE_MAX_INPUTS: Final = 16
_DALL_E_2_EDIT_LIMIT: Final = 4 * 1024 * 1024
_DALL_E_2_EDIT_MODES: Final = ("RGBA", "LA", "L")
_FORBIDDEN_RE: Final = re.compile(r"\bforbidden\b", re.IGNORECASE)

_VISION_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
_VISION_DETAILS: Final = ("low", "high", "auto")
_DATA_URL_RE: Final = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*?);base64,", re.I)

_DEFAULT_CONTEXT_LIMIT: Final = 128_000
_CLIENT_MAX_SIZE: Final = 64 * 1024 * 1024  # room for a 50 MB vision payload or 25 MB audio
_POLL_INTERVAL: Final = 0.05
_PIECE_RE: Final = re.compile(r"\s*\S{1,4}|\s+")
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SYSTEM_FINGERPRINT: Final = "fp_fake0openai"
_REQUEST_ID_KEY: Final = web.RequestKey("request_id", str)
_BODY_KEY: Final[web.RequestKey[dict[str, object] | None]] = web.RequestKey("body")
_FORM_KEY: Final[web.RequestKey[_Form | None]] = web.RequestKey("form")
_RECORD_KEY: Final[web.RequestKey[RecordedRequest]] = web.RequestKey("record")

_MISSING_KEY_MESSAGE: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_BAD_JSON_MESSAGE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_QUOTA_MESSAGE: Final = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_SERVER_ERROR_MESSAGE: Final = (
    "The server had an error while processing your request. Sorry about that! You can retry "
    "your request, or contact us through our help center at help.openai.com if the error "
    "persists."
)
_CORRUPTED_AUDIO_MESSAGE: Final = "Audio file might be corrupted or unsupported"
_INVALID_IMAGE_MESSAGE: Final = (
    "The image data you provided does not represent a valid image. Please check your input and "
    "try again with one of the supported image formats: ['image/jpeg', 'image/png', "
    "'image/gif', 'image/webp']."
)
_UNSUPPORTED_IMAGE_MESSAGE: Final = (
    "You uploaded an unsupported image. Please make sure your image has of one the following "
    "formats: ['png', 'jpeg', 'gif', 'webp']."
)
_DALL_E_SAFETY_MESSAGE: Final = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)
_GPT_IMAGE_SAFETY_MESSAGE: Final = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID {request_id}."
)


@dataclass
class Scripted:
    """One scripted upstream answer, consumed by the next model request (responses or chat)."""

    text: str = ""
    """Assistant text to stream/return (may be empty when only tool calls are wanted)."""
    tool_calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    """``(function name, arguments)`` pairs turned into function calls with generated ids."""
    error: str | None = None
    """One of :data:`ERROR_KINDS`; the request then fails with the matching OpenAI error."""
    retry_after: float | None = None
    """For ``rate_limit``: sent as ``retry-after`` (seconds) and ``retry-after-ms`` headers."""
    chunk_delay: float = 0.0
    """Seconds to sleep between streamed deltas (non-streaming: total generation time)."""
    chunks: int | None = None
    """Number of text deltas to split ``text`` into (default: word-ish pieces of ~4 chars)."""
    usage: tuple[int, int, int] | None = None
    """``(input_tokens, cached_input_tokens, output_tokens)``; default computed from lengths."""
    hang: bool = False
    """Accept the request, send headers/first event, then never finish until the client leaves."""
    retry_after_raw: str | None = None
    """For ``rate_limit``: sent verbatim as both ``retry-after`` headers (as a broken proxy
    might: ``nan``, ``inf``, ``-5``, garbage)."""
    cut_after: int | None = None
    """Streaming only: drop the connection after this many text deltas (0: before any
    text), without an error event or ``[DONE]`` — a connection cut mid-stream."""

    def __post_init__(self) -> None:
        """Reject impossible scripts early, in the test thread rather than in the server."""
        if self.error is not None and self.error not in ERROR_KINDS:
            raise ValueError(
                f"unknown error kind {self.error!r}; expected one of {sorted(ERROR_KINDS)}"
            )
        if self.chunk_delay < 0:
            raise ValueError("chunk_delay must be >= 0")
        if self.chunks is not None and self.chunks < 1:
            raise ValueError("chunks must be >= 1")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError("cut_after must be >= 0")


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart request."""

    name: str
    """The form field name (``file``, ``image``, ``image[]``, ``mask``)."""
    filename: str | None
    content_type: str
    size: int
    """Length of the part's content in bytes."""
    data: bytes = field(repr=False)


class SeenImage(NamedTuple):
    """An image a model request carried (vision input), as the fake decoded it."""

    mime: str
    """The image's real type from its content (``image/png``, ``image/jpeg``, ...)."""
    width: int
    height: int
    detail: str
    """``low``, ``high`` or ``auto`` as requested."""
    tokens: int
    """Input tokens charged for the image (added to the request's input tokens)."""


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by the fake (header names are lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object] | None
    """The parsed JSON body, or the text fields of a multipart form (a field sent more than
    once maps to the list of its values); ``None`` when absent or neither."""
    query: str = ""
    """The raw query string (without ``?``)."""
    files: tuple[RecordedFile, ...] = ()
    """File parts of a multipart request, in order."""
    images: list[SeenImage] = field(default_factory=list)
    """Images of a model (responses/chat) request, filled once the fake has decoded them."""

    def as_text(self) -> str:
        """Request line, headers and body as text (JSON dumped; files by name and type)."""
        lines = [f"{self.method} {self.path}" + (f"?{self.query}" if self.query else "")]
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        if self.body is not None:
            lines.append(json.dumps(self.body, ensure_ascii=False))
        lines.extend(
            f"{f.name}: {f.filename} ({f.content_type}, {f.size} bytes)" for f in self.files
        )
        return "\n".join(lines)


class TranscriptionRecord(NamedTuple):
    """One successful ``/v1/audio/transcriptions`` request."""

    model: str
    filename: str
    duration_seconds: float
    text: str


class SpeechRecord(NamedTuple):
    """One successful ``/v1/audio/speech`` request."""

    model: str
    voice: str
    response_format: str
    input: str
    seconds: float
    """Duration of the audio returned."""


class ImageRecord(NamedTuple):
    """One successful image request (``endpoint`` is ``generations`` or ``edits``)."""

    endpoint: str
    model: str
    prompt: str
    size: str
    """The size produced (``auto`` resolved)."""
    quality: str
    """The quality used (``auto`` resolved)."""


@dataclass
class _ToolCall:
    """A function call the fake is about to emit."""

    name: str
    arguments: str
    call_id: str
    item_id: str


@dataclass
class _Plan:
    """A fully resolved answer for one model request."""

    model: str
    text: str
    pieces: list[str]
    tool_calls: list[_ToolCall]
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    chunk_delay: float
    hang: bool
    incomplete: bool = False
    """Stopped at the request's output token limit (Responses ``incomplete``, Chat
    Completions ``finish_reason: length``)."""
    cut_after: int | None = None


class _Aborted(Exception):
    """The client went away or the server is stopping: stop producing output."""


class _ApiError(Exception):
    """An OpenAI error answer, raised by validation and turned into a response."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, type_, param, code)

    def response(self) -> web.Response:
        """The JSON error response."""
        return _json_response(self.body, status=self.status)


@dataclass
class _Form:
    """A parsed multipart body: text fields (repeatable) and file parts."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        """The first value of a text field, or ``None``."""
        values = self.fields.get(name)
        return values[0] if values else None

    def texts(self, name: str) -> list[str]:
        """Every value of a text field."""
        return list(self.fields.get(name, []))

    def file(self, *names: str) -> list[RecordedFile]:
        """File parts sent under any of ``names``, in order."""
        return [f for f in self.files if f.name in names]

    def recorded_body(self) -> dict[str, object]:
        """Text fields as recorded: a single value as ``str``, repeated ones as a list."""
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.fields.items()}


@dataclass(frozen=True)
class _ToneRegion:
    """A stretch of sound between silences, heard as one word."""

    start: float
    end: float
    frequency: float

    @property
    def word(self) -> str:
        """``tone<Hz>``, the frequency rounded to the nearest 10 Hz."""
        return f"tone{round(self.frequency / 10) * 10}"


@dataclass(frozen=True)
class _ImageModel:
    """What one image model accepts."""

    name: str
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    default_quality: str
    max_prompt: int
    max_n: int
    gpt_image: bool
    edits: bool


_IMAGE_MODELS: Final[dict[str, _ImageModel]] = {
    m.name: m
    for m in (
        _ImageModel(
            "gpt-image-1", _GPT_IMAGE_SIZES, _GPT_IMAGE_QUALITIES, "auto", 32000, 10, True, True
        ),
        _ImageModel(
            "gpt-image-2.6-sunburst",
            _GPT_IMAGE_SIZES,
            _GPT_IMAGE_QUALITIES,
            "auto",
            32000,
            10,
            True,
            True,
        ),
        _ImageModel(
            "gpt-image-2.6-flare",
            _GPT_IMAGE_SIZES,
            _GPT_IMAGE_QUALITIES,
            "auto",
            32000,
            10,
            True,
            True,
        ),
        _ImageModel(
            "gpt-image-1-mini",
            _GPT_IMAGE_SIZES,
            _GPT_IMAGE_QUALITIES,
            "auto",
            32000,
            10,
            True,
            True,
        ),
        _ImageModel(
            "dall-e-3",
            ("1024x1024", "1792x1024", "1024x1792"),
            ("standard", "hd"),
            "standard",
            4000,
            1,
            False,
            False,
        ),
        _ImageModel(
            "dall-e-2",
            ("256x256", "512x512", "1024x1024"),
            ("standard",),
            "standard",
            1000,
            10,
            False,
            True,
        ),
    )
}
_DEFAULT_IMAGE_MODEL: Final = "dall-e-2"

_REGISTRY_FILE: Final = Path(__file__).resolve().parents[2] / "core" / "data" / "models.toml"
_REGISTRY_TABLES: Final = (
    "models",
    "image_models",
    "transcription_models",
    "speech_models",
    "embedding_models",
)


def _shipped_shutdowns() -> dict[str, date | None]:
    """Every model of the shipped registry with its shutdown date (None: none announced):
    the fake's stand-in for OpenAI's deprecation page."""
    data = tomllib.loads(_REGISTRY_FILE.read_text(encoding="utf-8"))
    found: dict[str, date | None] = {}
    for table in _REGISTRY_TABLES:
        for name, entry in data.get(table, {}).items():
            shutdown = entry.get("shutdown")
            found[name] = shutdown if isinstance(shutdown, date) else None
    return found


# --------------------------------------------------------------------------- helpers


def _hex_id(prefix: str, nbytes: int = 24) -> str:
    return prefix + secrets.token_hex(nbytes)


def _dumps(obj: object) -> str:
    return _JSON.encode(obj)


def _split_default(text: str) -> list[str]:
    pieces: list[str] = _PIECE_RE.findall(text)
    return pieces if "".join(pieces) == text else [text]


def _split_text(text: str, chunks: int | None) -> list[str]:
    if not text:
        return []
    if chunks is None:
        return _split_default(text)
    n = min(chunks, len(text))
    size = len(text)
    return [text[i * size // n : (i + 1) * size // n] for i in range(n)]


def _parts_text(content: object, *, join: str = "\n") -> str:
    """Text of a message ``content``: a string or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return join.join(texts)
    return ""


def _last_user_message(api: str, body: dict[str, object]) -> object:
    """The last user message (a string input or a message dict) of a request body."""
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
    else:
        items = body.get("messages")
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if (
            isinstance(item, dict)
            and item.get("role") == "user"
            and item.get("type", "message") == "message"
        ):
            return item
    return None


def _last_user_text(api: str, body: dict[str, object]) -> str:
    """Text of the last user message of a Responses or Chat request body."""
    message = _last_user_message(api, body)
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        return _parts_text(message.get("content"))
    return ""


def _echo(text: str, images: int) -> str:
    """The default reply: ``Echo: <text>``, plus ``[N images]`` when the message had any."""
    if not images:
        return f"Echo: {text}"
    note = f"[{images} image{'' if images == 1 else 's'}]"
    return f"Echo: {text} {note}" if text else f"Echo: {note}"


def _input_chars(api: str, body: dict[str, object]) -> int:
    """Total characters of the input text (instructions, messages, tool I/O)."""
    total = 0
    if api == "responses":
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            total += len(instructions)
        items = body.get("input")
        if isinstance(items, str):
            return total + len(items)
    else:
        items = body.get("messages")
    if not isinstance(items, list):
        return total
    for item in items:
        if not isinstance(item, dict):
            continue
        total += len(_parts_text(item.get("content"), join=""))
        arguments = item.get("arguments")  # Responses function_call item
        if isinstance(arguments, str):
            total += len(arguments)
        output = item.get("output")  # Responses function_call_output item
        if isinstance(output, (str, list)):
            total += len(_parts_text(output, join=""))
        tool_calls = item.get("tool_calls")  # Chat assistant message
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    total += len(function["arguments"])
    return total


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


_OUTPUT_LIMITS: Final = {
    # The output limit parameters of each API and the least value each takes.
    "responses": (("max_output_tokens", 16),),
    "chat": (("max_completion_tokens", 1), ("max_tokens", 1)),
}


def _output_limit(api: str, body: dict[str, object]) -> int | None:
    """The output token limit a model request sets, validated as the API does."""
    limits: list[int] = []
    for name, least in _OUTPUT_LIMITS[api]:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _ApiError(
                400,
                f"Invalid type for '{name}': expected an integer, but got "
                f"{type(value).__name__} instead.",
                param=name,
                code="invalid_type",
            )
        if value < least:
            raise _ApiError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= {least}, "
                f"but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        limits.append(value)
    return min(limits) if limits else None


def _cut_output(text: str, calls: list[_ToolCall], limit: int) -> tuple[str, list[_ToolCall]]:
    """What a model gets out within ``limit`` output tokens: the text up to there, then the
    tool calls whose arguments fit whole."""
    if _tokens(len(text)) >= limit:
        return text[: limit * 4], []
    room = limit - _tokens(len(text))
    kept: list[_ToolCall] = []
    for call in calls:
        room -= _tokens(len(call.arguments))
        if room < 0:
            break
        kept.append(call)
    return text, kept


def _finish_reason(plan: _Plan) -> str:
    """Chat Completions' ``finish_reason`` for a plan."""
    if plan.incomplete:
        return "length"
    return "tool_calls" if plan.tool_calls else "stop"


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_dumps(data).encode(), status=status, headers=headers, content_type="application/json"
    )


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _SSEWriter:
    """Buffers server-sent events and writes them in as few chunks as possible."""

    def __init__(self, response: web.StreamResponse, *, named: bool) -> None:
        self._response = response
        self._named = named
        self._buffer: list[str] = []

    def add(self, payload: dict[str, Any]) -> None:
        """Queue one event (``event:`` line included for the Responses API)."""
        if self._named:
            self._buffer.append(f"event: {payload['type']}\ndata: {_dumps(payload)}\n\n")
        else:
            self._buffer.append(f"data: {_dumps(payload)}\n\n")

    def add_raw(self, data: str) -> None:
        """Queue a ``data:`` line verbatim (used for ``[DONE]``)."""
        self._buffer.append(f"data: {data}\n\n")

    async def flush(self) -> None:
        """Send everything queued so far."""
        if self._buffer:
            data = "".join(self._buffer).encode()
            self._buffer.clear()
            await self._response.write(data)


# --------------------------------------------------------------------------- API errors


def _supported(values: Sequence[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _missing(param: str) -> _ApiError:
    return _ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid_value(param: str, value: object, supported: Sequence[str]) -> _ApiError:
    return _ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {_supported(supported)}.",
        param=param,
        code="invalid_value",
    )


def _invalid_type(param: str, expected: str, value: object) -> _ApiError:
    got = "a string" if isinstance(value, str) else type(value).__name__
    return _ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def _unknown_parameter(param: str) -> _ApiError:
    return _ApiError(400, f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")


def _unsupported_parameter(param: str) -> _ApiError:
    return _ApiError(
        400,
        f"Unsupported parameter: '{param}' is not supported with this model.",
        param=param,
        code="unsupported_parameter",
    )


def _model_not_found(model: str) -> _ApiError:
    return _ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def _string_length(param: str, value: str, limit: int) -> None:
    """Reject an empty string or one longer than ``limit`` characters, as the API does."""
    if not value:
        raise _ApiError(
            400,
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    if len(value) > limit:
        raise _ApiError(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{limit}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )


def _number_in_range(param: str, value: object, low: float, high: float) -> float:
    """A JSON or form number within ``[low, high]``, else the API's range error."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _invalid_type(param, "a decimal", value) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _invalid_type(param, "a decimal", value)
    if number > high:
        raise _ApiError(
            400,
            f"Invalid '{param}': decimal above maximum value. Expected a value <= "
            f"{_format_seconds(high)}, but got {_format_seconds(number)} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    if number < low:
        raise _ApiError(
            400,
            f"Invalid '{param}': decimal below minimum value. Expected a value >= "
            f"{_format_seconds(low)}, but got {_format_seconds(number)} instead.",
            param=param,
            code="decimal_below_min_value",
        )
    return number


def _integer_in_range(param: str, value: object, low: int, high: int) -> int:
    """A JSON or form integer within ``[low, high]``, else the API's range error."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise _invalid_type(param, "an integer", value)
    if number > high:
        raise _ApiError(
            400,
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, "
            f"but got {number} instead.",
            param=param,
            code="integer_above_max_value",
        )
    if number < low:
        raise _ApiError(
            400,
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {number} instead.",
            param=param,
            code="integer_below_min_value",
        )
    return number


def _optional_str(body: dict[str, object], param: str) -> str | None:
    value = body.get(param)
    if value is None or isinstance(value, str):
        return value
    raise _invalid_type(param, "a string", value)


# --------------------------------------------------------------------------- audio


@functools.cache
def _ffmpeg() -> str:
    """The ffmpeg executable bundled with ``imageio-ffmpeg``."""
    module = importlib.import_module("imageio_ffmpeg")
    return str(module.get_ffmpeg_exe())


def _decode_audio(data: bytes, extension: str) -> bytes | None:
    """Decode to 16 kHz mono s16le PCM with ffmpeg; ``None`` when ffmpeg cannot.

    Blocking: run it in a worker thread.
    """
    with tempfile.TemporaryDirectory(prefix="fake-openai-") as tmp:
        source = Path(tmp) / f"upload.{extension}"
        source.write_bytes(data)
        command = [
            _ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(source),
            "-vn",
            "-ac",
            "1",
            "-ar",
            str(_PCM_RATE),
            "-f",
            "s16le",
            "pipe:1",
        ]
        done = subprocess.run(command, capture_output=True, check=False, timeout=300)
    return done.stdout if done.returncode == 0 else None


def _pcm_samples(pcm: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _sound_runs(windows: list[int]) -> list[tuple[int, int]]:
    """Consecutive window indexes grouped as ``(first, last + 1)`` runs."""
    runs: list[tuple[int, int]] = []
    for index in windows:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _frequency(samples: array[int], windows: list[int]) -> float:
    """Pitch by zero crossings (with hysteresis) over the loud windows of a region.

    Half periods are counted between the first and the last crossing of each run, so the
    partly silent windows at a sound's edges do not skew the estimate.
    """
    half_periods = 0
    span = 0
    for first, last in _sound_runs(windows):
        run = samples[first * _RMS_WINDOW : last * _RMS_WINDOW]
        if not run:
            continue
        rms = math.sqrt(sum(map(operator.mul, run, run)) / len(run))
        threshold = 0.2 * rms
        state = 0
        crossings = 0
        first_at = last_at = 0
        for position, sample in enumerate(run):
            if sample > threshold:
                if state < 0:
                    crossings += 1
                    last_at = position
                    if crossings == 1:
                        first_at = position
                state = 1
            elif sample < -threshold:
                if state > 0:
                    crossings += 1
                    last_at = position
                    if crossings == 1:
                        first_at = position
                state = -1
        if crossings >= 2:
            half_periods += crossings - 1
            span += last_at - first_at
    return _PCM_RATE * half_periods / (2 * span) if span else 0.0


def _tone_regions(pcm: bytes) -> tuple[float, list[_ToneRegion]]:
    """Duration and the sounds between silences (RMS over 20 ms windows below -40 dBFS
    for at least 300 ms), each with its pitch."""
    samples = _pcm_samples(pcm)
    duration = len(samples) / _PCM_RATE
    loud: list[bool] = []
    for start in range(0, len(samples), _RMS_WINDOW):
        chunk = samples[start : start + _RMS_WINDOW]
        loud.append(sum(map(operator.mul, chunk, chunk)) >= _SILENCE_RMS**2 * len(chunk))
    groups: list[list[int]] = []
    silent_run = _MIN_SILENCE_WINDOWS
    for index, is_loud in enumerate(loud):
        if not is_loud:
            silent_run += 1
            continue
        if silent_run >= _MIN_SILENCE_WINDOWS:
            groups.append([])
        groups[-1].append(index)
        silent_run = 0
    regions = [
        _ToneRegion(
            start=round(windows[0] * _RMS_WINDOW / _PCM_RATE, 2),
            end=round(min((windows[-1] + 1) * _RMS_WINDOW, len(samples)) / _PCM_RATE, 2),
            frequency=_frequency(samples, windows),
        )
        for windows in groups
        if len(windows) >= _MIN_SOUND_WINDOWS
    ]
    return duration, regions


def _hear_wav(data: bytes) -> list[str]:
    """The words the fake hears in a WAV file (realtime input audio). Blocking."""
    pcm = _decode_audio(data, "wav")
    return [] if pcm is None else [region.word for region in _tone_regions(pcm)[1]]


def _synthesize_speech(frequency: int, seconds: float, response_format: str) -> bytes:
    """A sine tone encoded with ffmpeg. Blocking: run it in a worker thread."""
    codec = _SPEECH_FORMATS[response_format][1]
    with tempfile.TemporaryDirectory(prefix="fake-openai-") as tmp:
        target = Path(tmp) / f"speech.{response_format}"
        command = [
            _ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={frequency}:sample_rate={_SPEECH_RATE}:duration={seconds:.3f}",
            "-ac",
            "1",
            *codec,
            "-y",
            str(target),
        ]
        subprocess.run(command, capture_output=True, check=True, timeout=300)
        return target.read_bytes()


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _subtitles(segments: list[tuple[float, float, str]], *, vtt: bool) -> str:
    blocks: list[str] = []
    for index, (start, end, text) in enumerate(segments, start=1):
        if vtt:
            blocks.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n")
        else:
            blocks.append(f"{index}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n")
    body = "\n".join(blocks)
    return f"WEBVTT\n\n{body}" if vtt else body


# --------------------------------------------------------------------------- images


def _vision_tokens(width: int, height: int, detail: str) -> int:
    """OpenAI's rule: fit in 2048x2048, shortest side to 768, then 170 per 512 px tile + 85."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _open_image(data: bytes) -> Image.Image | None:
    """The fully decoded image, or ``None`` when Pillow cannot read it."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:  # any decoder failure means "not an image"
        return None
    return image


def _size_tuple(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def _draw_picture(size: str, seed: str, fmt: str, *, transparent: bool = False) -> bytes:
    """A gradient picture whose colour depends on ``seed``. Blocking (Pillow)."""
    width, height = _size_tuple(size)
    digest = hashlib.sha256(seed.encode()).digest()
    ramp = Image.linear_gradient("L").resize((width, height))
    red = Image.new("L", (width, height), digest[0])
    blue = Image.new("L", (width, height), digest[1])
    picture = Image.merge("RGB", (red, ramp, blue))
    if transparent:
        picture.putalpha(ramp)
    return _encode_picture(picture, fmt)


def _encode_picture(picture: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        picture.convert("RGB").save(buffer, "JPEG", quality=85)
    elif fmt == "PNG":
        picture.save(buffer, "PNG", compress_level=1)
    else:
        picture.save(buffer, fmt)
    return buffer.getvalue()


def _edit_picture(source: bytes, size: str, fmt: str) -> bytes:
    """The first input image, colours inverted, resized to ``size``. Blocking (Pillow)."""
    with Image.open(io.BytesIO(source)) as image:
        rgba = image.convert("RGBA")
    red, green, blue, alpha = rgba.split()
    inverted = ImageOps.invert(Image.merge("RGB", (red, green, blue)))
    inverted.putalpha(alpha)
    return _encode_picture(inverted.resize(_size_tuple(size)), fmt)


def _auto_edit_size(width: int, height: int) -> str:
    """The standard GPT image size closest to the input's aspect ratio."""
    if width > height * 1.2:
        return "1536x1024"
    if height > width * 1.2:
        return "1024x1536"
    return "1024x1024"


def _image_ref(api: str, part: object) -> tuple[object, object] | None:
    """``(url, detail)`` of an image part (``input_image`` or ``image_url``), else ``None``."""
    if not isinstance(part, dict):
        return None
    if api == "responses" and part.get("type") == "input_image":
        if part.get("image_url") is None and isinstance(part.get("file_id"), str):
            raise _ApiError(
                404, f"No such File object: {part['file_id']}", param="file_id", code=None
            )
        return part.get("image_url"), part.get("detail", "auto")
    if api == "chat" and part.get("type") == "image_url":
        image_url = part.get("image_url")
        if isinstance(image_url, dict):
            return image_url.get("url"), image_url.get("detail", "auto")
        return image_url, "auto"
    return None


def _message_images(api: str, item: object) -> list[tuple[object, object]]:
    """Image parts of one input item or message (content parts, tool output parts)."""
    if not isinstance(item, dict):
        return []
    refs: list[tuple[object, object]] = []
    for key in ("content", "output"):
        parts = item.get(key)
        if isinstance(parts, list):
            refs.extend(ref for ref in (_image_ref(api, p) for p in parts) if ref is not None)
    return refs


def _request_images(api: str, body: dict[str, object]) -> list[tuple[object, object]]:
    items = body.get("input" if api == "responses" else "messages")
    if not isinstance(items, list):
        return []
    return [ref for item in items for ref in _message_images(api, item)]


def _inspect_images(api: str, body: dict[str, object]) -> list[SeenImage]:
    """Validate and decode every image of a model request, as the API would.

    Blocking (base64 and Pillow): run it in a worker thread.
    """
    param = "input" if api == "responses" else "messages"
    payloads: list[tuple[str, str, str]] = []
    total = 0
    for url, detail in _request_images(api, body):
        if not isinstance(url, str):
            raise _invalid_type("image_url", "a string", url)
        if re.match(r"https?://", url, re.IGNORECASE):
            raise _ApiError(
                400, f"Error while downloading {url}.", param="url", code="invalid_image_url"
            )
        match = _DATA_URL_RE.match(url)
        if match is None:
            raise _ApiError(
                400,
                "Invalid image URL. Expected a base64-encoded data URL with an image MIME type "
                "(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=') or an http(s) URL.",
                param=param,
                code="invalid_value",
            )
        mime = match["mime"].lower()
        if not mime.startswith("image/"):
            raise _ApiError(
                400,
                "Invalid image URL. Expected a base64-encoded data URL with an image MIME type "
                f"(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got unsupported MIME "
                f"type '{mime}'.",
                param=param,
                code="invalid_value",
            )
        if detail not in _VISION_DETAILS:
            raise _invalid_value("detail", detail, _VISION_DETAILS)
        total += len(url)
        payloads.append((url[match.end() :], str(detail), mime))
    if total > VISION_PAYLOAD_LIMIT:
        raise _ApiError(
            400,
            f"Total size of images in the request ({total} bytes) exceeds the limit of "
            f"{VISION_PAYLOAD_LIMIT} bytes (50 MB).",
            param=param,
            code="image_payload_too_large",
        )
    seen: list[SeenImage] = []
    for payload, detail, _ in payloads:
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _ApiError(
                400, _INVALID_IMAGE_MESSAGE, param=param, code="invalid_image_format"
            ) from None
        image = _open_image(data)
        if image is None:
            raise _ApiError(400, _INVALID_IMAGE_MESSAGE, param=param, code="invalid_image_format")
        if image.format not in _VISION_FORMATS or getattr(image, "is_animated", False):
            raise _ApiError(
                400, _UNSUPPORTED_IMAGE_MESSAGE, param=param, code="invalid_image_format"
            )
        width, height = image.size
        seen.append(
            SeenImage(
                mime=Image.MIME.get(image.format, "image/" + image.format.lower()),
                width=width,
                height=height,
                detail=detail,
                tokens=_vision_tokens(width, height, detail),
            )
        )
    return seen


# --------------------------------------------------------------------------- server


class FakeOpenAI:
    """Runs the fake on 127.0.0.1 in a background thread with its own event loop.

    Token estimates (unless a script sets ``usage``): input tokens are
    ``ceil(chars / 4)`` over instructions, message text (string or text parts),
    function-call arguments and tool outputs; output tokens are
    ``ceil(len(text) / 4)`` plus ``ceil(len(arguments_json) / 4)`` per tool call.
    Tool call ids are ``call_1``, ``call_2``, ... (counter cleared by :meth:`reset`).
    Each image of a model request adds its vision tokens (see :class:`SeenImage`).

    An output limit (``max_output_tokens`` on Responses, at least 16; ``max_completion_tokens``
    or ``max_tokens`` on Chat Completions, at least 1) stops the answer there, as the API
    does: the text is cut after that many tokens' worth of characters, tool calls that no
    longer fit are dropped, ``output_tokens`` reports the limit, and the response ends
    ``incomplete`` (``response.incomplete``; Chat Completions ``finish_reason: length``).

    Transcription "hears" the audio: each sound between silences of 300 ms or more
    becomes the word ``tone<Hz>`` (pitch by zero crossings, rounded to 10 Hz), so
    ``440 Hz, silence, 660 Hz`` is transcribed ``"tone440 tone660"`` and pure silence
    ``""``.  Speech answers a sine tone of ``len(input) / speech_chars_per_second /
    speed`` seconds (at least 0.3 s) whose pitch steps through 220, 330, ... 990 Hz
    with each speech request, so joined chunks stay distinguishable.

    Attributes:
        requests: every request received, in order (header names lower-cased).
        context_limits: per-model context windows (also listed by ``GET /v1/models``).
        transcriptions: every successful transcription, in order.
        speeches: every successful speech request, in order.
        images: every successful image generation or edit, in order.
        batches: the Files and Batch API (``tests.fakes.openai_batches``).
        fine_tuning: the fine-tuning API (``tests.fakes.openai_finetune``); the ``ft:``
            models it made answer Responses and Chat Completions calls, other ``ft:``
            names get ``model_not_found``.
        speech_chars_per_second: characters of ``input`` spoken per second at speed 1.
        today: the fake's date for shutdowns; a model is refused from its shutdown date
            on (None: never).
        shutdowns: model id to shutdown date (None: none announced); defaults to the
            shipped registry's. Tests set a date to make the fake refuse a model.
        offered: the models ``GET /v1/models`` lists (retired ones always left out);
            None: the shipped registry's models plus those of ``context_limits``.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        port: int = 0,
        context_limits: dict[str, int] | None = None,
        default_reply: Callable[[str], str] | None = None,
        today: date | None = None,
    ) -> None:
        """Configure the fake; call :meth:`start` (or use ``with``) to serve.

        ``context_limits`` maps model names to their context window: requests whose
        estimated input tokens exceed it fail with ``context_length_exceeded``.
        ``default_reply`` computes the answer from the last user text when no
        script is queued (default ``"Echo: <text>"``, followed by ``" [N images]"``
        when that message carried images).
        ``today`` is the fake's date for model shutdowns (None: no model has shut down).
        """
        self.api_key = api_key
        self.context_limits: dict[str, int] = dict(context_limits or {})
        self.default_reply = default_reply
        self.requests: list[RecordedRequest] = []
        self.transcriptions: list[TranscriptionRecord] = []
        self.speeches: list[SpeechRecord] = []
        self.images: list[ImageRecord] = []
        self.speech_chars_per_second = 15.0
        self.today: date | None = today
        self.shutdowns: dict[str, date | None] = _shipped_shutdowns()
        self.offered: list[str] | None = None
        self._transcripts: deque[str] = deque()
        self._withdrawn_models: set[str] = set()
        self._pictures: dict[str, tuple[str, bytes]] = {}
        self._speech_counter = 0
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._call_counter = 0
        self._background: BackgroundLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.realtime = FakeRealtime(self._lock, _hear_wav)
        self.batches = FakeBatches(
            self._lock,
            self._batch_answer,
            _input_chars,
            lambda request: (request[_FORM_KEY], request[_BODY_KEY]),
        )
        self.fine_tuning = FakeFineTuning(
            self._lock,
            self.batches.files,
            lambda request: (request[_FORM_KEY], request[_BODY_KEY]),
        )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeOpenAI:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on (only while running)."""
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """Base URL to hand to ``openai.AsyncOpenAI``, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._port is not None

    def start(self) -> FakeOpenAI:
        """Start serving in a background thread; returns ``self`` once listening."""
        if self._background is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._background = BackgroundLoop("FakeOpenAI", self._astart)
        self._loop = self._background.loop
        return self

    def stop(self) -> None:
        """Stop serving: abort hanging/streaming requests, close sockets, join the thread."""
        background = self._background
        if background is None:
            return
        try:
            background.stop(self._astop)
        finally:
            self._background = None
            self._loop = None
            self._port = None

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(
            middlewares=[self._middleware, self._refuse_retired], client_max_size=_CLIENT_MAX_SIZE
        )
        app.on_response_prepare.append(self._on_response_prepare)
        app.router.add_post(RESPONSES_PATH, self._handle_responses)
        app.router.add_post(CHAT_PATH, self._handle_chat)
        media_routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
            TRANSCRIPTIONS_PATH: lambda r: self._transcribe(r[_FORM_KEY]),
            SPEECH_PATH: lambda r: self._speak(_json_body(r)),
            IMAGE_GENERATIONS_PATH: lambda r: self._generate_images(r, _json_body(r)),
            IMAGE_EDITS_PATH: lambda r: self._edit_images(r, r[_FORM_KEY]),
        }
        for path, work in media_routes.items():
            app.router.add_post(path, _answering_api_errors(work))
        app.router.add_get(FAKE_IMAGES_PATH + "/{name}", self._handle_picture)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model}", self._handle_model)
        app.router.add_get(REALTIME_PATH, self.realtime.handle)
        self.batches.register(app)
        self.fine_tuning.register(app)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._requested_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ test API

    def enqueue(self, *scripts: Scripted) -> None:
        """Queue scripted answers (FIFO); each model request consumes one."""
        with self._lock:
            self._queue.extend(scripts)

    def withdraw_model(self, model: str) -> None:
        """Answer requests for ``model`` as the real API answers an unknown or retired one:
        404 ``model_not_found``."""
        with self._lock:
            self._withdrawn_models.add(model)

    def enqueue_transcript(self, *texts: str) -> None:
        """Queue transcripts (FIFO); each successful transcription returns the next one
        instead of what it heard (the audio is still decoded and validated)."""
        with self._lock:
            self._transcripts.extend(texts)

    def reset(self) -> None:
        """Clear queued scripts and transcripts, every record and the id counters."""
        with self._lock:
            self._queue.clear()
            self._transcripts.clear()
            self.requests.clear()
            self.transcriptions.clear()
            self.speeches.clear()
            self.images.clear()
            self._pictures.clear()
            self._call_counter = 0
            self._speech_counter = 0
        self.realtime.reset()
        self.batches.reset()
        self.fine_tuning.reset()

    def model_requests(self) -> list[RecordedRequest]:
        """Recorded ``/v1/responses`` and ``/v1/chat/completions`` requests, in order."""
        with self._lock:
            return [r for r in self.requests if r.path in MODEL_PATHS]

    def images_seen(self, request: RecordedRequest | None = None) -> list[SeenImage]:
        """Images that reached a model: of one recorded request, or of all of them in order."""
        if request is not None:
            return list(request.images)
        with self._lock:
            return [image for r in self.requests for image in r.images]

    def all_request_text(self) -> str:
        """Every recorded request as text (request line, headers, JSON body or form fields
        and file names), for asserting that something never reached OpenAI."""
        with self._lock:
            return "\n\n".join(r.as_text() for r in self.requests)

    @property
    def pending_transcripts(self) -> int:
        """Number of queued transcripts."""
        with self._lock:
            return len(self._transcripts)

    @property
    def pending(self) -> int:
        """Number of scripts still queued."""
        with self._lock:
            return len(self._queue)

    def _batch_answer(self, prompt: str) -> str:
        """A batch request's answer: as a synchronous call without a script answers."""
        return self.default_reply(prompt) if self.default_reply is not None else _echo(prompt, 0)

    def _pop_script(self) -> Scripted | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _next_call_id(self) -> str:
        with self._lock:
            self._call_counter += 1
            return f"call_{self._call_counter}"

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[_REQUEST_ID_KEY] = _hex_id("req_", 16)
        body: dict[str, object] | None = None
        form: _Form | None = None
        too_large: _ApiError | None = None
        try:
            if request.content_type == "multipart/form-data":
                form = await self._read_form(request)
            else:
                raw = await request.read() if request.body_exists else b""
                if raw:
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                    if isinstance(parsed, dict):
                        body = parsed
        except web.HTTPRequestEntityTooLarge:
            read = request.content_length or _CLIENT_MAX_SIZE + 1
            too_large = _ApiError(
                413,
                f"Maximum content size limit ({_CLIENT_MAX_SIZE}) exceeded ({read} bytes read)",
                type_="server_error",
            )
        request[_BODY_KEY] = body
        request[_FORM_KEY] = form
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=form.recorded_body() if form is not None else body,
            query=request.query_string,
            files=tuple(form.files) if form is not None else (),
        )
        request[_RECORD_KEY] = record
        with self._lock:
            self.requests.append(record)
        if too_large is not None:
            return too_large.response()
        if request.path.startswith(FAKE_FILES_PREFIX):
            return await handler(request)  # served like a CDN: no API key
        auth = request.headers.get("Authorization")
        if auth != f"Bearer {self.api_key}":
            if not auth or not auth.startswith("Bearer ") or not auth[7:].strip():
                body_401 = _error_body(_MISSING_KEY_MESSAGE, "invalid_request_error")
                return _json_response(body_401, status=401)
            message = (
                f"Incorrect API key provided: {_mask_key(auth[7:].strip())}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
            return _json_response(
                _error_body(message, "invalid_request_error", code="invalid_api_key"), status=401
            )
        return await handler(request)

    @staticmethod
    async def _read_form(request: web.Request) -> _Form | None:
        """Parse a multipart body (``None`` if malformed); too-large bodies raise 413.

        The whole body is read, then split on its boundary here: aiohttp's streaming part
        reader warns (deprecated ``unread_data``) when a boundary straddles two chunks.
        """
        raw = await request.read()
        match = re.search(r'boundary="?([^";]+)"?', request.headers.get(hdrs.CONTENT_TYPE, ""))
        if match is None:
            return None
        return _parse_form(raw, match.group(1).encode("latin-1"))

    async def _on_response_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        request_id = request.get(_REQUEST_ID_KEY)
        response.headers.setdefault("x-request-id", request_id or _hex_id("req_", 16))
        response.headers.setdefault("openai-version", "2020-10-01")
        response.headers.setdefault("openai-organization", "org-fake")
        response.headers.setdefault("openai-processing-ms", "1")

    @staticmethod
    async def _cut_at(request: web.Request, sse: _SSEWriter, plan: _Plan, sent: int) -> None:
        """Drop the connection once ``sent`` text deltas went out, if the script says so."""
        if plan.cut_after is None or sent != plan.cut_after:
            return
        await sse.flush()
        if request.transport is not None:
            request.transport.abort()
        raise _Aborted

    async def _idle(self, request: web.Request, seconds: float | None) -> None:
        """Wait ``seconds`` (forever if ``None``).

        Raises :class:`_Aborted` as soon as the client disconnects or the server stops.
        """
        stopping = self._stopping
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            if (stopping is not None and stopping.is_set()) or _client_gone(request):
                raise _Aborted
            if deadline is None:
                step = _POLL_INTERVAL
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                step = min(_POLL_INTERVAL, remaining)
            await asyncio.sleep(step)

    # ------------------------------------------------------------------ simple routes

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        message = f"Invalid URL ({request.method} {request.path})"
        return _json_response(_error_body(message, "invalid_request_error"), status=404)

    def _model_object(self, model: str) -> dict[str, object]:
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}

    async def _handle_models(self, request: web.Request) -> web.Response:
        names = self.offered
        if names is None:
            names = [*self.shutdowns, *(m for m in self.context_limits if m not in self.shutdowns)]
        data = [self._model_object(m) for m in names if not self.retired(m)]
        return _json_response({"object": "list", "data": data})

    async def _handle_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if self.retired(model):
            return _model_not_found(model).response()
        return _json_response(self._model_object(model))

    # ------------------------------------------------------------------ model lifecycle

    def retired(self, model: str) -> bool:
        """Whether ``model`` has shut down by :attr:`today`."""
        shutdown = self.shutdowns.get(model)
        return self.today is not None and shutdown is not None and shutdown <= self.today

    @web.middleware
    async def _refuse_retired(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer any request naming a shut-down model as OpenAI does: 404 model_not_found."""
        body, form = request[_BODY_KEY], request[_FORM_KEY]
        model = body.get("model") if body is not None else None
        if form is not None:
            model = form.text("model")
        if isinstance(model, str) and self.retired(model):
            return _model_not_found(model).response()
        return await handler(request)

    # ------------------------------------------------------------------ model routes

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_model_request(request, "responses")

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_model_request(request, "chat")

    async def _handle_model_request(self, request: web.Request, api: str) -> web.StreamResponse:
        body = request[_BODY_KEY]
        if body is None:
            return _json_response(
                _error_body(_BAD_JSON_MESSAGE, "invalid_request_error"), status=400
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _json_response(
                _error_body(
                    "Missing required parameter: 'model'.",
                    "invalid_request_error",
                    "model",
                    "missing_required_parameter",
                ),
                status=400,
            )
        if api == "chat" and not isinstance(body.get("messages"), list):
            return _json_response(
                _error_body(
                    "Missing required parameter: 'messages'.",
                    "invalid_request_error",
                    "messages",
                    "missing_required_parameter",
                ),
                status=400,
            )

        if model in self._withdrawn_models:
            return _model_not_found(model).response()
        if model.startswith("ft:") and not self.fine_tuning.knows(model):
            return _model_not_found(model).response()
        try:
            has_images = bool(_request_images(api, body))
            seen = await asyncio.to_thread(_inspect_images, api, body) if has_images else []
        except _ApiError as error:
            return error.response()
        request[_RECORD_KEY].images.extend(seen)
        input_tokens = _tokens(_input_chars(api, body)) + sum(i.tokens for i in seen)
        limit = self.context_limits.get(model)
        if limit is not None and input_tokens > limit:
            return self._context_error(api, limit, input_tokens)

        try:
            output_limit = _output_limit(api, body)
        except _ApiError as error:
            return error.response()
        script = self._pop_script()
        if script is not None and script.error is not None:
            return self._scripted_error(api, script, model, input_tokens)

        plan = self._plan(api, body, model, script, input_tokens, output_limit)
        if body.get("stream") is True:
            response = await self._start_sse(request)
            try:
                if api == "responses":
                    await self._stream_responses(request, response, body, plan)
                else:
                    await self._stream_chat(request, response, body, plan)
                await response.write_eof()
            except (_Aborted, ConnectionError):
                pass  # client went away or server stopping; aiohttp finishes the response
            return response
        try:
            if plan.hang:
                await self._idle(request, None)
            delay = plan.chunk_delay * max(0, len(plan.pieces) - 1)
            if delay > 0:
                await self._idle(request, delay)
        except _Aborted:
            return web.Response(status=499)
        if api == "responses":
            return _json_response(
                self._response_object(body, plan, completed=True, created_at=int(time.time()))
            )
        return _json_response(self._chat_completion(plan))

    def _plan(
        self,
        api: str,
        body: dict[str, object],
        model: str,
        script: Scripted | None,
        input_tokens: int,
        output_limit: int | None = None,
    ) -> _Plan:
        if script is None:
            user_text = _last_user_text(api, body)
            images = len(_message_images(api, _last_user_message(api, body)))
            text = (
                self.default_reply(user_text)
                if self.default_reply is not None
                else _echo(user_text, images)
            )
            script = Scripted(text=text)
        calls = [
            _ToolCall(
                name=name,
                arguments=_dumps(arguments),
                call_id=self._next_call_id(),
                item_id=_hex_id("fc_"),
            )
            for name, arguments in script.tool_calls
        ]
        if script.usage is not None:
            in_tok, cached, out_tok = script.usage
        else:
            in_tok, cached = input_tokens, 0
            out_tok = _tokens(len(script.text)) + sum(_tokens(len(c.arguments)) for c in calls)
        text = script.text
        incomplete = output_limit is not None and out_tok > output_limit
        if output_limit is not None and incomplete:
            # As the API does: generation stops at the limit, which is what is billed.
            text, calls = _cut_output(text, calls, output_limit)
            out_tok = output_limit
        return _Plan(
            model=model,
            text=text,
            pieces=_split_text(text, script.chunks),
            tool_calls=calls,
            input_tokens=in_tok,
            cached_tokens=cached,
            output_tokens=out_tok,
            chunk_delay=script.chunk_delay,
            hang=script.hang,
            incomplete=incomplete,
            cut_after=script.cut_after,
        )

    # ------------------------------------------------------------------ errors

    def _context_error(self, api: str, limit: int, tokens: int) -> web.Response:
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {tokens} tokens. Please reduce the length of the messages."
        )
        param = "messages" if api == "chat" else "input"
        return _json_response(
            _error_body(message, "invalid_request_error", param, "context_length_exceeded"),
            status=400,
        )

    def _scripted_error(
        self, api: str, script: Scripted, model: str, input_tokens: int
    ) -> web.Response:
        kind = script.error
        if kind == "rate_limit":
            wait = script.retry_after if script.retry_after is not None else 1.0
            message = (
                f"Rate limit reached for {model} in organization org-fake on requests per min "
                "(RPM): Limit 3, Used 3, Requested 1. "
                f"Please try again in {_format_seconds(wait)}s. "
                "Visit https://platform.openai.com/account/rate-limits to learn more."
            )
            headers = {
                "x-ratelimit-limit-requests": "3",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{_format_seconds(wait)}s",
            }
            if script.retry_after is not None:
                headers["retry-after"] = _format_seconds(script.retry_after)
                headers["retry-after-ms"] = str(round(script.retry_after * 1000))
            if script.retry_after_raw is not None:
                headers["retry-after"] = headers["retry-after-ms"] = script.retry_after_raw
            return _json_response(
                _error_body(message, "requests", code="rate_limit_exceeded"),
                status=429,
                headers=headers,
            )
        if kind == "insufficient_quota":
            message = _QUOTA_MESSAGE
            return _json_response(
                _error_body(message, "insufficient_quota", code="insufficient_quota"), status=429
            )
        if kind == "context_length_exceeded":
            limit = self.context_limits.get(model, _DEFAULT_CONTEXT_LIMIT)
            return self._context_error(api, limit, max(input_tokens, limit + 1))
        if kind == "server_error":
            return _json_response(_error_body(_SERVER_ERROR_MESSAGE, "server_error"), status=500)
        message = (
            "Invalid value for 'temperature': decimal above maximum value. Expected a value <= 2, "
            "but got 3 instead."
        )
        return _json_response(
            _error_body(message, "invalid_request_error", "temperature"), status=400
        )

    # ------------------------------------------------------------------ Responses API

    def _responses_usage(self, plan: _Plan) -> dict[str, object]:
        return {
            "input_tokens": plan.input_tokens,
            "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": plan.input_tokens + plan.output_tokens,
        }

    @staticmethod
    def _text_part(text: str) -> dict[str, object]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    @staticmethod
    def _message_item(
        item_id: str, text: str | None, *, incomplete: bool = False
    ) -> dict[str, object]:
        done = text is not None
        status = ("incomplete" if incomplete else "completed") if done else "in_progress"
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "content": [FakeOpenAI._text_part(text)] if text is not None else [],
            "role": "assistant",
        }

    @staticmethod
    def _function_item(call: _ToolCall, *, done: bool) -> dict[str, object]:
        return {
            "id": call.item_id,
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "arguments": call.arguments if done else "",
            "call_id": call.call_id,
            "name": call.name,
        }

    def _final_output(self, plan: _Plan, message_id: str | None) -> list[dict[str, object]]:
        output: list[dict[str, object]] = []
        if message_id is not None:
            output.append(self._message_item(message_id, plan.text, incomplete=plan.incomplete))
        output.extend(self._function_item(c, done=True) for c in plan.tool_calls)
        return output

    @staticmethod
    def _has_message(plan: _Plan) -> bool:
        return bool(plan.text) or not plan.tool_calls

    def _response_object(
        self,
        body: dict[str, object],
        plan: _Plan,
        *,
        completed: bool,
        created_at: int,
        response_id: str | None = None,
        message_id: str | None = None,
    ) -> dict[str, object]:
        if completed and message_id is None and self._has_message(plan):
            message_id = _hex_id("msg_")
        text_config = body.get("text")
        if not isinstance(text_config, dict):
            text_config = {"format": {"type": "text"}, "verbosity": "medium"}
        reasoning = body.get("reasoning")
        if not isinstance(reasoning, dict):
            reasoning = {"effort": None, "summary": None}
        metadata = body.get("metadata")
        parallel = body.get("parallel_tool_calls")
        tools = body.get("tools")
        cut = completed and plan.incomplete
        status = ("incomplete" if cut else "completed") if completed else "in_progress"
        return {
            "id": response_id or _hex_id("resp_"),
            "object": "response",
            "created_at": created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if completed and not cut else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": plan.model,
            "output": self._final_output(plan, message_id) if completed else [],
            "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": reasoning,
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": text_config,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools if isinstance(tools, list) else [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self._responses_usage(plan) if completed else None,
            "user": body.get("user"),
            "metadata": metadata if isinstance(metadata, dict) else {},
        }

    async def _start_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        return response

    async def _stream_responses(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: dict[str, object],
        plan: _Plan,
    ) -> None:
        sse = _SSEWriter(response, named=True)
        seq = 0

        def emit(payload: dict[str, Any]) -> None:
            nonlocal seq
            payload["sequence_number"] = seq
            seq += 1
            sse.add(payload)

        first_delta = True

        async def before_delta() -> None:
            nonlocal first_delta
            if first_delta:
                first_delta = False
            elif plan.chunk_delay > 0:
                await sse.flush()
                await self._idle(request, plan.chunk_delay)

        response_id = _hex_id("resp_")
        created_at = int(time.time())
        skeleton = self._response_object(
            body, plan, completed=False, created_at=created_at, response_id=response_id
        )
        emit({"type": "response.created", "response": skeleton})
        if plan.hang:
            await sse.flush()
            await self._idle(request, None)
        emit({"type": "response.in_progress", "response": skeleton})

        output_index = 0
        message_id: str | None = None
        if self._has_message(plan):
            message_id = _hex_id("msg_")
            emit(
                {
                    "type": "response.output_item.added",
                    "output_index": output_index,
                    "item": self._message_item(message_id, None),
                }
            )
            emit(
                {
                    "type": "response.content_part.added",
                    "item_id": message_id,
                    "output_index": output_index,
                    "content_index": 0,
                    "part": self._text_part(""),
                }
            )
            for sent, piece in enumerate(plan.pieces):
                await self._cut_at(request, sse, plan, sent)
                await before_delta()
                emit(
                    {
                        "type": "response.output_text.delta",
                        "item_id": message_id,
                        "output_index": output_index,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    }
                )
            await self._cut_at(request, sse, plan, len(plan.pieces))
            emit(
                {
                    "type": "response.output_text.done",
                    "item_id": message_id,
                    "output_index": output_index,
                    "content_index": 0,
                    "text": plan.text,
                    "logprobs": [],
                }
            )
            emit(
                {
                    "type": "response.content_part.done",
                    "item_id": message_id,
                    "output_index": output_index,
                    "content_index": 0,
                    "part": self._text_part(plan.text),
                }
            )
            emit(
                {
                    "type": "response.output_item.done",
                    "output_index": output_index,
                    "item": self._message_item(message_id, plan.text, incomplete=plan.incomplete),
                }
            )
            output_index += 1

        for call in plan.tool_calls:
            emit(
                {
                    "type": "response.output_item.added",
                    "output_index": output_index,
                    "item": self._function_item(call, done=False),
                }
            )
            for piece in _split_default(call.arguments):
                await before_delta()
                emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": call.item_id,
                        "output_index": output_index,
                        "delta": piece,
                    }
                )
            emit(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": call.item_id,
                    "output_index": output_index,
                    "arguments": call.arguments,
                }
            )
            emit(
                {
                    "type": "response.output_item.done",
                    "output_index": output_index,
                    "item": self._function_item(call, done=True),
                }
            )
            output_index += 1

        final = self._response_object(
            body,
            plan,
            completed=True,
            created_at=created_at,
            response_id=response_id,
            message_id=message_id,
        )
        emit(
            {
                "type": "response.incomplete" if plan.incomplete else "response.completed",
                "response": final,
            }
        )
        await sse.flush()

    # ------------------------------------------------------------------ Chat Completions API

    def _chat_usage(self, plan: _Plan) -> dict[str, object]:
        return {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.input_tokens + plan.output_tokens,
            "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _chat_completion(self, plan: _Plan) -> dict[str, object]:
        message: dict[str, object] = {
            "role": "assistant",
            "content": plan.text if plan.text or not plan.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in plan.tool_calls
            ]
        return {
            "id": _hex_id("chatcmpl-", 15),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(plan),
                }
            ],
            "usage": self._chat_usage(plan),
            "service_tier": "default",
            "system_fingerprint": _SYSTEM_FINGERPRINT,
        }

    async def _stream_chat(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: dict[str, object],
        plan: _Plan,
    ) -> None:
        sse = _SSEWriter(response, named=False)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        completion_id = _hex_id("chatcmpl-", 15)
        created = int(time.time())

        def chunk(delta: dict[str, object], finish_reason: str | None = None) -> None:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": plan.model,
                "service_tier": "default",
                "system_fingerprint": _SYSTEM_FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                payload["usage"] = None
            sse.add(payload)

        first_delta = True

        async def before_delta() -> None:
            nonlocal first_delta
            if first_delta:
                first_delta = False
            elif plan.chunk_delay > 0:
                await sse.flush()
                await self._idle(request, plan.chunk_delay)

        content: str | None = "" if plan.text or not plan.tool_calls else None
        chunk({"role": "assistant", "content": content, "refusal": None})
        if plan.hang:
            await sse.flush()
            await self._idle(request, None)
        for sent, piece in enumerate(plan.pieces):
            await self._cut_at(request, sse, plan, sent)
            await before_delta()
            chunk({"content": piece})
        await self._cut_at(request, sse, plan, len(plan.pieces))
        for index, call in enumerate(plan.tool_calls):
            await before_delta()
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _split_default(call.arguments):
                await before_delta()
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        chunk({}, _finish_reason(plan))
        if include_usage:
            sse.add(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": plan.model,
                    "service_tier": "default",
                    "system_fingerprint": _SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": self._chat_usage(plan),
                }
            )
        sse.add_raw("[DONE]")
        await sse.flush()

    # ------------------------------------------------------------------ audio: transcriptions

    async def _transcribe(self, form: _Form | None) -> web.Response:
        if form is None:
            raise _missing("model")
        uploads = form.file("file")
        upload = uploads[0] if uploads else None
        if upload is not None and upload.size > AUDIO_UPLOAD_LIMIT:
            raise _ApiError(
                413,
                f"Maximum content size limit ({AUDIO_UPLOAD_LIMIT}) exceeded "
                f"({upload.size} bytes read)",
                type_="server_error",
            )
        model = form.text("model")
        if not model:
            raise _missing("model")
        if upload is None:
            raise _missing("file")
        if model not in _TRANSCRIPTION_MODELS:
            raise _model_not_found(model)
        response_format = form.text("response_format") or "json"
        if response_format not in _TRANSCRIPTION_FORMATS:
            raise _invalid_value("response_format", response_format, _TRANSCRIPTION_FORMATS)
        if model != _WHISPER and response_format not in ("json", "text"):
            raise _ApiError(
                400,
                f"response_format '{response_format}' is not compatible with model '{model}'. "
                "Use 'json' or 'text' instead.",
                param="response_format",
                code="unsupported_value",
            )
        language = form.text("language")
        if language is not None and not re.fullmatch(r"[a-z]{2}", language):
            raise _ApiError(
                400,
                f"Invalid language '{language}'. Language parameter must be specified in "
                "ISO-639-1 format.",
                param="language",
                code="invalid_language_format",
            )
        temperature = form.text("temperature")
        if temperature is not None:
            _number_in_range("temperature", temperature, 0.0, 1.0)
        filename = upload.filename or ""
        extension = filename.rpartition(".")[2].lower() if "." in filename else ""
        if extension not in AUDIO_EXTENSIONS:
            raise _ApiError(
                400, f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}"
            )

        pcm = await asyncio.to_thread(_decode_audio, upload.data, extension)
        if pcm is None:
            raise _ApiError(400, _CORRUPTED_AUDIO_MESSAGE, param="file", code="invalid_value")
        duration, regions = await asyncio.to_thread(_tone_regions, pcm)
        if duration < _MIN_AUDIO_SECONDS:
            raise _ApiError(
                400,
                f"Audio file is too short. Minimum audio length is {_MIN_AUDIO_SECONDS} seconds.",
                param="file",
                code="audio_too_short",
            )
        with self._lock:
            scripted = self._transcripts.popleft() if self._transcripts else None
        if scripted is not None:
            segments = [(0.0, round(duration, 2), scripted)] if scripted else []
        else:
            segments = [(r.start, r.end, r.word) for r in regions]
        text = scripted if scripted is not None else " ".join(r.word for r in regions)
        with self._lock:
            self.transcriptions.append(TranscriptionRecord(model, filename, duration, text))

        if response_format == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if response_format in ("srt", "vtt"):
            vtt = response_format == "vtt"
            return web.Response(
                text=_subtitles(segments, vtt=vtt), content_type="text/vtt" if vtt else "text/plain"
            )
        if model != _WHISPER:
            audio_tokens = math.ceil(duration * _AUDIO_TOKENS_PER_SECOND)
            text_tokens = _tokens(len(form.text("prompt") or ""))
            output_tokens = _tokens(len(text))
            usage: dict[str, object] = {
                "type": "tokens",
                "input_tokens": audio_tokens + text_tokens,
                "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + text_tokens + output_tokens,
            }
            return _json_response({"text": text, "usage": usage})
        usage = {"type": "duration", "seconds": math.ceil(duration)}
        if response_format == "json":
            return _json_response({"text": text, "usage": usage})
        verbose: dict[str, object] = {
            "task": "transcribe",
            "language": _LANGUAGE_NAMES.get(language or "en", language or "english"),
            "duration": round(duration, 2),
            "text": text,
            "segments": [
                {
                    "id": index,
                    "seek": 0,
                    "start": start,
                    "end": end,
                    "text": f" {words}",
                    "tokens": list(range(50364, 50364 + len(words.split()))),
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }
                for index, (start, end, words) in enumerate(segments)
            ],
            "usage": usage,
        }
        if "word" in form.texts("timestamp_granularities[]"):
            verbose["words"] = [
                {"word": word, "start": start, "end": end}
                for start, end, words in segments
                for word in words.split()
            ]
        return _json_response(verbose)

    # ------------------------------------------------------------------ audio: speech

    async def _speak(self, body: dict[str, object]) -> web.Response:
        model = _optional_str(body, "model")
        if not model:
            raise _missing("model")
        if model not in _SPEECH_MODELS:
            raise _model_not_found(model)
        text = _optional_str(body, "input")
        if text is None:
            raise _missing("input")
        _string_length("input", text, SPEECH_INPUT_LIMIT)
        voice = body.get("voice")
        if voice is None:
            raise _missing("voice")
        if voice not in VOICES:
            raise _invalid_value("voice", voice, VOICES)
        response_format = _optional_str(body, "response_format") or "mp3"
        if response_format not in _SPEECH_FORMATS:
            raise _invalid_value("response_format", response_format, tuple(_SPEECH_FORMATS))
        speed = body.get("speed")
        rate = 1.0 if speed is None else _number_in_range("speed", speed, 0.25, 4.0)
        if body.get("instructions") and model.startswith("tts-1"):
            raise _unsupported_parameter("instructions")
        stream_format = body.get("stream_format")
        if stream_format not in (None, "audio"):
            if stream_format != "sse":
                raise _invalid_value("stream_format", stream_format, ("sse", "audio"))
            raise _ApiError(
                400,
                f"stream_format 'sse' is not supported for {model} by this fake.",
                param="stream_format",
                code="unsupported_value",
            )
        seconds = round(
            max(_MIN_SPEECH_SECONDS, len(text) / self.speech_chars_per_second / rate), 3
        )
        with self._lock:
            frequency = 220 + 110 * (self._speech_counter % 8)
            self._speech_counter += 1
        audio = await asyncio.to_thread(_synthesize_speech, frequency, seconds, response_format)
        with self._lock:
            self.speeches.append(SpeechRecord(model, str(voice), response_format, text, seconds))
        return web.Response(body=audio, content_type=_SPEECH_FORMATS[response_format][0])

    # ------------------------------------------------------------------ images

    def _image_model(self, value: object, *, edits: bool) -> _ImageModel:
        if value is None or value == "":
            return _IMAGE_MODELS[_DEFAULT_IMAGE_MODEL]
        if not isinstance(value, str):
            raise _invalid_type("model", "a string", value)
        spec = _IMAGE_MODELS.get(value)
        if spec is None:
            raise _model_not_found(value)
        if edits and not spec.edits:
            raise _ApiError(
                400,
                f"Invalid value: '{value}'. Value must be 'dall-e-2' or a GPT image model.",
                param="model",
                code="invalid_value",
            )
        return spec

    def _image_options(
        self, spec: _ImageModel, options: dict[str, object]
    ) -> tuple[str, str, int, str | None]:
        """Validate the options shared by generations and edits.

        Returns ``(size, quality, n, response_format)`` with ``auto`` left unresolved.
        """
        response_format = options.get("response_format")
        if spec.gpt_image:
            if response_format is not None:
                raise _unknown_parameter("response_format")
        else:
            for name in _GPT_IMAGE_ONLY:
                if options.get(name) is not None:
                    raise _unknown_parameter(name)
            if response_format is not None and response_format not in ("url", "b64_json"):
                raise _invalid_value("response_format", response_format, ("url", "b64_json"))
        n_value = options.get("n")
        n = 1 if n_value is None else _integer_in_range("n", n_value, 1, spec.max_n)
        size = options.get("size") or ("auto" if spec.gpt_image else "1024x1024")
        if size not in spec.sizes:
            raise _invalid_value("size", size, spec.sizes)
        quality = options.get("quality") or spec.default_quality
        if quality not in spec.qualities:
            raise _invalid_value("quality", quality, spec.qualities)
        style = options.get("style")
        if style is not None:
            if spec.name != "dall-e-3":
                raise _unknown_parameter("style")
            if style not in ("vivid", "natural"):
                raise _invalid_value("style", style, ("vivid", "natural"))
        if spec.gpt_image:
            output_format = options.get("output_format") or "png"
            if output_format not in _GPT_IMAGE_FORMATS:
                raise _invalid_value("output_format", output_format, tuple(_GPT_IMAGE_FORMATS))
            background = options.get("background") or "auto"
            if background not in ("transparent", "opaque", "auto"):
                raise _invalid_value("background", background, ("transparent", "opaque", "auto"))
            if background == "transparent" and output_format == "jpeg":
                raise _ApiError(
                    400,
                    "Transparent background is not supported for the jpeg output format. "
                    "Use png or webp.",
                    param="background",
                    code="invalid_value",
                )
        return str(size), str(quality), n, None if response_format is None else str(response_format)

    @staticmethod
    def _check_prompt(spec: _ImageModel, prompt: object, request_id: str) -> str:
        if prompt is None:
            raise _missing("prompt")
        if not isinstance(prompt, str):
            raise _invalid_type("prompt", "a string", prompt)
        _string_length("prompt", prompt, spec.max_prompt)
        if _FORBIDDEN_RE.search(prompt):
            if spec.gpt_image:
                raise _ApiError(
                    400,
                    _GPT_IMAGE_SAFETY_MESSAGE.format(request_id=request_id),
                    type_="image_generation_user_error",
                    code="moderation_blocked",
                )
            raise _ApiError(
                400,
                _DALL_E_SAFETY_MESSAGE,
                type_="image_generation_user_error",
                code="content_policy_violation",
            )
        return prompt

    def _store_picture(self, request: web.Request, data: bytes, extension: str) -> str:
        """Keep a picture to serve under ``/v1/_fake/images/`` and return its URL."""
        name = f"img-{secrets.token_hex(12)}.{extension}"
        with self._lock:
            self._pictures[name] = (f"image/{extension}", data)
        return f"http://127.0.0.1:{self.port}{FAKE_IMAGES_PATH}/{name}"

    def _images_answer(
        self,
        request: web.Request,
        spec: _ImageModel,
        pictures: list[bytes],
        options: dict[str, object],
        *,
        size: str,
        quality: str,
        response_format: str | None,
        prompt: str,
        input_image_tokens: int = 0,
    ) -> web.Response:
        answer: dict[str, object] = {"created": int(time.time())}
        items: list[dict[str, object]] = []
        for picture in pictures:
            item: dict[str, object] = {}
            if spec.gpt_image or response_format == "b64_json":
                item["b64_json"] = base64.b64encode(picture).decode()
            else:
                item["url"] = self._store_picture(request, picture, "png")
            if spec.name == "dall-e-3":
                item["revised_prompt"] = f"A detailed picture of: {prompt}"
            items.append(item)
        answer["data"] = items
        if spec.gpt_image:
            background = options.get("background") or "auto"
            text_tokens = _tokens(len(prompt))
            output_tokens = len(pictures) * _IMAGE_OUTPUT_TOKENS[quality][size]
            answer.update(
                {
                    "background": "transparent" if background == "transparent" else "opaque",
                    "output_format": options.get("output_format") or "png",
                    "quality": quality,
                    "size": size,
                    "usage": {
                        "input_tokens": text_tokens + input_image_tokens,
                        "input_tokens_details": {
                            "text_tokens": text_tokens,
                            "image_tokens": input_image_tokens,
                        },
                        "output_tokens": output_tokens,
                        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
                        "total_tokens": text_tokens + input_image_tokens + output_tokens,
                    },
                }
            )
        return _json_response(answer)

    async def _generate_images(self, request: web.Request, body: dict[str, object]) -> web.Response:
        if body.get("prompt") is None:
            raise _missing("prompt")
        spec = self._image_model(body.get("model"), edits=False)
        size, quality, n, response_format = self._image_options(spec, body)
        prompt = self._check_prompt(spec, body.get("prompt"), request[_REQUEST_ID_KEY])
        if spec.gpt_image:
            size = "1024x1024" if size == "auto" else size
            quality = "high" if quality == "auto" else quality
        fmt = (
            _GPT_IMAGE_FORMATS[str(body.get("output_format") or "png")] if spec.gpt_image else "PNG"
        )
        transparent = body.get("background") == "transparent"
        pictures = [
            await asyncio.to_thread(
                _draw_picture, size, f"{prompt}#{index}", fmt, transparent=transparent
            )
            for index in range(n)
        ]
        with self._lock:
            self.images.append(ImageRecord("generations", spec.name, prompt, size, quality))
        return self._images_answer(
            request,
            spec,
            pictures,
            body,
            size=size,
            quality=quality,
            response_format=response_format,
            prompt=prompt,
        )

    async def _edit_images(self, request: web.Request, form: _Form | None) -> web.Response:
        if form is None:
            raise _missing("image")
        uploads = form.file("image", "image[]")
        if not uploads:
            raise _missing("image")
        if form.text("prompt") is None:
            raise _missing("prompt")
        spec = self._image_model(form.text("model"), edits=True)
        options: dict[str, object] = {
            k: v[0] for k, v in form.fields.items() if v and k not in ("model", "prompt")
        }
        size, quality, n, response_format = self._image_options(spec, options)
        prompt = self._check_prompt(spec, form.text("prompt"), request[_REQUEST_ID_KEY])
        sizes = await asyncio.to_thread(self._check_edit_inputs, spec, uploads, form.file("mask"))
        if spec.gpt_image:
            size = _auto_edit_size(*sizes[0]) if size == "auto" else size
            quality = "high" if quality == "auto" else quality
        fmt = (
            _GPT_IMAGE_FORMATS[str(options.get("output_format") or "png")]
            if spec.gpt_image
            else "PNG"
        )
        pictures = [
            await asyncio.to_thread(_edit_picture, uploads[0].data, size, fmt) for _ in range(n)
        ]
        image_tokens = sum(_vision_tokens(w, h, "high") for w, h in sizes)
        with self._lock:
            self.images.append(ImageRecord("edits", spec.name, prompt, size, quality))
        return self._images_answer(
            request,
            spec,
            pictures,
            options,
            size=size,
            quality=quality,
            response_format=response_format,
            prompt=prompt,
            input_image_tokens=image_tokens if spec.gpt_image else 0,
        )

    @staticmethod
    def _check_edit_inputs(
        spec: _ImageModel, uploads: list[RecordedFile], masks: list[RecordedFile]
    ) -> list[tuple[int, int]]:
        """Validate the input images (and mask) as the API does; returns their sizes.

        Blocking (Pillow): run it in a worker thread.
        """
        limit = _GPT_IMAGE_MAX_INPUTS if spec.gpt_image else 1
        if len(uploads) > limit:
            raise _ApiError(
                400,
                f"Invalid 'image': too many images. Expected at most {limit} for {spec.name}, "
                f"but got {len(uploads)}.",
                param="image",
                code="invalid_value",
            )
        sizes: list[tuple[int, int]] = []
        for number, upload in enumerate(uploads, start=1):
            bad = _ApiError(
                400,
                f"Invalid image file or mode for image {number}, please check your image file.",
                param="image",
                code="invalid_image_file",
            )
            image = _open_image(upload.data)
            if image is None:
                raise bad
            if spec.gpt_image:
                if (
                    image.format not in _GPT_IMAGE_EDIT_FORMATS
                    or upload.size >= _GPT_IMAGE_EDIT_LIMIT
                ):
                    raise bad
            else:
                if (
                    image.format != "PNG"
                    or upload.size >= _DALL_E_2_EDIT_LIMIT
                    or image.width != image.height
                ):
                    raise bad
                if image.mode not in _DALL_E_2_EDIT_MODES:
                    raise _ApiError(
                        400,
                        f"Invalid input image - format must be in {list(_DALL_E_2_EDIT_MODES)}, "
                        f"got {image.mode}.",
                        param="image",
                        code="invalid_image_file",
                    )
            sizes.append(image.size)
        for mask_upload in masks[:1]:
            mask = _open_image(mask_upload.data)
            if mask is None or mask.format != "PNG":
                raise _ApiError(
                    400,
                    "Invalid mask image file, please check your mask file.",
                    param="mask",
                    code="invalid_image_file",
                )
            if mask.size != sizes[0]:
                raise _ApiError(
                    400,
                    "Invalid mask image - mask size must match the size of the image.",
                    param="mask",
                    code="invalid_value",
                )
        return sizes

    async def _handle_picture(self, request: web.Request) -> web.Response:
        with self._lock:
            stored = self._pictures.get(request.match_info["name"])
        if stored is None:
            return await self._handle_not_found(request)
        content_type, data = stored
        return web.Response(body=data, content_type=content_type)


# --------------------------------------------------------------------------- standalone


def _answering_api_errors(work: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
    """A route handler that answers an ``_ApiError`` raised by ``work`` as the API would."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await work(request)
        except _ApiError as error:
            return error.response()

    return handle


def _json_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object, or the API's 400 for a body that is not one."""
    body = request[_BODY_KEY]
    if body is None:
        raise _ApiError(400, _BAD_JSON_MESSAGE)
    return body


def _parse_form(raw: bytes, boundary: bytes) -> _Form | None:
    """The fields and files of a ``multipart/form-data`` body, or None if it is malformed."""
    delimiter = b"--" + boundary
    sections = raw.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        return None
    form = _Form()
    for section in sections[1:-1]:
        if not section.startswith(b"\r\n") or not section.endswith(b"\r\n"):
            return None
        head, separator, content = section[2:-2].partition(b"\r\n\r\n")
        if not separator:
            return None
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _disposition_param(disposition, "name") or ""
        filename = _disposition_param(disposition, "filename")
        if filename is None:
            form.fields.setdefault(name, []).append(content.decode("utf-8", "replace"))
            continue
        form.files.append(
            RecordedFile(
                name=name,
                filename=filename,
                content_type=headers.get("content-type", "application/octet-stream"),
                size=len(content),
                data=bytes(content),
            )
        )
    return form


def _disposition_param(disposition: str, key: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{key}="((?:[^"\\]|\\.)*)"', disposition)
    if match is None:
        match = re.search(rf"(?:^|;)\s*{key}=([^;\s]+)", disposition)
    return match.group(1).replace('\\"', '"') if match else None


def _parse_limit(value: str) -> tuple[str, int]:
    model, sep, limit = value.rpartition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=TOKENS, got {value!r}")
    return model, int(limit)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.openai_server", description=__doc__
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0 = pick a free one)"
    )
    parser.add_argument(
        "--api-key", default="sk-test", help="accepted bearer token (default: sk-test)"
    )
    parser.add_argument(
        "--context-limit",
        action="append",
        type=_parse_limit,
        default=[],
        metavar="MODEL=TOKENS",
        help="context window for a model (repeatable)",
    )
    parser.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="the fake's date: models shut down by then answer 404 model_not_found",
    )
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    limits: list[tuple[str, int]] = args.context_limit
    fake = FakeOpenAI(
        api_key=args.api_key, port=args.port, context_limits=dict(limits), today=args.today
    )
    with fake:
        print(f"FAKE_OPENAI {fake.base_url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
