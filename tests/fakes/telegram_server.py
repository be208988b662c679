"""A fake Telegram Bot API server speaking the real wire format.

The fake listens on ``127.0.0.1`` (in a background thread with its own event loop) so that
the real python-telegram-bot can be pointed at it::

    Bot(token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot")

It keeps the state a bot can observe (updates, chats and their messages, files, webhook,
commands) and enforces Telegram's limits: text and caption lengths in UTF-16 units, HTML
parse mode validated like TDLib, "message is not modified", per-chat and global flood
control with ``retry_after``, the 20 MB ``getFile`` limit.  Replies use Telegram's shapes,
``{"ok": true, "result": ...}`` and ``{"ok": false, "error_code": N, "description": ...}``.

Run ``python -m tests.fakes.telegram_server --port 8081`` to serve it in the foreground; it
prints ``FAKE_TELEGRAM <url>`` once listening.  A standalone fake is driven over HTTP
through ``POST /_fake/update``, ``POST /_fake/private_message`` and inspected with
``GET /_fake/chat/<chat_id>`` (fake-only routes, not part of the Bot API).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import copy
import enum
import json
import math
import mimetypes
import re
import secrets
import signal
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from tests.fakes.background import BackgroundLoop

__all__ = [
    "REGISTERED_SECRET",
    "EntityParseError",
    "FakeTelegram",
    "RecordedCall",
    "RecordedFile",
    "SentMessage",
    "main",
    "parse_html",
]

JSONDict = dict[str, Any]

MAX_TEXT_LENGTH: Final = 4096
"""Longest message text, in UTF-16 code units after entity parsing."""
MAX_CAPTION_LENGTH: Final = 1024
"""Longest media caption, in UTF-16 code units after entity parsing."""
MAX_DOWNLOAD_SIZE: Final = 20 * 1024 * 1024
"""Largest file ``getFile`` hands out."""
MAX_UPLOAD_SIZE: Final = 50 * 1024 * 1024
"""Largest multipart upload accepted."""
MAX_CALLBACK_DATA: Final = 64
"""Longest ``callback_data`` of an inline button, in bytes."""

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"

_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_POLL_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_BAD_UNICODE: Final = (
    "Text contains invalid Unicode characters after decoding HTML entities, "
    "check for unmatched surrogate code units"
)
_TOKEN_RE: Final = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_SECRET_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_RE: Final = re.compile(r"^[a-z0-9_]{1,32}$")
_MENTION_RE: Final = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b")
_COMMAND_TEXT_RE: Final = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z][A-Za-z0-9_]{3,31})?")
_SPACES: Final = " \t\r\n\v\f"
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

_CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_OPT_IN_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
"""Update types only delivered when ``allowed_updates`` names them explicitly."""

_JSON_FIELDS: Final = frozenset(
    {
        "allowed_updates",
        "caption_entities",
        "commands",
        "entities",
        "link_preview_options",
        "media",
        "reply_markup",
        "reply_parameters",
        "scope",
    }
)
_INT_FIELDS: Final = frozenset(
    {
        "cache_time",
        "draft_id",
        "duration",
        "height",
        "limit",
        "max_connections",
        "message_id",
        "message_thread_id",
        "offset",
        "reply_to_message_id",
        "timeout",
        "width",
    }
)
_BOOL_FIELDS: Final = frozenset(
    {
        "allow_sending_without_reply",
        "disable_content_type_detection",
        "disable_notification",
        "disable_web_page_preview",
        "drop_pending_updates",
        "has_spoiler",
        "protect_content",
        "show_alert",
    }
)

_FLOOD_METHODS: Final = frozenset(
    {
        "sendMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "sendPhoto",
        "sendDocument",
        "sendVoice",
        "sendAudio",
        "sendMessageDraft",
    }
)
"""Methods counted by flood control (chat actions, polling and deletes are not)."""

_WEBHOOK_RETRY_SECONDS: Final = 0.2
_POLL_LIMIT: Final = 100
_HTTP_OK_MAX: Final = 299


class _Registered(enum.Enum):
    SECRET = "registered"


REGISTERED_SECRET: Final = _Registered.SECRET
"""Default of ``deliver_webhook(secret=...)``: send the secret registered with setWebhook."""


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str
    content: bytes


@dataclass(frozen=True)
class RecordedCall:
    """One Bot API request, in arrival order.

    ``params`` holds query, form, JSON and multipart fields merged; JSON-serialised fields
    (``reply_markup``, ``entities``, ``commands``...) are decoded, numeric ids are ints,
    booleans are bools, and uploaded parts are :class:`RecordedFile` under their field name.
    """

    method: str
    params: JSONDict
    time: float


@dataclass(frozen=True)
class SentMessage:
    """A message the bot has in a chat, as the chat shows it now (after edits)."""

    message_id: int
    kind: str
    """``text``, ``photo``, ``document``, ``voice`` or ``audio``."""
    text: str
    """Visible text (or caption) after entity parsing."""
    html: str | None
    """The raw ``text``/``caption`` parameter of the last send or edit."""
    parse_mode: str | None
    entities: list[JSONDict]
    reply_markup: JSONDict | None
    thread_id: int | None
    edits: int
    reply_to_message_id: int | None
    file_id: str | None
    file_name: str | None
    date: int


class EntityParseError(ValueError):
    """Why Telegram rejects formatted text (the part after ``can't parse entities: ``)."""


# --------------------------------------------------------------------------- text helpers


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(markup: str, index: int) -> int:
    return len(markup[:index].encode())


def _decode_entity(markup: str, pos: int) -> tuple[str, int] | None:
    """Decode the HTML entity at ``markup[pos] == "&"`` as TDLib does.

    Returns the character and the index after the entity, or ``None`` when ``&`` starts
    no supported entity (TDLib then keeps the ``&`` literally).
    """
    n = len(markup)
    end = pos + 1
    if end < n and markup[end] == "#":
        end += 1
        hexadecimal = end < n and markup[end] == "x"
        if hexadecimal:
            end += 1
        start = end
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        while end < n and markup[end] in digits:
            end += 1
        value = int(markup[start:end], 16 if hexadecimal else 10) if end > start else 0
        if value == 0 or value >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(value)
    else:
        start = end
        while end < n and markup[end].isascii() and markup[end].isalpha():
            end += 1
        named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(markup[start:end])
        if named is None:
            return None
        char = named
    if end < n and markup[end] == ";":
        end += 1
    return char, end


def _normalize_url(url: str) -> str | None:
    """The URL Telegram stores for a text link, or ``None`` when it drops the link."""
    url = url.strip()
    if not url or any(c.isspace() for c in url):
        return None
    if url.startswith("tg://"):
        return url
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if not parts.netloc:
        return None
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, parts.fragment)
    )


_TAG_TYPES: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "a": "text_link",
}
_ENTITY_PRIORITY: Final = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
}


@dataclass
class _OpenTag:
    tag: str
    argument: str
    utf16_start: int
    text_start: int


class _HtmlParser:
    """TDLib's HTML parse mode: decoded text plus entities, or :class:`EntityParseError`."""

    def __init__(self, markup: str, *, strict: bool) -> None:
        self.markup = markup
        self.strict = strict
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[JSONDict] = []

    def fail(self, message: str) -> EntityParseError:
        return EntityParseError(message)

    def at(self, index: int) -> int:
        return _byte_offset(self.markup, index)

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.utf16 += _utf16_len(text)

    def parse(self) -> tuple[str, list[JSONDict]]:
        markup, n, i = self.markup, len(self.markup), 0
        while i < n:
            char = markup[i]
            if char == "&":
                decoded = _decode_entity(markup, i)
                if decoded is not None:
                    value, i = decoded
                    if 0xD800 <= ord(value) <= 0xDFFF:
                        raise self.fail(_BAD_UNICODE)
                    self.emit(value)
                    continue
                if self.strict:
                    raise self.fail(
                        f'Unsupported HTML entity or bare "&" at byte offset {self.at(i)}'
                    )
            if char != "<":
                self.emit(char)
                i += 1
            elif i + 1 < n and markup[i + 1] == "/":
                i = self.end_tag(i)
            else:
                i = self.start_tag(i)
        if self.stack:
            raise self.fail(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].tag}"'
            )
        for entity in self.entities:
            entity.pop("_language", None)
        self.entities.sort(
            key=lambda e: (e["offset"], -e["length"], _ENTITY_PRIORITY.get(e["type"], 50))
        )
        return "".join(self.out), self.entities

    def skip_spaces(self, i: int) -> int:
        while i < len(self.markup) and self.markup[i] in _SPACES:
            i += 1
        return i

    def start_tag(self, begin: int) -> int:
        markup, n = self.markup, len(self.markup)
        i = begin + 1
        while i < n and markup[i] not in _SPACES and markup[i] != ">":
            i += 1
        if i >= n:
            raise self.fail(f"Unclosed start tag at byte offset {self.at(begin)}")
        tag = markup[begin + 1 : i].lower()
        if tag not in _TAG_TYPES:
            raise self.fail(f'Unsupported start tag "{tag}" at byte offset {self.at(begin)}')
        attributes: dict[str, str] = {}
        while True:
            i = self.skip_spaces(i)
            if i >= n:
                raise self.fail(f"Unclosed start tag at byte offset {self.at(begin)}")
            if markup[i] == ">":
                break
            name_start = i
            while i < n and markup[i] not in _SPACES and markup[i] not in "=>":
                i += 1
            name = markup[name_start:i].lower()
            if not name:
                raise self.fail(
                    f'Empty attribute name in the tag "{tag}" at byte offset {self.at(begin)}'
                )
            i = self.skip_spaces(i)
            if i >= n or markup[i] != "=":
                attributes.setdefault(name, "")
                continue
            i = self.skip_spaces(i + 1)
            if i >= n:
                raise self.fail(f'Unclosed start tag "{tag}" at byte offset {self.at(begin)}')
            value, i = self.attribute_value(begin, i)
            attributes.setdefault(name, value)
        argument = ""
        if tag == "a":
            argument = attributes.get("href", "")
        elif tag == "code" and attributes.get("class", "").startswith("language-"):
            argument = attributes["class"].removeprefix("language-")
        elif tag == "span":
            if attributes.get("class") != "tg-spoiler":
                raise self.fail(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {self.at(begin)}'
                )
        elif tag == "blockquote" and "expandable" in attributes:
            argument = "expandable"
        self.stack.append(_OpenTag(tag, argument, self.utf16, len(self.out)))
        return i + 1

    def attribute_value(self, begin: int, i: int) -> tuple[str, int]:
        markup, n = self.markup, len(self.markup)
        if markup[i] not in "\"'":
            token_start = i
            while i < n and ((markup[i].isascii() and markup[i].isalnum()) or markup[i] in ".-"):
                i += 1
            if i >= n or (markup[i] not in _SPACES and markup[i] != ">"):
                raise self.fail(
                    f"Unexpected end of name token at byte offset {self.at(token_start)}"
                )
            return markup[token_start:i].lower(), i
        quote = markup[i]
        i += 1
        parts: list[str] = []
        while i < n and markup[i] != quote:
            if markup[i] == "&":
                decoded = _decode_entity(markup, i)
                if decoded is not None:
                    parts.append(decoded[0])
                    i = decoded[1]
                    continue
            parts.append(markup[i])
            i += 1
        if i >= n:
            raise self.fail(f"Unclosed start tag at byte offset {self.at(begin)}")
        return "".join(parts), i + 1

    def end_tag(self, begin: int) -> int:
        markup, n = self.markup, len(self.markup)
        if not self.stack:
            raise self.fail(f"Unexpected end tag at byte offset {self.at(begin)}")
        i = begin + 2
        while i < n and markup[i] not in _SPACES and markup[i] != ">":
            i += 1
        end_name = markup[begin + 2 : i].lower()
        i = self.skip_spaces(i)
        if i >= n or markup[i] != ">":
            raise self.fail(f"Unclosed end tag at byte offset {self.at(begin)}")
        open_tag = self.stack.pop()
        if end_name and end_name != open_tag.tag:
            raise self.fail(
                f"Unmatched end tag at byte offset {self.at(begin)}, "
                f'expected "</{open_tag.tag}>", found "</{end_name}>"'
            )
        self.close(open_tag)
        return i + 1

    def close(self, open_tag: _OpenTag) -> None:
        offset, length = open_tag.utf16_start, self.utf16 - open_tag.utf16_start
        if length == 0:
            return
        kind = _TAG_TYPES[open_tag.tag]
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and (last["offset"], last["length"]) == (offset, length)
        entity: JSONDict = {"type": kind, "offset": offset, "length": length}
        if kind == "text_link":
            url = _normalize_url(open_tag.argument or "".join(self.out[open_tag.text_start :]))
            if url is None:
                return
            entity["url"] = url
        elif kind == "blockquote" and open_tag.argument:
            entity["type"] = "expandable_blockquote"
        elif kind == "code" and open_tag.argument:
            if last is not None and same_span and last["type"] == "pre":
                last.setdefault("language", open_tag.argument)
                return
            entity["_language"] = open_tag.argument
        elif kind == "pre" and last is not None and same_span and last["type"] == "code":
            language = last.get("_language")
            if language:
                self.entities.pop()
                entity["language"] = language
        self.entities.append(entity)


def parse_html(markup: str, *, strict: bool = True) -> tuple[str, list[JSONDict]]:
    """Parse Telegram HTML into the visible text and Bot API ``MessageEntity`` dicts.

    Follows TDLib: tags ``b strong i em u ins s strike del span.tg-spoiler tg-spoiler a
    code pre blockquote``, nesting, ``</>`` closing the innermost tag, ``pre > code
    class="language-x"``, only ``&lt; &gt; &amp; &quot;`` and numeric entities.  Offsets
    and lengths are UTF-16 code units; error offsets are UTF-8 byte offsets.

    With ``strict`` (the default) an ``&`` that starts no supported entity is an error, as
    the Bot API documentation demands; real Telegram (``strict=False``) keeps it literally.

    Raises:
        EntityParseError: with TDLib's wording, e.g. ``Unsupported start tag "p" at byte
            offset 0``.
    """
    return _HtmlParser(markup, strict=strict).parse()


def _auto_entities(text: str) -> list[JSONDict]:
    """The entities Telegram detects in a user's plain text: a leading command, mentions."""
    entities: list[JSONDict] = []
    command = _COMMAND_TEXT_RE.match(text)
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command[0])})
    for mention in _MENTION_RE.finditer(text):
        if command and mention.start() < command.end():
            continue
        entities.append(
            {
                "type": "mention",
                "offset": _utf16_len(text[: mention.start()]),
                "length": _utf16_len(mention[0]),
            }
        )
    return entities


# --------------------------------------------------------------------------- media helpers


def _image_size(content: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG, GIF or WebP image, or ``None`` for anything else."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return int(width), int(height)
    if content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
        return int(width), int(height)
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return 512, 512
    if content.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 <= len(content):
            if content[i] != 0xFF:
                return None
            marker = content[i + 1]
            (segment,) = struct.unpack(">H", content[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", content[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + int(segment)
        return 512, 512
    return None


def _ogg_duration(content: bytes) -> int | None:
    """Seconds of an Ogg/Opus stream (last page's granule position at 48 kHz)."""
    if not content.startswith(b"OggS"):
        return None
    last = content.rfind(b"OggS")
    if last < 0 or last + 14 > len(content):
        return None
    (granule,) = struct.unpack("<q", content[last + 6 : last + 14])
    return max(0, math.ceil(int(granule) / 48_000))


def _file_path_for(kind: str, number: int, content: bytes, file_name: str | None) -> str:
    folder = {
        "photo": "photos",
        "voice": "voice",
        "audio": "music",
        "video_note": "video_notes",
    }.get(kind, "documents")
    if file_name and "." in file_name:
        extension = file_name.rsplit(".", 1)[1].lower()
    elif content.startswith(b"OggS"):
        extension = "oga"
    elif content.startswith(b"\x89PNG"):
        extension = "png"
    elif content.startswith(b"\xff\xd8"):
        extension = "jpg"
    else:
        extension = "bin"
    return f"{folder}/file_{number}.{extension}"


# --------------------------------------------------------------------------- internal state


class _ApiError(Exception):
    """A Bot API error reply."""

    def __init__(
        self,
        code: int,
        description: str,
        *,
        retry_after: int | None = None,
        chat_key: int | str | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.chat_key = chat_key


def _bad_request(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


class _TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else math.inf

    def take(self) -> None:
        self.tokens -= 1


class _SlidingWindow:
    """At most ``count`` calls in any ``seconds`` (how "N a minute" and "N a second" read)."""

    def __init__(self, count: float, seconds: float) -> None:
        self.count = count
        self.seconds = seconds
        self.times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        if len(self.times) < self.count:
            return 0.0
        return self.times[0] + self.seconds - now

    def take(self, now: float) -> None:
        self.times.append(now)


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    content: bytes
    size: int
    path: str


@dataclass
class _Message:
    """A message in a chat: the Bot API object plus what the fake needs to know about it."""

    data: JSONDict
    from_bot: bool
    kind: str = "text"
    html: str | None = None
    parse_mode: str | None = None
    edits: int = 0
    file_id: str | None = None
    file_name: str | None = None

    @property
    def message_id(self) -> int:
        return int(self.data["message_id"])

    @property
    def text(self) -> str:
        return str(self.data.get("text", self.data.get("caption", "")))

    @property
    def entities(self) -> list[JSONDict]:
        key = "entities" if self.kind == "text" else "caption_entities"
        return list(self.data.get(key, []))


@dataclass
class _Chat:
    chat_id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    username: str | None = None
    is_forum: bool = False
    last_message_id: int = 0
    messages: dict[int, _Message] = field(default_factory=dict)
    bucket: _TokenBucket | None = None
    minute: _SlidingWindow | None = None  # a group's messages in the last minute
    blocked_until: float = 0.0

    def as_dict(self) -> JSONDict:
        data: JSONDict = {"id": self.chat_id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or "User"
            if self.username:
                data["username"] = self.username
        else:
            data["title"] = self.title or f"Group {self.chat_id}"
            if self.is_forum:
                data["is_forum"] = True
        return data

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id


@dataclass
class _Failure:
    code: int
    description: str
    retry_after: int | None


@dataclass
class _Webhook:
    url: str = ""
    secret: str | None = None
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None


def _coerce(name: str, value: Any) -> Any:
    """Normalise one request parameter the way the Bot API reads it."""
    if isinstance(value, str):
        if name in _JSON_FIELDS:
            try:
                return json.loads(value)
            except ValueError:
                return value
        if name in _INT_FIELDS or name in ("chat_id", "user_id"):
            try:
                return int(value)
            except ValueError:
                return value
        if name in _BOOL_FIELDS:
            return value.lower() in ("true", "1")
    return value


_FILES_PARAM: Final = "\x00files"
"""Where a handler finds the request's uploaded parts (never a real parameter name)."""


# --------------------------------------------------------------------------- the server


class FakeTelegram:
    """A fake Telegram Bot API on 127.0.0.1, served from a background thread.

    Use ``with FakeTelegram() as fake`` (or :meth:`start`/:meth:`stop`), point
    python-telegram-bot at ``f"{fake.url}/bot"`` and ``f"{fake.url}/file/bot"``, drive it
    with :meth:`private_message`, :meth:`group_message`, the media builders
    (:meth:`photo_message` with albums, :meth:`voice_message`, :meth:`audio_message`,
    :meth:`video_note_message`, :meth:`document_message`), :meth:`callback_query` and
    :meth:`push_update`, and inspect :attr:`calls`, :meth:`chat` and :attr:`rate_limited`.
    All public methods are safe to call from any thread.

    Chats are created on first use: a positive id is a private chat, ``-100…`` a
    supergroup, another negative id a basic group.  While a webhook is set, queued updates
    are POSTed to it one at a time (with the secret header) and dropped once it answers 2xx.
    HTTP webhook URLs are accepted (Telegram itself wants HTTPS).  Parse mode ``HTML`` is
    validated like TDLib; ``Markdown``/``MarkdownV2`` are rejected with a 400 saying the
    fake does not implement them.

    Attributes:
        url: ``http://127.0.0.1:PORT`` while running.
        token: the accepted bot token; other well-formed tokens get 401 Unauthorized.
        bot_id: the numeric part of the token (the bot's user id).
        bot_username: the bot's username, without ``@``.
        calls: every Bot API request, in arrival order.
        rate_limited: ``(method, chat_id)`` of every 429 reply (injected ones included).
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        bot_username: str = "switchboard_test_bot",
        private_rate: float = 1.0,
        private_burst: int = 3,
        group_per_minute: int = 20,
        group_burst: int = 5,
        global_per_second: int = 30,
        port: int = 0,
        strict_html_entities: bool = True,
    ) -> None:
        """Configure the fake; call :meth:`start` (or use ``with``) to serve.

        Flood control is a token bucket per chat: ``private_rate`` messages a second with
        bursts of ``private_burst`` in private chats, ``group_per_minute`` a minute with
        bursts of ``group_burst`` in groups (and no more than ``group_per_minute`` in any
        minute); and no more than ``global_per_second`` in any second over all chats.
        Calls are counted when the fake handles them, as Telegram counts them on arrival.
        ``strict_html_entities=False`` keeps a bare ``&`` literally, as real Telegram does;
        the default rejects it, as the Bot API documentation demands.
        """
        if not _TOKEN_RE.match(token):
            raise ValueError(f"not a bot token: {token!r}")
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.private_rate = private_rate
        self.private_burst = private_burst
        self.group_per_minute = group_per_minute
        self.group_burst = group_burst
        self.global_per_second = global_per_second
        self.strict_html_entities = strict_html_entities
        self.calls: list[RecordedCall] = []
        self._call_counts: Counter[str] = Counter()
        self.rate_limited: list[tuple[str, int | str]] = []
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.RLock()
        self._updates: list[JSONDict] = []
        self._last_update_id = 0
        self._allowed_updates: list[str] = []
        self._poll_generation = 0
        self._chats: dict[int, _Chat] = {}
        self._files: dict[str, _StoredFile] = {}
        self._file_paths: dict[str, _StoredFile] = {}
        self._file_counter = 0
        self._failures: dict[str, deque[_Failure]] = {}
        self._drops: dict[str, int] = {}
        self._holds: dict[str, int] = {}
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._callback_queries: dict[str, bool] = {}
        self._webhook = _Webhook()
        self._global_window = _SlidingWindow(global_per_second, 1.0)
        self._methods: dict[str, tuple[str, Callable[[JSONDict], Awaitable[Any]]]] = {}
        for name, handler in self._method_table().items():
            self._methods[name.lower()] = (name, handler)
        self._background: BackgroundLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._webhook_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeTelegram:
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
            raise RuntimeError("FakeTelegram is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; PTB wants ``f"{url}/bot"`` and ``f"{url}/file/bot"``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeTelegram:
        """Start serving in a background thread; returns ``self`` once listening."""
        if self._background is not None:
            raise RuntimeError("FakeTelegram is already running")
        self._background = BackgroundLoop("FakeTelegram", self._astart)
        self._loop = self._background.loop
        return self

    def stop(self) -> None:
        """Stop serving: end pending long polls and webhook deliveries, join the thread."""
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
        self._wake = asyncio.Event()
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        app.router.add_post("/_fake/update", self._handle_fake_update)
        app.router.add_post("/_fake/private_message", self._handle_fake_private_message)
        app.router.add_post("/_fake/private_messages", self._handle_fake_private_messages)
        app.router.add_get("/_fake/chat/{chat_id}", self._handle_fake_chat)
        app.router.add_get("/_fake/calls", self._handle_fake_calls)
        app.router.add_get("/_fake/flood_log", self._handle_fake_flood_log)
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
        self._wake_now()
        task = self._webhook_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._webhook_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _wake_now(self) -> None:
        """Wake long polls and the webhook worker (on the server loop)."""
        event = self._wake
        if event is not None:
            self._wake = asyncio.Event()
            event.set()

    def _wake_soon(self) -> None:
        """Schedule :meth:`_wake_now` from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_now)

    # ------------------------------------------------------------------ driving the bot

    def push_update(self, update: JSONDict) -> int:
        """Queue an update for getUpdates (or webhook delivery); returns its ``update_id``.

        An ``update_id`` is assigned when missing.  A message in the update is also stored
        in its chat, so that later replies to it and edits refer to a known message.
        """
        update = copy.deepcopy(update)
        with self._lock:
            if "update_id" in update:
                update_id = int(update["update_id"])
                self._last_update_id = max(self._last_update_id, update_id)
            else:
                self._last_update_id += 1
                update_id = self._last_update_id
                update["update_id"] = update_id
            self._observe_incoming(update)
            self._updates.append(update)
            self._updates.sort(key=lambda u: int(u["update_id"]))
        self._wake_soon()
        return update_id

    def private_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        reply_to: int | None = None,
        entities: list[JSONDict] | None = None,
    ) -> JSONDict:
        """Push a user's text message in a private chat; returns the Update.

        ``user_id`` defaults to ``chat_id`` and ``username`` to ``user<id>``.  Without
        ``entities``, a leading ``/command`` and ``@mentions`` get Telegram's entities.
        """
        uid = chat_id if user_id is None else user_id
        with self._lock:
            chat = self._chat(chat_id, "private")
            chat.username = chat.username or username or f"user{uid}"
            message = self._user_message(
                chat, uid, username, reply_to=reply_to, thread_id=None, reply_to_bot=False
            )
        message["text"] = text
        found = _auto_entities(text) if entities is None else entities
        if found:
            message["entities"] = found
        return self._push_message(message)

    def group_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int,
        username: str | None = None,
        thread_id: int | None = None,
        reply_to_bot: bool = False,
        reply_to: int | None = None,
        mention: bool = False,
        entities: list[JSONDict] | None = None,
        title: str | None = None,
    ) -> JSONDict:
        """Push a user's text message in a supergroup; returns the Update.

        ``thread_id`` makes it a forum-topic message (``is_topic_message``,
        ``message_thread_id``); like Telegram, a topic message that replies to nothing
        carries the topic's creation message as ``reply_to_message``.  ``reply_to_bot``
        replies to the bot's latest message there (or a fresh one), ``reply_to`` to a given
        message.  ``mention`` prefixes the text with ``@bot_username``; commands and
        ``@mentions`` get Telegram's entities unless ``entities`` is given.
        """
        if mention:
            text = f"@{self.bot_username} {text}"
        with self._lock:
            chat = self._chat(chat_id, "supergroup")
            if title:
                chat.title = title
            if thread_id is not None:
                chat.is_forum = True
            message = self._user_message(
                chat,
                user_id,
                username,
                reply_to=reply_to,
                thread_id=thread_id,
                reply_to_bot=reply_to_bot,
            )
        message["text"] = text
        found = _auto_entities(text) if entities is None else entities
        if found:
            message["entities"] = found
        return self._push_message(message)

    def photo_message(
        self,
        chat_id: int,
        content: bytes,
        *,
        user_id: int | None = None,
        caption: str | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
        reply_to_bot: bool = False,
        media_group_id: str | None = None,
        file_size: int | None = None,
    ) -> JSONDict:
        """Push a user's photo (registered for getFile) in a chat; returns the Update.

        Like Telegram, ``photo`` lists sizes smallest first; both sizes download the bytes
        given here.  Photos sharing a ``media_group_id`` form an album (one update each,
        usually only one with a caption).  ``file_size`` overrides the size reported (and
        checked by getFile) for the largest size.  A caption gets Telegram's entities.
        """
        width, height = _image_size(content) or (512, 512)
        thumb_scale = min(1.0, 90 / max(width, height, 1))
        sizes = []
        for scale in (thumb_scale, 1.0):
            stored = self._store_file(content, "photo", None)
            if scale == 1.0 and file_size is not None:
                stored.size = file_size
            sizes.append(
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "file_size": stored.size,
                    "width": max(1, round(width * scale)),
                    "height": max(1, round(height * scale)),
                }
            )
        message = self._media_message(chat_id, user_id, thread_id, reply_to, reply_to_bot)
        message["photo"] = sizes
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        self._set_caption(message, caption)
        return self._push_message(message)

    def voice_message(
        self,
        chat_id: int,
        content: bytes,
        *,
        user_id: int | None = None,
        duration: int | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
        reply_to_bot: bool = False,
        file_size: int | None = None,
    ) -> JSONDict:
        """Push a user's voice note (registered for getFile) in a chat; returns the Update.

        ``duration`` defaults to the Ogg/Opus length of ``content`` (or 1 second);
        ``file_size`` overrides the size reported (and checked by getFile).
        """
        stored = self._store_file(content, "voice", None)
        if file_size is not None:
            stored.size = file_size
        message = self._media_message(chat_id, user_id, thread_id, reply_to, reply_to_bot)
        message["voice"] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "duration": duration if duration is not None else (_ogg_duration(content) or 1),
            "mime_type": "audio/ogg",
        }
        return self._push_message(message)

    def document_message(
        self,
        chat_id: int,
        content: bytes,
        *,
        file_name: str,
        mime_type: str | None = None,
        user_id: int | None = None,
        caption: str | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
        file_size: int | None = None,
    ) -> JSONDict:
        """Push a user's file (registered for getFile) in a chat; returns the Update.

        ``file_size`` overrides the size reported (and checked by getFile).
        """
        stored = self._store_file(content, "document", file_name)
        if file_size is not None:
            stored.size = file_size
        message = self._media_message(chat_id, user_id, thread_id, reply_to)
        message["document"] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_name": file_name,
            "mime_type": mime_type
            or mimetypes.guess_type(file_name)[0]
            or "application/octet-stream",
        }
        self._set_caption(message, caption)
        return self._push_message(message)

    def audio_message(
        self,
        chat_id: int,
        content: bytes,
        *,
        file_name: str,
        duration: int = 1,
        mime_type: str | None = None,
        user_id: int | None = None,
        caption: str | None = None,
        thread_id: int | None = None,
    ) -> JSONDict:
        """Push a user's music file (``audio``, registered for getFile); returns the Update."""
        stored = self._store_file(content, "audio", file_name)
        message = self._media_message(chat_id, user_id, thread_id, None)
        message["audio"] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "duration": duration,
            "file_name": file_name,
            "mime_type": mime_type or mimetypes.guess_type(file_name)[0] or "audio/mpeg",
        }
        self._set_caption(message, caption)
        return self._push_message(message)

    def video_note_message(
        self,
        chat_id: int,
        content: bytes,
        *,
        duration: int = 1,
        length: int = 240,
        user_id: int | None = None,
        thread_id: int | None = None,
    ) -> JSONDict:
        """Push a user's round video note (registered for getFile); returns the Update."""
        stored = self._store_file(content, "video_note", None)
        message = self._media_message(chat_id, user_id, thread_id, None)
        message["video_note"] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "duration": duration,
            "length": length,
        }
        return self._push_message(message)

    def callback_query(self, chat_id: int, message_id: int, data: str, *, user_id: int) -> JSONDict:
        """Push a press of an inline button on one of the bot's messages; returns the Update."""
        with self._lock:
            chat = self._chats.get(chat_id)
            target = chat.messages.get(message_id) if chat else None
            if chat is None or target is None:
                raise ValueError(f"no message {message_id} in chat {chat_id}")
            query_id = str(secrets.randbits(62))
            self._callback_queries[query_id] = False
            update = {
                "callback_query": {
                    "id": query_id,
                    "from": self._user(user_id, None),
                    "message": copy.deepcopy(target.data),
                    "chat_instance": str(abs(chat_id) * 7919 + self.bot_id),
                    "data": data,
                }
            }
        self.push_update(update)
        return update

    def deliver_webhook(
        self, update: JSONDict, *, secret: str | _Registered | None = REGISTERED_SECRET
    ) -> int:
        """POST ``update`` to the webhook URL now; returns the HTTP status (0: unreachable).

        The secret header carries the registered secret, ``secret`` when a string is given,
        or nothing when ``secret`` is ``None``.  This blocks the calling thread, so it
        refuses to run inside an event loop (the receiver may live there): use
        :meth:`deliver_webhook_async` from async code.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("deliver_webhook blocks; use await deliver_webhook_async()")
        return self._submit(self._post_once(update, secret)).result(timeout=30)

    async def deliver_webhook_async(
        self, update: JSONDict, *, secret: str | _Registered | None = REGISTERED_SECRET
    ) -> int:
        """Like :meth:`deliver_webhook`, awaitable from any event loop."""
        return await asyncio.wrap_future(self._submit(self._post_once(update, secret)))

    def add_file(
        self, content: bytes, *, file_id: str | None = None, file_size: int | None = None
    ) -> str:
        """Register a file for getFile and download; returns its ``file_id``.

        ``file_size`` overrides the reported size (e.g. to claim more than 20 MB).
        """
        stored = self._store_file(content, "document", None, file_id=file_id)
        if file_size is not None:
            stored.size = file_size
        return stored.file_id

    def fail_next(
        self, method: str, error_code: int, description: str, *, retry_after: int | None = None
    ) -> None:
        """Answer the next call of ``method`` with this error (queued per method, FIFO)."""
        with self._lock:
            self._failures.setdefault(method.lower(), deque()).append(
                _Failure(error_code, description, retry_after)
            )

    def drop_next(self, method: str, *, times: int = 1) -> None:
        """Drop the connection of the next ``times`` calls of ``method`` without answering
        (a network fault between the bot and Telegram); the call is recorded, not made."""
        with self._lock:
            self._drops[method.lower()] = self._drops.get(method.lower(), 0) + times

    def hold_next(self, method: str) -> None:
        """Make the next call of ``method`` (the message is sent) but keep its answer until
        the client goes away or the fake stops: a bot killed while Telegram answers."""
        with self._lock:
            self._holds[method.lower()] = self._holds.get(method.lower(), 0) + 1

    # ------------------------------------------------------------------ inspecting

    def calls_to(self, method: str) -> list[RecordedCall]:
        """Recorded calls of one method (case-insensitive), in order."""
        wanted = method.lower()
        with self._lock:
            return [c for c in self.calls if c.method.lower() == wanted]

    def chat(self, chat_id: int) -> list[SentMessage]:
        """The bot's messages in a chat as they are now (edited ones updated, deleted gone)."""
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                return []
            return [self._snapshot(m) for _, m in sorted(chat.messages.items()) if m.from_bot]

    def pending_updates(self) -> list[JSONDict]:
        """Updates queued and not yet confirmed (by offset or webhook delivery)."""
        with self._lock:
            return copy.deepcopy(self._updates)

    def answered_callback_queries(self) -> list[str]:
        """Ids of callback queries the bot has answered."""
        with self._lock:
            return [q for q, answered in self._callback_queries.items() if answered]

    @staticmethod
    def _snapshot(message: _Message) -> SentMessage:
        data = message.data
        markup = data.get("reply_markup")
        reply = data.get("reply_to_message")
        return SentMessage(
            message_id=message.message_id,
            kind=message.kind,
            text=message.text,
            html=message.html,
            parse_mode=message.parse_mode,
            entities=copy.deepcopy(message.entities),
            reply_markup=copy.deepcopy(markup),
            thread_id=data.get("message_thread_id"),
            edits=message.edits,
            reply_to_message_id=reply["message_id"] if reply else None,
            file_id=message.file_id,
            file_name=message.file_name,
            date=int(data["date"]),
        )

    # ------------------------------------------------------------------ state helpers

    def _chat(self, chat_id: int, kind: str | None = None) -> _Chat:
        """The chat with this id, created on first use (caller holds the lock)."""
        chat = self._chats.get(chat_id)
        if chat is None:
            if kind is None:
                if chat_id > 0:
                    kind = "private"
                elif str(chat_id).startswith("-100"):
                    kind = "supergroup"
                else:
                    kind = "group"
            chat = _Chat(chat_id=chat_id, type=kind)
            self._chats[chat_id] = chat
        return chat

    def _user(self, user_id: int, username: str | None) -> JSONDict:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User{user_id}",
            "username": username or f"user{user_id}",
            "language_code": "en",
        }

    def _bot_user(self) -> JSONDict:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Switchboard Test",
            "username": self.bot_username,
        }

    def _user_message(
        self,
        chat: _Chat,
        user_id: int,
        username: str | None,
        *,
        reply_to: int | None,
        thread_id: int | None,
        reply_to_bot: bool,
    ) -> JSONDict:
        """The common part of a user's message (caller holds the lock)."""
        message: JSONDict = {
            "message_id": chat.next_message_id(),
            "from": self._user(user_id, username),
            "chat": chat.as_dict(),
            "date": int(time.time()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        target: JSONDict | None = None
        if reply_to is not None:
            found = chat.messages.get(reply_to)
            if found is None:
                raise ValueError(f"no message {reply_to} in chat {chat.chat_id}")
            target = found.data
        elif reply_to_bot:
            target = self._latest_bot_message(chat, thread_id)
        elif thread_id is not None:
            target = {
                "message_id": thread_id,
                "from": self._user(user_id, username),
                "chat": chat.as_dict(),
                "date": int(time.time()),
                "message_thread_id": thread_id,
                "is_topic_message": True,
                "forum_topic_created": {"name": f"Topic {thread_id}", "icon_color": 7322096},
            }
        if target is not None:
            message["reply_to_message"] = {
                k: copy.deepcopy(v) for k, v in target.items() if k != "reply_to_message"
            }
        return message

    def _latest_bot_message(self, chat: _Chat, thread_id: int | None) -> JSONDict:
        for _, message in sorted(chat.messages.items(), reverse=True):
            if message.from_bot and message.data.get("message_thread_id") == thread_id:
                return message.data
        # The bot has said nothing there: reply to a message it sent before the fake started.
        data: JSONDict = {
            "message_id": chat.next_message_id(),
            "from": self._bot_user(),
            "chat": chat.as_dict(),
            "date": int(time.time()),
            "text": "…",
        }
        if thread_id is not None:
            data["message_thread_id"] = thread_id
            data["is_topic_message"] = True
        return data

    def _media_message(
        self,
        chat_id: int,
        user_id: int | None,
        thread_id: int | None,
        reply_to: int | None,
        reply_to_bot: bool = False,
    ) -> JSONDict:
        with self._lock:
            chat = self._chat(chat_id)
            uid = user_id if user_id is not None else chat_id
            if thread_id is not None:
                chat.is_forum = True
            return self._user_message(
                chat,
                uid,
                None,
                reply_to=reply_to,
                thread_id=thread_id,
                reply_to_bot=reply_to_bot,
            )

    @staticmethod
    def _set_caption(message: JSONDict, caption: str | None) -> None:
        """A media message's caption with the entities Telegram detects in it."""
        if not caption:
            return
        message["caption"] = caption
        found = _auto_entities(caption)
        if found:
            message["caption_entities"] = found

    def _push_message(self, message: JSONDict) -> JSONDict:
        update: JSONDict = {"message": message}
        update["update_id"] = self.push_update(update)
        return update

    def _observe_incoming(self, update: JSONDict) -> None:
        """Store a pushed user message in its chat (caller holds the lock)."""
        for key in ("message", "edited_message", "channel_post"):
            message = update.get(key)
            if not isinstance(message, dict):
                continue
            chat_data = message.get("chat")
            if not isinstance(chat_data, dict) or "message_id" not in message:
                continue
            chat = self._chat(int(chat_data["id"]), chat_data.get("type"))
            message_id = int(message["message_id"])
            chat.last_message_id = max(chat.last_message_id, message_id)
            chat.messages[message_id] = _Message(data=copy.deepcopy(message), from_bot=False)

    def _store_file(
        self, content: bytes, kind: str, file_name: str | None, *, file_id: str | None = None
    ) -> _StoredFile:
        with self._lock:
            self._file_counter += 1
            number = self._file_counter
            stored = _StoredFile(
                file_id=file_id or f"AgAC{secrets.token_urlsafe(24)}",
                file_unique_id=f"AQAD{secrets.token_urlsafe(8)}",
                content=content,
                size=len(content),
                path=_file_path_for(kind, number, content, file_name),
            )
            self._files[stored.file_id] = stored
            self._file_paths[stored.path] = stored
            return stored

    def _submit(self, coro: Coroutine[Any, Any, int]) -> concurrent.futures.Future[int]:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeTelegram is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _reply(result: Any, description: str | None = None) -> web.Response:
        body: JSONDict = {"ok": True, "result": result}
        if description:
            body["description"] = description
        return web.Response(text=_JSON.encode(body), content_type="application/json")

    @staticmethod
    def _error(error: _ApiError) -> web.Response:
        body: JSONDict = {"ok": False, "error_code": error.code, "description": error.description}
        if error.retry_after is not None:
            body["parameters"] = {"retry_after": error.retry_after}
        return web.Response(
            text=_JSON.encode(body), status=error.code, content_type="application/json"
        )

    async def _read_params(self, request: web.Request) -> tuple[JSONDict, dict[str, RecordedFile]]:
        params: JSONDict = dict(request.query)
        files: dict[str, RecordedFile] = {}
        if request.body_exists:
            content_type = request.content_type
            if content_type == "application/json":
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
            elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        files[name] = RecordedFile(
                            filename=value.filename,
                            content_type=value.content_type,
                            content=value.file.read(),
                        )
                    elif isinstance(value, bytes):
                        params[name] = value.decode()
                    else:
                        params[name] = value
        params = {name: _coerce(name, value) for name, value in params.items()}
        return params, files

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        raw_method = request.match_info["method"]
        try:
            params, files = await self._read_params(request)
        except web.HTTPRequestEntityTooLarge:
            return self._error(_ApiError(413, "Request Entity Too Large"))
        entry = self._methods.get(raw_method.lower())
        method = entry[0] if entry else raw_method
        with self._lock:
            self.calls.append(RecordedCall(method, {**params, **files}, time.time()))
            self._call_counts[method] += 1
        if not _TOKEN_RE.match(token):
            return self._error(_ApiError(404, "Not Found"))
        if token != self.token:
            return self._error(_ApiError(401, "Unauthorized"))
        if entry is None:
            return self._error(_ApiError(404, "Not Found"))
        params[_FILES_PARAM] = files
        if self._pop_drop(method) and request.transport is not None:
            request.transport.abort()
            return web.Response(status=502)  # never reaches the client: it is gone
        try:
            failure = self._pop_failure(method)
            if failure is not None:
                raise _ApiError(
                    failure.code,
                    failure.description,
                    retry_after=failure.retry_after,
                    chat_key=params.get("chat_id"),
                )
            result = await entry[1](params)
            if self._pop_hold(method):
                await self._until_gone(request)
        except _ApiError as error:
            if error.code == 429:
                with self._lock:
                    key = error.chat_key if error.chat_key is not None else ""
                    self.rate_limited.append((method, key))
            return self._error(error)
        if isinstance(result, tuple):
            return self._reply(result[0], result[1])
        return self._reply(result)

    def _pop_drop(self, method: str) -> bool:
        with self._lock:
            left = self._drops.get(method.lower(), 0)
            if left:
                self._drops[method.lower()] = left - 1
            return bool(left)

    def _pop_hold(self, method: str) -> bool:
        with self._lock:
            left = self._holds.get(method.lower(), 0)
            if left:
                self._holds[method.lower()] = left - 1
            return bool(left)

    async def _until_gone(self, request: web.Request) -> None:
        stopping = self._stopping
        while not (stopping is not None and stopping.is_set()):
            if request.transport is None or request.transport.is_closing():
                return
            await asyncio.sleep(0.05)

    def _pop_failure(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method.lower())
            return queue.popleft() if queue else None

    async def _handle_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(_ApiError(404, "Not Found"))
        with self._lock:
            stored = self._file_paths.get(request.match_info["path"])
        if stored is None:
            return self._error(_ApiError(404, "Not Found"))
        content_type = mimetypes.guess_type(stored.path)[0] or "application/octet-stream"
        return web.Response(body=stored.content, content_type=content_type)

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        return self._error(_ApiError(404, "Not Found"))

    async def _handle_fake_update(self, request: web.Request) -> web.Response:
        update = await request.json()
        return web.json_response({"update_id": self.push_update(update)})

    async def _handle_fake_private_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        update = self.private_message(
            int(body["chat_id"]), str(body["text"]), user_id=body.get("user_id")
        )
        return web.json_response(update)

    async def _handle_fake_private_messages(self, request: web.Request) -> web.Response:
        """Many private messages at once (a load generator's burst), in the order given."""
        body = await request.json()
        ids = [self.private_message(int(m["chat_id"]), str(m["text"]))["update_id"] for m in body]
        return web.json_response({"update_ids": ids})

    async def _handle_fake_calls(self, request: web.Request) -> web.Response:
        """How many calls each Bot API method has received; with ``method`` and
        ``at_least``, answered once that method has had that many calls (or after
        ``timeout`` seconds, 60 by default), so a load generator need not poll."""
        method = request.query.get("method")
        at_least = int(request.query.get("at_least", "0"))
        deadline = time.monotonic() + float(request.query.get("timeout", "60"))
        while True:
            with self._lock:
                counts = Counter(self._call_counts)
            if method is None or counts[method] >= at_least or time.monotonic() > deadline:
                return web.json_response(dict(counts))
            await asyncio.sleep(0.005)

    async def _handle_fake_flood_log(self, request: web.Request) -> web.Response:
        """The calls flood control counts, as ``[method, chat_id, time]`` in arrival order
        (``time.time()``), and how many were answered 429: for a load generator in another
        process to time the bot's messages."""
        with self._lock:
            calls = [
                [call.method, call.params.get("chat_id"), call.time]
                for call in self.calls
                if call.method in _FLOOD_METHODS
            ]
            refused = len(self.rate_limited)
        return web.json_response({"calls": calls, "rate_limited": refused})

    async def _handle_fake_chat(self, request: web.Request) -> web.Response:
        messages = self.chat(int(request.match_info["chat_id"]))
        return web.json_response([asdict(m) for m in messages])

    # ------------------------------------------------------------------ parameter helpers

    def _method_table(self) -> dict[str, Callable[[JSONDict], Awaitable[Any]]]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendMessageDraft": self._send_message_draft,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendVoice": self._send_voice,
            "sendAudio": self._send_audio,
        }

    def _chat_param(self, params: JSONDict) -> _Chat:
        value = params.get("chat_id")
        if value is None or value == "":
            raise _bad_request("chat_id is empty")
        if not isinstance(value, int):
            raise _bad_request("chat not found")
        return self._chat(value)

    @staticmethod
    def _int_param(params: JSONDict, name: str) -> int | None:
        value = params.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _format(
        self,
        text: Any,
        parse_mode: Any,
        entities: Any,
        *,
        caption: bool,
    ) -> tuple[str, list[JSONDict]]:
        """Visible text and entities of a ``text``/``caption`` parameter, validated."""
        raw = "" if text is None else str(text)
        if parse_mode:
            mode = str(parse_mode).lower()
            if mode == "html":
                try:
                    visible, found = parse_html(raw, strict=self.strict_html_entities)
                except EntityParseError as exc:
                    raise _bad_request(f"can't parse entities: {exc}") from None
            elif mode in ("markdown", "markdownv2"):
                raise _bad_request(f"parse_mode {parse_mode} is not implemented by FakeTelegram")
            else:
                raise _bad_request("unsupported parse_mode")
        else:
            visible = raw
            found = list(entities) if isinstance(entities, list) else []
        limit = MAX_CAPTION_LENGTH if caption else MAX_TEXT_LENGTH
        if _utf16_len(visible) > limit:
            raise _bad_request("message caption is too long" if caption else "message is too long")
        return visible, found

    @staticmethod
    def _validate_markup(markup: Any) -> JSONDict | None:
        """The ``reply_markup`` to echo in the message (inline keyboards only), validated."""
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return None
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad_request("can't parse inline keyboard markup JSON object")
        actions = ("url", "callback_data", "switch_inline_query", "login_url", "pay", "copy_text")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _bad_request("can't parse inline keyboard button: Text must be non-empty")
                data = button.get("callback_data")
                if isinstance(data, str) and not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
                    raise _bad_request("BUTTON_DATA_INVALID")
                if not any(k in button for k in actions) and not any(
                    k.startswith(("switch_inline_query", "web_app", "callback_game"))
                    for k in button
                ):
                    raise _bad_request(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
        return markup

    def _reply_target(self, chat: _Chat, params: JSONDict) -> _Message | None:
        reply = params.get("reply_parameters")
        message_id: int | None
        allow_missing = bool(params.get("allow_sending_without_reply"))
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = allow_missing or bool(reply.get("allow_sending_without_reply"))
        else:
            message_id = self._int_param(params, "reply_to_message_id")
        if message_id is None:
            return None
        target = chat.messages.get(int(message_id))
        if target is None and not allow_missing:
            raise _bad_request("message to be replied not found")
        return target

    def _check_flood(self, method: str, chat: _Chat) -> None:
        """Raise 429 when ``chat`` (or the bot overall) is over its limit; else count one."""
        now = time.monotonic()
        if chat.blocked_until > now:
            wait = max(1, math.ceil(chat.blocked_until - now))
            raise _ApiError(
                429,
                f"Too Many Requests: retry after {wait}",
                retry_after=wait,
                chat_key=chat.chat_id,
            )
        if chat.bucket is None:
            if chat.type == "private":
                chat.bucket = _TokenBucket(self.private_rate, self.private_burst, now)
            else:
                chat.bucket = _TokenBucket(self.group_per_minute / 60, self.group_burst, now)
                chat.minute = _SlidingWindow(self.group_per_minute, 60.0)
        chat_wait = chat.bucket.wait(now)
        if chat.minute is not None:
            chat_wait = max(chat_wait, chat.minute.wait(now))
        if chat_wait > 0:
            wait = max(1, math.ceil(chat_wait))
            chat.blocked_until = now + wait
            raise _ApiError(
                429,
                f"Too Many Requests: retry after {wait}",
                retry_after=wait,
                chat_key=chat.chat_id,
            )
        global_wait = self._global_window.wait(now)
        if global_wait > 0:
            wait = max(1, math.ceil(global_wait))
            raise _ApiError(
                429,
                f"Too Many Requests: retry after {wait}",
                retry_after=wait,
                chat_key=chat.chat_id,
            )
        chat.bucket.take()
        if chat.minute is not None:
            chat.minute.take(now)
        self._global_window.take(now)

    def _new_bot_message(
        self, chat: _Chat, params: JSONDict, target: _Message | None, markup: JSONDict | None
    ) -> JSONDict:
        data: JSONDict = {
            "message_id": chat.next_message_id(),
            "from": self._bot_user(),
            "chat": chat.as_dict(),
            "date": int(time.time()),
        }
        thread_id = self._int_param(params, "message_thread_id")
        if thread_id is not None:
            data["message_thread_id"] = thread_id
            if chat.is_forum:
                data["is_topic_message"] = True
        if target is not None:
            data["reply_to_message"] = {
                k: copy.deepcopy(v) for k, v in target.data.items() if k != "reply_to_message"
            }
        if markup is not None:
            data["reply_markup"] = markup
        return data

    def _find_own_message(self, params: JSONDict, *, action: str) -> tuple[_Chat, _Message]:
        if params.get("inline_message_id"):
            raise _bad_request("MESSAGE_ID_INVALID")
        chat = self._chat_param(params)
        message_id = self._int_param(params, "message_id")
        if message_id is None:
            raise _bad_request("message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None:
            raise _bad_request(f"message to {action} not found")
        if not message.from_bot:
            raise _bad_request(f"message can't be {action}ed")
        return chat, message

    # ------------------------------------------------------------------ methods: bot, updates

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _set_allowed(self, params: JSONDict) -> None:
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(a) for a in allowed]

    def _is_allowed(self, update: JSONDict) -> bool:
        kind = next((k for k in update if k != "update_id"), "")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATES

    def _take_updates(self, limit: int) -> list[JSONDict]:
        """Queued updates the bot accepts; others are dropped (caller holds the lock)."""
        self._updates = [u for u in self._updates if self._is_allowed(u)]
        return copy.deepcopy(self._updates[:limit])

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        offset = self._int_param(params, "offset")
        limit = min(max(self._int_param(params, "limit") or _POLL_LIMIT, 1), _POLL_LIMIT)
        timeout = max(self._int_param(params, "timeout") or 0, 0)
        with self._lock:
            if self._webhook.url:
                raise _ApiError(409, _WEBHOOK_CONFLICT)
            self._set_allowed(params)
            if offset is not None and offset < 0:
                self._updates = self._updates[offset:]
            elif offset is not None:
                self._updates = [u for u in self._updates if int(u["update_id"]) >= offset]
            self._poll_generation += 1
            generation = self._poll_generation
        self._wake_now()  # an older long poll is now terminated
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wake = self._wake
            with self._lock:
                if generation != self._poll_generation:
                    raise _ApiError(409, _POLL_CONFLICT)
                if self._webhook.url:
                    raise _ApiError(409, _WEBHOOK_CONFLICT)
                batch = self._take_updates(limit)
            remaining = deadline - loop.time()
            stopping = self._stopping is not None and self._stopping.is_set()
            if batch or remaining <= 0 or stopping or wake is None:
                return batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)

    # ------------------------------------------------------------------ methods: webhook

    async def _set_webhook(self, params: JSONDict) -> tuple[bool, str]:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and secret != "" and not _SECRET_RE.match(str(secret)):
            raise _bad_request("secret token contains unallowed characters")
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        with self._lock:
            if params.get("drop_pending_updates"):
                self._updates.clear()
            self._set_allowed(params)
            if not url:
                already = not self._webhook.url
                self._webhook = _Webhook()
                return True, "Webhook is already deleted" if already else "Webhook was deleted"
            unchanged = self._webhook.url == url and self._webhook.secret == (secret or None)
            self._webhook.url = url
            self._webhook.secret = str(secret) if secret else None
            self._webhook.max_connections = self._int_param(params, "max_connections") or 40
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._webhook_worker())
        self._wake_now()
        return True, "Webhook is already set" if unchanged else "Webhook was set"

    async def _delete_webhook(self, params: JSONDict) -> tuple[bool, str]:
        with self._lock:
            if params.get("drop_pending_updates"):
                self._updates.clear()
            already = not self._webhook.url
            self._webhook = _Webhook()
        self._wake_now()
        return True, "Webhook is already deleted" if already else "Webhook was deleted"

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        with self._lock:
            hook = self._webhook
            info: JSONDict = {
                "url": hook.url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if hook.url:
                info["max_connections"] = hook.max_connections
                info["ip_address"] = "127.0.0.1"
                if self._allowed_updates:
                    info["allowed_updates"] = list(self._allowed_updates)
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
            return info

    async def _post_update(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secret: str | None,
        update: JSONDict,
    ) -> tuple[int, str | None]:
        """POST one update; returns the status (0 if unreachable) and an error for the info."""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        try:
            async with session.post(
                url,
                data=_JSON.encode(update).encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await response.read()
                if response.status > _HTTP_OK_MAX or response.status < 200:
                    return (
                        response.status,
                        f"Wrong response from the webhook: {response.status} {response.reason}",
                    )
                return response.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"Connection failed: {exc.__class__.__name__}"

    async def _post_once(self, update: JSONDict, secret: str | _Registered | None) -> int:
        with self._lock:
            url = self._webhook.url
            registered = self._webhook.secret
        if not url:
            raise RuntimeError("no webhook is set (call setWebhook first)")
        header = registered if isinstance(secret, _Registered) else secret
        async with aiohttp.ClientSession() as session:
            status, _ = await self._post_update(session, url, header, update)
        return status

    async def _webhook_worker(self) -> None:
        """Deliver queued updates to the webhook, oldest first, until it is removed."""
        async with aiohttp.ClientSession() as session:
            while self._stopping is not None and not self._stopping.is_set():
                wake = self._wake
                with self._lock:
                    url, secret = self._webhook.url, self._webhook.secret
                    batch = self._take_updates(1) if url else []
                if not url:
                    return
                if not batch or wake is None:
                    if wake is not None:
                        await wake.wait()
                    continue
                update = batch[0]
                _, error = await self._post_update(session, url, secret, update)
                with self._lock:
                    if error is None:
                        self._updates = [
                            u for u in self._updates if u["update_id"] != update["update_id"]
                        ]
                    else:
                        self._webhook.last_error_date = int(time.time())
                        self._webhook.last_error_message = error
                if error is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._stopping.wait(), timeout=_WEBHOOK_RETRY_SECONDS
                        )

    # ------------------------------------------------------------------ methods: messages

    async def _send_message(self, params: JSONDict) -> JSONDict:
        with self._lock:
            chat = self._chat_param(params)
            text, entities = self._format(
                params.get("text"), params.get("parse_mode"), params.get("entities"), caption=False
            )
            if not text.strip():
                raise _bad_request("message text is empty")
            markup = self._validate_markup(params.get("reply_markup"))
            target = self._reply_target(chat, params)
            self._check_flood("sendMessage", chat)
            data = self._new_bot_message(chat, params, target, markup)
            data["text"] = text
            if entities:
                data["entities"] = entities
            chat.messages[data["message_id"]] = _Message(
                data=data,
                from_bot=True,
                html=str(params.get("text")),
                parse_mode=params.get("parse_mode"),
            )
            return copy.deepcopy(data)

    async def _send_message_draft(self, params: JSONDict) -> bool:
        with self._lock:
            chat = self._chat_param(params)
            if chat.type != "private":
                raise _bad_request("TEXTDRAFT_PEER_INVALID")
            if not self._int_param(params, "draft_id"):
                raise _bad_request("DRAFT_ID_INVALID")
            self._format(
                params.get("text"), params.get("parse_mode"), params.get("entities"), caption=False
            )
            self._check_flood("sendMessageDraft", chat)
            return True

    async def _edit_message_text(self, params: JSONDict) -> JSONDict:
        with self._lock:
            chat, message = self._find_own_message(params, action="edit")
            if message.kind != "text":
                raise _bad_request("there is no text in the message to edit")
            text, entities = self._format(
                params.get("text"), params.get("parse_mode"), params.get("entities"), caption=False
            )
            if not text.strip():
                raise _bad_request("message text is empty")
            markup = self._validate_markup(params.get("reply_markup"))
            if (
                text == message.text
                and entities == message.entities
                and markup == message.data.get("reply_markup")
            ):
                raise _bad_request(_NOT_MODIFIED.removeprefix("Bad Request: "))
            self._check_flood("editMessageText", chat)
            message.data["text"] = text
            self._set_optional(message.data, "entities", entities)
            self._set_optional(message.data, "reply_markup", markup)
            message.data["edit_date"] = int(time.time())
            message.html = str(params.get("text"))
            message.parse_mode = params.get("parse_mode")
            message.edits += 1
            return copy.deepcopy(message.data)

    async def _edit_message_caption(self, params: JSONDict) -> JSONDict:
        with self._lock:
            chat, message = self._find_own_message(params, action="edit")
            if message.kind == "text":
                raise _bad_request("there is no caption in the message to edit")
            caption, entities = self._format(
                params.get("caption"),
                params.get("parse_mode"),
                params.get("caption_entities"),
                caption=True,
            )
            markup = self._validate_markup(params.get("reply_markup"))
            if (
                caption == message.text
                and entities == message.entities
                and markup == message.data.get("reply_markup")
            ):
                raise _bad_request(_NOT_MODIFIED.removeprefix("Bad Request: "))
            self._check_flood("editMessageCaption", chat)
            self._set_optional(message.data, "caption", caption)
            self._set_optional(message.data, "caption_entities", entities)
            self._set_optional(message.data, "reply_markup", markup)
            message.data["edit_date"] = int(time.time())
            message.html = None if params.get("caption") is None else str(params["caption"])
            message.parse_mode = params.get("parse_mode")
            message.edits += 1
            return copy.deepcopy(message.data)

    async def _edit_message_reply_markup(self, params: JSONDict) -> JSONDict:
        with self._lock:
            chat, message = self._find_own_message(params, action="edit")
            markup = self._validate_markup(params.get("reply_markup"))
            if markup == message.data.get("reply_markup"):
                raise _bad_request(_NOT_MODIFIED.removeprefix("Bad Request: "))
            self._check_flood("editMessageReplyMarkup", chat)
            self._set_optional(message.data, "reply_markup", markup)
            message.data["edit_date"] = int(time.time())
            message.edits += 1
            return copy.deepcopy(message.data)

    @staticmethod
    def _set_optional(data: JSONDict, key: str, value: Any) -> None:
        if value:
            data[key] = value
        else:
            data.pop(key, None)

    async def _delete_message(self, params: JSONDict) -> bool:
        with self._lock:
            chat = self._chat_param(params)
            message_id = self._int_param(params, "message_id")
            if message_id is None:
                raise _bad_request("message identifier is not specified")
            message = chat.messages.get(message_id)
            if message is None:
                raise _bad_request("message to delete not found")
            if not message.from_bot and chat.type != "private":
                raise _bad_request("message can't be deleted")
            del chat.messages[message_id]
            return True

    async def _send_chat_action(self, params: JSONDict) -> bool:
        with self._lock:
            self._chat_param(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        with self._lock:
            if self._callback_queries.get(query_id) is not False:
                raise _bad_request(
                    "query is too old and response timeout expired or query ID is invalid"
                )
            self._callback_queries[query_id] = True
        return True

    # ------------------------------------------------------------------ methods: commands

    @staticmethod
    def _commands_key(params: JSONDict) -> tuple[str, str]:
        scope = params.get("scope")
        scope_key = json.dumps(scope if isinstance(scope, dict) else {"type": "default"})
        return scope_key, str(params.get("language_code") or "")

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad_request("can't parse BotCommand JSON object")
            name = str(command.get("command", "")).lower()
            description = str(command.get("description", ""))
            if not _COMMAND_RE.match(name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        with self._lock:
            self._commands[self._commands_key(params)] = cleaned
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        with self._lock:
            return copy.deepcopy(self._commands.get(self._commands_key(params), []))

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        with self._lock:
            self._commands.pop(self._commands_key(params), None)
        return True

    # ------------------------------------------------------------------ methods: files

    async def _get_file(self, params: JSONDict) -> JSONDict:
        file_id = str(params.get("file_id") or "")
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise _bad_request("wrong file_id or the file is temporarily unavailable")
        if stored.size > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.path,
        }

    def _input_file(self, params: JSONDict, name: str, kind: str) -> _StoredFile | RecordedFile:
        """The file a send method refers to: a validated upload (``attach://`` too) or a
        known file."""
        files: dict[str, RecordedFile] = params[_FILES_PARAM]
        value = params.get(name)
        upload = files.get(name)
        if upload is None and isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value.removeprefix("attach://"))
        if upload is not None:
            if not upload.content:
                raise _bad_request("file must be non-empty")
            if kind == "photo" and _image_size(upload.content) is None:
                raise _bad_request("IMAGE_PROCESS_FAILED")
            return upload
        if not value:
            raise _bad_request(f"there is no {kind} in the request")
        if not isinstance(value, str):
            raise _bad_request("wrong file identifier/HTTP URL specified")
        if value.startswith(("http://", "https://")):
            raise _bad_request("failed to get HTTP URL content")
        with self._lock:
            stored = self._files.get(value)
        if stored is None:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return stored

    async def _send_media(self, params: JSONDict, kind: str) -> JSONDict:
        with self._lock:
            chat = self._chat_param(params)
            caption, entities = self._format(
                params.get("caption"),
                params.get("parse_mode"),
                params.get("caption_entities"),
                caption=True,
            )
            markup = self._validate_markup(params.get("reply_markup"))
            target = self._reply_target(chat, params)
            source = self._input_file(params, kind, kind)
            self._check_flood(f"send{kind.capitalize()}", chat)
            upload = source if isinstance(source, RecordedFile) else None
            file_name = upload.filename if upload is not None else None
            stored = (
                self._store_file(source.content, kind, file_name)
                if isinstance(source, RecordedFile)
                else source
            )
            data = self._new_bot_message(chat, params, target, markup)
            data[kind] = self._media_object(kind, stored, upload, params)
            if caption:
                data["caption"] = caption
            if entities:
                data["caption_entities"] = entities
            chat.messages[data["message_id"]] = _Message(
                data=data,
                from_bot=True,
                kind=kind,
                html=None if params.get("caption") is None else str(params["caption"]),
                parse_mode=params.get("parse_mode"),
                file_id=stored.file_id,
                file_name=file_name,
            )
            return copy.deepcopy(data)

    @staticmethod
    def _media_object(
        kind: str, stored: _StoredFile, upload: RecordedFile | None, params: JSONDict
    ) -> Any:
        base: JSONDict = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
        }
        if kind == "photo":
            width, height = _image_size(stored.content) or (512, 512)
            return [{**base, "width": width, "height": height}]
        file_name = upload.filename if upload is not None else None
        mime_type = (
            upload.content_type
            if upload is not None and upload.content_type != "application/octet-stream"
            else None
        ) or (mimetypes.guess_type(file_name)[0] if file_name else None)
        duration = params.get("duration")
        if not isinstance(duration, int):
            duration = _ogg_duration(stored.content) or 0
        if kind == "voice":
            return {**base, "duration": duration, "mime_type": mime_type or "audio/ogg"}
        if kind == "audio":
            audio = {**base, "duration": duration, "mime_type": mime_type or "audio/mpeg"}
            if file_name:
                audio["file_name"] = file_name
            for key in ("title", "performer"):
                if params.get(key):
                    audio[key] = params[key]
            return audio
        document = {**base, "mime_type": mime_type or "application/octet-stream"}
        if file_name:
            document["file_name"] = file_name
        return document

    async def _send_photo(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "photo")

    async def _send_document(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "document")

    async def _send_voice(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "voice")

    async def _send_audio(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "audio")


# --------------------------------------------------------------------------- standalone


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.telegram_server", description=__doc__
    )
    parser.add_argument(
        "--port", type=int, default=8081, help="TCP port on 127.0.0.1 (0 = pick a free one)"
    )
    parser.add_argument("--token", default="123456:TEST-token", help="accepted bot token")
    parser.add_argument("--bot-username", default="switchboard_test_bot")
    parser.add_argument("--private-rate", type=float, default=1.0, help="messages/s per DM")
    parser.add_argument("--private-burst", type=int, default=3)
    parser.add_argument("--group-per-minute", type=int, default=20)
    parser.add_argument("--group-burst", type=int, default=5)
    parser.add_argument("--global-per-second", type=int, default=30)
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeTelegram(
        token=args.token,
        bot_username=args.bot_username,
        private_rate=args.private_rate,
        private_burst=args.private_burst,
        group_per_minute=args.group_per_minute,
        group_burst=args.group_burst,
        global_per_second=args.global_per_second,
        port=args.port,
    )
    with fake:
        print(f"FAKE_TELEGRAM {fake.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
