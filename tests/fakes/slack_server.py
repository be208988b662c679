"""A fake Slack: Web API, Events API sender and Socket Mode server, speaking the real wire format.

The fake listens on ``127.0.0.1`` (in a background thread with its own event loop) so that
the real slack-sdk and slack-bolt run against it::

    AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)

It keeps what a bot can observe (channels and their messages, threads, ephemeral messages,
files, assistant statuses, users) and enforces Slack's limits and errors: 40,000 characters a
message, Block Kit limits (50 blocks, 3,000-character sections, 150-character headers,
12,000 characters of ``markdown`` blocks), a per-channel posting rate answered with HTTP 429
and ``Retry-After``, native streaming states (``message_not_in_streaming_state``), the v2
file upload flow, ``response_url`` use limits and the token types each method accepts.
Replies use Slack's shapes: HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}`` (429 for rate limits).

Towards the app it plays Slack's side of the Events API: builders record a user's message
in the fake's history and return the event (:meth:`FakeSlack.dm`, :meth:`FakeSlack.mention`,
...), and the async senders POST signed envelopes, slash commands and block actions to the
app on the caller's event loop (:meth:`FakeSlack.deliver_event`, ...).  Socket Mode is
served too: ``apps.connections.open`` hands out a ``ws://`` URL, and :meth:`FakeSlack.socket_send`
pushes envelopes whose acknowledgements are recorded.

Run ``python -m tests.fakes.slack_server --port 8082`` to serve it in the foreground; it
prints ``FAKE_SLACK <url>`` once listening.  A standalone fake is inspected through the
fake-only routes ``GET /_fake/stats`` and ``GET /_fake/channel/<id>``, and driven through
``POST /_fake/event/<kind>`` and ``POST /_fake/deliver`` (none of them part of Slack's API).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import copy
import hashlib
import hmac
import json
import math
import mimetypes
import re
import secrets
import signal
import string
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from tests.fakes.background import BackgroundLoop

__all__ = [
    "Download",
    "FakeSlack",
    "RecordedCall",
    "ResponsePost",
    "SentMessage",
    "SocketAck",
    "UploadedFile",
    "main",
    "sign",
    "validate_blocks",
]

JSONDict = dict[str, Any]

MAX_TEXT_LENGTH: Final = 40_000
"""Longest ``text`` of a message."""
MAX_BLOCKS: Final = 50
"""Most blocks in one message."""
MAX_SECTION_TEXT: Final = 3000
"""Longest ``text.text`` of a section block."""
MAX_SECTION_FIELDS: Final = 10
MAX_FIELD_TEXT: Final = 2000
MAX_HEADER_TEXT: Final = 150
MAX_MARKDOWN_BLOCKS_TEXT: Final = 12_000
"""Most characters of all ``markdown`` blocks of one message together."""
MAX_BLOCK_ID: Final = 255
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_ACTIONS_ELEMENTS: Final = 25
MAX_STREAM_CALL_TEXT: Final = 12_000
"""Most markdown characters one chat.startStream/appendStream/stopStream call may carry."""
MAX_STREAMED_TEXT: Final = 12_000
"""Most markdown characters one streamed message may hold in total (default)."""
STREAM_TTL: Final = 300.0
"""Seconds after which Slack takes a streaming message out of the streaming state."""
RESPONSE_URL_MAX_POSTS: Final = 5
RESPONSE_URL_TTL: Final = 30 * 60.0
MAX_UPLOAD_LENGTH: Final = 1024 * 1024 * 1024
"""Largest file files.getUploadURLExternal accepts (1 GB)."""
MAX_REQUEST_BODY: Final = 64 * 1024 * 1024
"""Largest request body the fake reads (uploads included)."""

SEND_TIMEOUT: Final = 30.0
"""Seconds the senders wait for the app to answer one request."""
WAIT_LIMIT: Final = 10.0
"""Seconds the ``wait_for_*`` helpers wait before raising :class:`TimeoutError`."""

SIGNATURE_HEADER: Final = "X-Slack-Signature"
TIMESTAMP_HEADER: Final = "X-Slack-Request-Timestamp"
RETRY_NUM_HEADER: Final = "X-Slack-Retry-Num"
RETRY_REASON_HEADER: Final = "X-Slack-Retry-Reason"
SLACK_USER_AGENT: Final = "Slackbot 1.0 (+https://api.slack.com/robots)"

_CHANNEL_RE: Final = re.compile(r"^[CDG][A-Z0-9]{2,}$")
_USER_RE: Final = re.compile(r"^[UW][A-Z0-9]{2,}$")
_MENTION_RE: Final = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_ID_ALPHABET: Final = string.ascii_uppercase + string.digits

_BLOCK_TYPES: Final = frozenset(
    {
        "actions",
        "call",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
_JSON_FIELDS: Final = frozenset(
    {
        "attachments",
        "blocks",
        "chunks",
        "files",
        "loading_messages",
        "metadata",
        "unfurls",
    }
)
_BOOL_FIELDS: Final = frozenset(
    {
        "as_user",
        "delete_original",
        "include_locale",
        "link_names",
        "mrkdwn",
        "replace_original",
        "reply_broadcast",
        "unfurl_links",
        "unfurl_media",
    }
)
_INT_FIELDS: Final = frozenset({"length", "limit"})
_RATE_LIMITED_METHODS: Final = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    }
)
"""Methods counted against the per-channel posting bucket."""
_STREAM_METHODS: Final = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})

_LOGIN_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>Sign in | Slack</title></head>"
    "<body><h1>Sign in to your workspace</h1>"
    '<form action="/signin" method="post"><input name="email"></form></body></html>'
)


# --------------------------------------------------------------------------- public records


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 of ``v0:<timestamp>:<body>``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class RecordedCall:
    """One Web API request, in arrival order.

    ``params`` merges query, form and JSON fields; JSON-encoded fields (``blocks``,
    ``files``, ``chunks``...) are decoded and booleans/lengths coerced.  ``headers`` are the
    request headers without ``Authorization``; ``status`` and ``error`` describe the reply.
    """

    method: str
    params: JSONDict
    headers: dict[str, str]
    time: float
    status: int
    error: str | None


@dataclass(frozen=True)
class SentMessage:
    """A message in a channel as the channel shows it now (after edits and streaming)."""

    channel: str
    ts: str
    thread_ts: str | None
    user: str | None
    text: str
    blocks: list[JSONDict] | None
    streaming: str | None
    """``in_progress`` or ``completed`` for a streamed message, else ``None``."""
    edits: int
    deleted: bool
    is_bot: bool
    subtype: str | None
    files: list[JSONDict]
    ephemeral_to: str | None
    chunks: list[JSONDict]
    """Non-text streaming chunks (task/plan updates) in the order received."""


@dataclass(frozen=True)
class UploadedFile:
    """A file completed through the v2 upload flow."""

    file_id: str
    name: str
    title: str
    content: bytes
    mimetype: str
    channel: str | None
    thread_ts: str | None
    initial_comment: str | None
    alt_txt: str | None
    snippet_type: str | None


@dataclass(frozen=True)
class Download:
    """One request for a hosted file's ``url_private``/``url_private_download``."""

    file_id: str
    path: str
    authorized: bool
    """Whether it carried the bot token (else it was sent to the sign-in page)."""
    time: float


@dataclass(frozen=True)
class ResponsePost:
    """One accepted POST to a ``response_url``."""

    url: str
    payload: JSONDict
    channel: str | None
    user: str | None
    time: float


@dataclass(frozen=True)
class SocketAck:
    """An acknowledgement the app sent over Socket Mode."""

    envelope_id: str
    payload: JSONDict | None
    time: float


# --------------------------------------------------------------------------- internal state


class _ApiError(Exception):
    """A Web API error reply."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        retry_after: int | str | None = None,
        messages: list[str] | None = None,
        extra: JSONDict | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.messages = messages
        self.extra = extra or {}


def _invalid_arguments(*messages: str) -> _ApiError:
    return _ApiError("invalid_arguments", messages=[f"[ERROR] {m}" for m in messages])


class _TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second (``inf`` = unlimited)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        if math.isinf(self.rate):
            return 0.0
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else math.inf

    def take(self) -> None:
        if not math.isinf(self.rate):
            self.tokens -= 1


@dataclass
class _Message:
    channel: str
    ts: str
    user: str | None
    text: str
    is_bot: bool
    blocks: list[JSONDict] | None = None
    thread_ts: str | None = None
    subtype: str | None = None
    files: list[JSONDict] = field(default_factory=list)
    edits: int = 0
    edited_ts: str | None = None
    deleted: bool = False
    streaming: str | None = None
    stream_started: float = 0.0
    chunks: list[JSONDict] = field(default_factory=list)
    ephemeral_to: str | None = None
    replies: list[str] = field(default_factory=list)
    legacy_bot: bool = False


@dataclass
class _Channel:
    channel_id: str
    messages: dict[str, _Message] = field(default_factory=dict)
    bucket: _TokenBucket | None = None


@dataclass
class _Failure:
    error: str
    status: int
    retry_after: int | str | None


@dataclass
class _PendingUpload:
    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    snippet_type: str | None
    content: bytes | None = None


@dataclass
class _StoredFile:
    data: JSONDict
    content: bytes


@dataclass
class _ResponseUrl:
    url: str
    channel: str | None
    user: str | None
    message_ts: str | None
    created: float
    posts: int = 0


def _coerce(name: str, value: Any) -> Any:
    """Normalise one request parameter the way the Web API reads it."""
    if not isinstance(value, str):
        return value
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if name in _BOOL_FIELDS:
        return value.lower() in ("true", "1")
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _random_id(prefix: str, length: int = 10) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _ts_from_micros(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def _rich_text(text: str) -> list[JSONDict]:
    """The ``rich_text`` block Slack attaches to a user's message."""
    elements: list[JSONDict] = []
    position = 0
    for match in _MENTION_RE.finditer(text):
        if match.start() > position:
            elements.append({"type": "text", "text": text[position : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        position = match.end()
    if position < len(text):
        elements.append({"type": "text", "text": text[position:]})
    return [
        {
            "type": "rich_text",
            "block_id": secrets.token_urlsafe(4)[:5],
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


# --------------------------------------------------------------------------- block validation


def _check_text_object(
    value: Any, pointer: str, limit: int, errors: list[str], *, plain_only: bool = False
) -> None:
    if not isinstance(value, dict):
        errors.append(f"must provide an object [json-pointer:{pointer}]")
        return
    kind = value.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind not in allowed:
        errors.append(f"must be one of {list(allowed)} [json-pointer:{pointer}/type]")
    text = value.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"must be more than 0 characters [json-pointer:{pointer}/text]")
    elif len(text) > limit:
        errors.append(f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]")


def _check_elements(block: JSONDict, pointer: str, limit: int, errors: list[str]) -> None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        errors.append(f"must provide an array [json-pointer:{pointer}/elements]")
    elif len(elements) > limit:
        errors.append(f"no more than {limit} items allowed [json-pointer:{pointer}/elements]")


def _check_block(block: Any, pointer: str, errors: list[str]) -> int:
    """Validate one block; returns the characters it adds to the markdown-block total."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        errors.append(f"missing required field: type [json-pointer:{pointer}]")
        return 0
    kind = block["type"]
    if kind not in _BLOCK_TYPES:
        errors.append(f"failed to match all allowed schemas [json-pointer:{pointer}]")
        return 0
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID):
        errors.append(
            f"must be less than {MAX_BLOCK_ID + 1} characters [json-pointer:{pointer}/block_id]"
        )
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"must provide either text or fields [json-pointer:{pointer}]")
        if "text" in block:
            _check_text_object(block["text"], f"{pointer}/text", MAX_SECTION_TEXT, errors)
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                limit = MAX_SECTION_FIELDS
                errors.append(f"no more than {limit} items allowed [json-pointer:{pointer}/fields]")
            else:
                for n, item in enumerate(fields):
                    _check_text_object(item, f"{pointer}/fields/{n}", MAX_FIELD_TEXT, errors)
    elif kind == "header":
        _check_text_object(
            block.get("text"), f"{pointer}/text", MAX_HEADER_TEXT, errors, plain_only=True
        )
    elif kind == "markdown":
        text = block.get("text")
        if not isinstance(text, str):
            errors.append(f"missing required field: text [json-pointer:{pointer}]")
            return 0
        return len(text)
    elif kind == "context":
        _check_elements(block, pointer, MAX_CONTEXT_ELEMENTS, errors)
    elif kind == "actions":
        _check_elements(block, pointer, MAX_ACTIONS_ELEMENTS, errors)
    elif kind == "rich_text":
        _check_elements(block, pointer, 10_000, errors)
    elif kind == "image":
        if not isinstance(block.get("alt_text"), str):
            errors.append(f"missing required field: alt_text [json-pointer:{pointer}]")
        if "image_url" not in block and "slack_file" not in block:
            errors.append(f"missing required field: image_url [json-pointer:{pointer}]")
    return 0


def validate_blocks(blocks: Any) -> list[JSONDict]:
    """Check ``blocks`` as Slack does; raises the Web API error Slack would answer."""
    if not isinstance(blocks, list):
        raise _ApiError("invalid_blocks_format")
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    markdown_total = 0
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        markdown_total += _check_block(block, f"/blocks/{index}", errors)
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if isinstance(block_id, str):
            if block_id in seen:
                errors.append(f"duplicate block_id [json-pointer:/blocks/{index}/block_id]")
            seen.add(block_id)
    if markdown_total > MAX_MARKDOWN_BLOCKS_TEXT:
        errors.append(
            f"markdown blocks must be less than {MAX_MARKDOWN_BLOCKS_TEXT + 1} characters "
            "in total [json-pointer:/blocks]"
        )
    if errors:
        raise _ApiError(
            "invalid_blocks", messages=[f"[ERROR] {e}" for e in errors], extra={"errors": errors}
        )
    return copy.deepcopy(blocks)


# --------------------------------------------------------------------------- the server

Handler = Callable[[JSONDict], JSONDict]


class FakeSlack:
    """A fake Slack on 127.0.0.1, served from a background thread.

    Use ``with FakeSlack() as fake`` (or :meth:`start`/:meth:`stop`), point slack-sdk at
    :attr:`api_url`, drive the app with the event builders and senders, and inspect
    :attr:`calls`, :meth:`messages`, :attr:`uploads`, :attr:`responses` and
    :attr:`rate_limited`.  Public methods are safe to call from any thread; the ``async``
    senders run on the caller's event loop.

    Channels exist on first use: any id shaped like Slack's (``C…``, ``G…``, ``D…``) is
    accepted; other values get ``channel_not_found``.  ``chat.postMessage`` to a user id
    posts into that user's DM channel (:meth:`dm_channel`).

    The bot token is accepted by every Web API method except ``apps.connections.open``,
    which wants the app-level token; the wrong kind of valid token gets
    ``not_allowed_token_type``, an unknown one ``invalid_auth``, none ``not_authed``.

    Attributes:
        calls: every Web API request, in arrival order.
        rate_limited: how many HTTP 429 replies were served (injected ones included).
        rate_limited_by_method: the same, per method.
        responses: accepted ``response_url`` posts.
        uploads: files completed through the v2 upload flow.
        downloads: requests for hosted files (``url_private``/``url_private_download``).
        socket_acks: Socket Mode acknowledgements received.
        max_streamed_text: total markdown one streamed message may hold.
        stream_ttl: seconds a streamed message stays in the streaming state.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        signing_secret: str = "test-signing-secret",
        app_token: str = "xapp-test-token",
        team_id: str = "T0FAKE",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        per_channel_rate: float = 1.0,
        per_channel_burst: int = 3,
        streaming: bool = True,
        api_app_id: str = "A0FAKEAPP",
        team_domain: str = "fakeworkspace",
        bot_name: str = "switchboard",
        verification_token: str = "fake-verification-token",
        response_url_ttl: float = RESPONSE_URL_TTL,
        port: int = 0,
    ) -> None:
        """Configure the fake; call :meth:`start` (or use ``with``) to serve.

        ``per_channel_rate`` messages a second with bursts of ``per_channel_burst`` may be
        posted, updated or streamed into one channel; ``math.inf`` disables the limit.
        ``streaming=False`` makes the chat.*Stream methods unknown, as on a workspace
        without them.
        """
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.api_app_id = api_app_id
        self.team_domain = team_domain
        self.bot_name = bot_name
        self.verification_token = verification_token
        self.per_channel_rate = per_channel_rate
        self.per_channel_burst = per_channel_burst
        self.streaming = streaming
        self.response_url_ttl = response_url_ttl
        self.max_streamed_text = MAX_STREAMED_TEXT
        self.stream_ttl = STREAM_TTL
        self.calls: list[RecordedCall] = []
        self.rate_limited = 0
        self.rate_limited_by_method: Counter[str] = Counter()
        self.responses: list[ResponsePost] = []
        self.uploads: list[UploadedFile] = []
        self.downloads: list[Download] = []
        self.socket_acks: list[SocketAck] = []
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.RLock()
        self._last_ts_micros = 0
        self._channels: dict[str, _Channel] = {}
        self._ephemeral: dict[tuple[str, str], list[_Message]] = {}
        self._statuses: dict[tuple[str, str], list[str]] = {}
        self._users: dict[str, JSONDict] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._drops: dict[str, int] = {}
        self._pending_uploads: dict[str, _PendingUpload] = {}
        self._files: dict[str, _StoredFile] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._event_ids: dict[tuple[Any, ...], str] = {}
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._methods: dict[str, tuple[Handler, str]] = {
            "auth.test": (self._auth_test, "bot"),
            "chat.postMessage": (self._post_message, "bot"),
            "chat.update": (self._update, "bot"),
            "chat.delete": (self._delete, "bot"),
            "chat.postEphemeral": (self._post_ephemeral, "bot"),
            "chat.startStream": (self._start_stream, "bot"),
            "chat.appendStream": (self._append_stream, "bot"),
            "chat.stopStream": (self._stop_stream, "bot"),
            "assistant.threads.setStatus": (self._set_status, "bot"),
            "users.info": (self._users_info, "bot"),
            "files.getUploadURLExternal": (self._get_upload_url, "bot"),
            "files.completeUploadExternal": (self._complete_upload, "bot"),
            "files.info": (self._files_info, "bot"),
            "apps.connections.open": (self._connections_open, "app"),
        }
        self._background: BackgroundLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.add_user(bot_user_id, bot_name, bot_name, is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeSlack:
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
            raise RuntimeError("FakeSlack is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """``url + "/api/"``: what slack-sdk's ``base_url`` takes."""
        return f"{self.url}/api/"

    def start(self) -> FakeSlack:
        """Start serving in a background thread; returns ``self`` once listening."""
        if self._background is not None:
            raise RuntimeError("FakeSlack is already running")
        self._background = BackgroundLoop("FakeSlack", self._astart)
        self._loop = self._background.loop
        return self

    def stop(self) -> None:
        """Stop serving: close Socket Mode connections and join the thread."""
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
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_get("/files-pri/{team_file}/{tail:.+}", self._handle_download)
        app.router.add_get("/signin", self._handle_signin)
        app.router.add_post("/response/{response_id}", self._handle_response_url)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_get("/_fake/stats", self._handle_fake_stats)
        app.router.add_get("/_fake/channel/{channel}", self._handle_fake_channel)
        app.router.add_post("/_fake/event/{kind}", self._handle_fake_event)
        app.router.add_post("/_fake/deliver", self._handle_fake_deliver)
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
        for ws in list(self._sockets):
            await asyncio.wait_for(ws.close(), timeout=2)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeSlack is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    # ------------------------------------------------------------------ configuring

    def add_user(
        self,
        user_id: str,
        name: str,
        display_name: str | None = None,
        *,
        real_name: str | None = None,
        is_bot: bool = False,
    ) -> JSONDict:
        """Register a user for ``users.info``; returns the user object."""
        if not _USER_RE.match(user_id):
            raise ValueError(f"not a Slack user id: {user_id!r}")
        real = real_name or (display_name or name).title()
        user: JSONDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "color": "9f69e7",
            "real_name": real,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {
                "display_name": display_name if display_name is not None else name,
                "display_name_normalized": display_name if display_name is not None else name,
                "real_name": real,
                "real_name_normalized": real,
                "team": self.team_id,
            },
        }
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id if user_id == self.bot_user_id else None
        with self._lock:
            self._users[user_id] = user
        return copy.deepcopy(user)

    def add_file(
        self,
        name: str,
        content: bytes,
        mimetype: str = "application/octet-stream",
        *,
        user: str | None = None,
        title: str | None = None,
    ) -> JSONDict:
        """Host a file (as if a user uploaded it); returns its Slack file object.

        ``url_private``/``url_private_download`` point at the fake and need the bot token
        in ``Authorization: Bearer``; without it the fake redirects to a login page.
        """
        file_id = _random_id("F")
        data = self._file_object(
            file_id, name, title or name, mimetype, len(content), user or "U0UPLOADER"
        )
        with self._lock:
            self._files[file_id] = _StoredFile(data=data, content=content)
        return copy.deepcopy(data)

    def fail_next(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        status: int | None = None,
        retry_after: int | str | None = 1,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``error``.

        ``status`` defaults to 429 for ``ratelimited`` (with ``Retry-After``) and 200
        otherwise, as Slack answers its errors. A string ``retry_after`` is sent verbatim
        (as a broken proxy might: ``nan``, ``1.5``, garbage).
        """
        code = status if status is not None else (429 if error == "ratelimited" else 200)
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            for _ in range(times):
                queue.append(_Failure(error, code, retry_after if code == 429 else None))

    def drop_next(self, method: str, *, times: int = 1) -> None:
        """Drop the connection of the next ``times`` calls of ``method`` without answering
        (a network fault between the bot and Slack); the call is recorded, not made."""
        with self._lock:
            self._drops[method] = self._drops.get(method, 0) + times

    def new_response_url(
        self, channel: str | None, user: str | None, message_ts: str | None = None
    ) -> str:
        """Issue a ``response_url`` on the fake (as a slash command or action carries)."""
        response_id = f"{self.team_id}/{secrets.randbelow(10**12)}/{secrets.token_hex(12)}"
        url = f"{self.url}/response/{quote(response_id, safe='')}"
        with self._lock:
            self._response_urls[response_id] = _ResponseUrl(
                url=url,
                channel=channel,
                user=user,
                message_ts=message_ts,
                created=time.monotonic(),
            )
        return url

    def dm_channel(self, user: str) -> str:
        """The id of the bot's DM channel with ``user`` (``U0ALICE`` → ``D0ALICE``)."""
        return "D" + user[1:]

    # ------------------------------------------------------------------ inspecting

    def calls_to(self, method: str) -> list[RecordedCall]:
        """Recorded calls of one method, in order."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def call_counts(self) -> dict[str, int]:
        """How many times each method was called."""
        with self._lock:
            return dict(Counter(c.method for c in self.calls))

    def messages(self, channel: str) -> list[SentMessage]:
        """Every message in ``channel`` (users' and the bot's, deleted ones flagged)."""
        with self._lock:
            found = self._channels.get(channel)
            if found is None:
                return []
            return [self._snapshot(m) for m in found.messages.values()]

    def thread(self, channel: str, thread_ts: str) -> list[SentMessage]:
        """The parent ``thread_ts`` and its replies, in posting order."""
        return [m for m in self.messages(channel) if thread_ts in (m.ts, m.thread_ts)]

    def ephemeral(self, channel: str, user: str) -> list[SentMessage]:
        """Ephemeral messages shown to ``user`` in ``channel``."""
        with self._lock:
            return [self._snapshot(m) for m in self._ephemeral.get((channel, user), [])]

    def statuses(self, channel: str, thread_ts: str) -> list[str]:
        """Every ``assistant.threads.setStatus`` status of a thread, in order."""
        with self._lock:
            return list(self._statuses.get((channel, thread_ts), []))

    def stats(self) -> JSONDict:
        """Calls per method, 429s served and messages per channel (``GET /_fake/stats``)."""
        with self._lock:
            return {
                "calls": self.call_counts(),
                "total_calls": len(self.calls),
                "rate_limited": self.rate_limited,
                "rate_limited_by_method": dict(self.rate_limited_by_method),
                "messages": {
                    cid: sum(1 for m in ch.messages.values() if not m.deleted)
                    for cid, ch in self._channels.items()
                },
                "socket_connections": len(self._sockets),
            }

    @staticmethod
    def _snapshot(message: _Message) -> SentMessage:
        return SentMessage(
            channel=message.channel,
            ts=message.ts,
            thread_ts=message.thread_ts,
            user=message.user,
            text=message.text,
            blocks=copy.deepcopy(message.blocks),
            streaming=message.streaming,
            edits=message.edits,
            deleted=message.deleted,
            is_bot=message.is_bot,
            subtype=message.subtype,
            files=copy.deepcopy(message.files),
            ephemeral_to=message.ephemeral_to,
            chunks=copy.deepcopy(message.chunks),
        )

    # ------------------------------------------------------------------ state helpers

    def _next_ts(self) -> str:
        with self._lock:
            micros = max(self._last_ts_micros + 1, time.time_ns() // 1000)
            self._last_ts_micros = micros
            return _ts_from_micros(micros)

    def _channel(self, channel_id: str) -> _Channel:
        found = self._channels.get(channel_id)
        if found is None:
            found = _Channel(channel_id)
            self._channels[channel_id] = found
        return found

    def _find(self, channel: str, ts: Any) -> _Message:
        found = self._channels.get(channel)
        message = found.messages.get(ts) if found is not None and isinstance(ts, str) else None
        if message is None or message.deleted:
            raise _ApiError("message_not_found")
        return message

    def _ensure_user(self, user: str) -> None:
        if user not in self._users:
            self.add_user(user, user.lower(), user.lower())

    def _bot_profile(self) -> JSONDict:
        return {
            "id": self.bot_id,
            "app_id": self.api_app_id,
            "user_id": self.bot_user_id,
            "name": self.bot_name,
            "icons": {"image_36": "", "image_48": "", "image_72": ""},
            "deleted": False,
            "updated": 1700000000,
            "team_id": self.team_id,
        }

    def _to_slack(self, message: _Message) -> JSONDict:
        """The message object as Slack's API and events show it."""
        data: JSONDict = {"type": "message", "text": message.text, "ts": message.ts}
        if message.subtype:
            data["subtype"] = message.subtype
        if message.user and not message.legacy_bot:
            data["user"] = message.user
        if message.is_bot:
            data["bot_id"] = self.bot_id
            data["app_id"] = self.api_app_id
            if message.legacy_bot:
                data["username"] = self.bot_name
            else:
                data["bot_profile"] = self._bot_profile()
        data["team"] = self.team_id
        if message.blocks is not None:
            data["blocks"] = copy.deepcopy(message.blocks)
        if message.files:
            data["files"] = copy.deepcopy(message.files)
            data["upload"] = False
            data["display_as_bot"] = False
        if message.thread_ts:
            data["thread_ts"] = message.thread_ts
            channel = self._channels.get(message.channel)
            parent = channel.messages.get(message.thread_ts) if channel else None
            if parent is not None and parent.user:
                data["parent_user_id"] = parent.user
        if message.replies:
            data["thread_ts"] = message.ts
            data["reply_count"] = len(message.replies)
            data["reply_users_count"] = 1
            data["latest_reply"] = message.replies[-1]
        if message.edited_ts:
            data["edited"] = {"user": message.user, "ts": message.edited_ts}
        if message.streaming:
            data["streaming_state"] = message.streaming
        return data

    def _store(self, message: _Message) -> _Message:
        channel = self._channel(message.channel)
        channel.messages[message.ts] = message
        if message.thread_ts:
            parent = channel.messages.get(message.thread_ts)
            if parent is not None and parent is not message:
                parent.replies.append(message.ts)
        return message

    def _new_bot_message(
        self,
        channel: str,
        text: str,
        blocks: list[JSONDict] | None,
        thread_ts: str | None,
        **extra: Any,
    ) -> _Message:
        return self._store(
            _Message(
                channel=channel,
                ts=self._next_ts(),
                user=self.bot_user_id,
                text=text,
                is_bot=True,
                blocks=blocks,
                thread_ts=thread_ts or None,
                **extra,
            )
        )

    def _file_object(
        self, file_id: str, name: str, title: str, mimetype: str, size: int, user: str
    ) -> JSONDict:
        now = int(time.time())
        extension = name.rsplit(".", 1)[1].lower() if "." in name else "binary"
        base = f"{self.url}/files-pri/{self.team_id}-{file_id}"
        return {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": extension,
            "pretty_type": extension.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{quote(name)}",
            "url_private_download": f"{base}/download/{quote(name)}",
            "permalink": f"{self.url}/files/{user}/{file_id}/{quote(name)}",
            "channels": [],
            "groups": [],
            "ims": [],
            "comments_count": 0,
            "has_rich_preview": False,
            "file_access": "visible",
        }

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _error_body(error: _ApiError) -> JSONDict:
        body: JSONDict = {"ok": False, "error": error.error, **error.extra}
        if error.messages:
            body["response_metadata"] = {"messages": error.messages}
        return body

    @staticmethod
    async def _read_params(request: web.Request) -> JSONDict:
        params: JSONDict = dict(request.query)
        if request.body_exists:
            content_type = request.content_type
            if content_type == "application/json":
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError as exc:
                    raise _ApiError("invalid_json") from exc
                if not isinstance(body, dict):
                    raise _ApiError("json_not_object")
                params.update(body)
            elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        params[name] = value.file.read()
                    elif isinstance(value, bytes):
                        params[name] = value.decode()
                    else:
                        params[name] = value
        return {name: _coerce(name, value) for name, value in params.items()}

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        params: JSONDict = {}
        try:
            params = await self._read_params(request)
            with self._lock:
                dropped = self._drops.get(method, 0) > 0
                if dropped:
                    self._drops[method] -= 1
                    self.calls.append(RecordedCall(method, params, headers, time.time(), 0, None))
            if dropped and request.transport is not None:
                request.transport.abort()
                return web.Response(status=502)  # never reaches the client: it is gone
            token = self._token_of(request, params)
            result = self._dispatch(method, token, params)
        except _ApiError as error:
            status, body = error.status, self._error_body(error)
            extra_headers: dict[str, str] = {}
            if error.retry_after is not None:
                extra_headers["Retry-After"] = str(error.retry_after)
            with self._lock:
                if status == 429:
                    self.rate_limited += 1
                    self.rate_limited_by_method[method] += 1
                self.calls.append(
                    RecordedCall(method, params, headers, time.time(), status, error.error)
                )
            if error.error == "unknown_method":
                body["req_method"] = method
            return web.json_response(body, status=status, headers=extra_headers)
        with self._lock:
            self.calls.append(RecordedCall(method, params, headers, time.time(), 200, None))
        return web.json_response({"ok": True, **result})

    @staticmethod
    def _token_of(request: web.Request, params: JSONDict) -> str | None:
        header = request.headers.get("Authorization", "")
        token = params.pop("token", None)
        if header.startswith("Bearer "):
            return header[len("Bearer ") :].strip()
        return token if isinstance(token, str) and token else None

    def _dispatch(self, method: str, token: str | None, params: JSONDict) -> JSONDict:
        entry = self._methods.get(method)
        if entry is None or (method in _STREAM_METHODS and not self.streaming):
            raise _ApiError("unknown_method")
        handler, wanted = entry
        if token is None:
            raise _ApiError("not_authed")
        kind = {self.bot_token: "bot", self.app_token: "app"}.get(token)
        if kind is None:
            raise _ApiError("invalid_auth")
        if kind != wanted:
            raise _ApiError("not_allowed_token_type")
        with self._lock:
            queue = self._failures.get(method)
            failure = queue.popleft() if queue else None
            if failure is not None:
                raise _ApiError(
                    failure.error, status=failure.status, retry_after=failure.retry_after
                )
            return handler(params)

    # ------------------------------------------------------------------ parameter helpers

    @staticmethod
    def _channel_param(params: JSONDict, name: str = "channel") -> str:
        value = params.get(name)
        if not isinstance(value, str) or not _CHANNEL_RE.match(value):
            raise _ApiError("channel_not_found")
        return value

    @staticmethod
    def _optional_str(params: JSONDict, name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _invalid_arguments(f"invalid type for field: {name}")
        return value

    def _check_rate(self, channel: str) -> None:
        """Raise 429 when ``channel`` is over its posting rate; else count one post."""
        state = self._channel(channel)
        now = time.monotonic()
        if state.bucket is None:
            state.bucket = _TokenBucket(self.per_channel_rate, self.per_channel_burst, now)
        wait = state.bucket.wait(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait)) if math.isfinite(wait) else 60
            raise _ApiError("ratelimited", status=429, retry_after=retry_after)
        state.bucket.take()

    @staticmethod
    def _content(params: JSONDict) -> tuple[str, list[JSONDict] | None]:
        """The ``text`` and validated ``blocks`` of a post or update."""
        text = params.get("text")
        text = "" if text is None else str(text)
        raw_blocks = params.get("blocks")
        blocks = None if raw_blocks in (None, "", []) else validate_blocks(raw_blocks)
        if not text and not blocks and not params.get("attachments"):
            raise _ApiError("no_text")
        if len(text) > MAX_TEXT_LENGTH:
            raise _ApiError("msg_too_long")
        return text, blocks

    def _stream_text(self, params: JSONDict) -> tuple[str, list[JSONDict]]:
        """The markdown text (``markdown_text`` plus markdown chunks) and other chunks."""
        markdown = params.get("markdown_text")
        if markdown is not None and not isinstance(markdown, str):
            raise _invalid_arguments("invalid type for field: markdown_text")
        parts = [markdown or ""]
        others: list[JSONDict] = []
        chunks = params.get("chunks")
        if chunks is not None:
            if not isinstance(chunks, list) or not all(
                isinstance(c, dict) and isinstance(c.get("type"), str) for c in chunks
            ):
                raise _invalid_arguments("chunks must be an array of chunk objects")
            for chunk in chunks:
                if chunk["type"] == "markdown_text":
                    if not isinstance(chunk.get("text"), str):
                        raise _invalid_arguments("markdown_text chunk requires text")
                    parts.append(chunk["text"])
                else:
                    others.append(copy.deepcopy(chunk))
        text = "".join(parts)
        if len(text) > MAX_STREAM_CALL_TEXT:
            raise _ApiError("msg_too_long")
        return text, others

    def _streaming_message(self, params: JSONDict) -> _Message:
        channel = self._channel_param(params)
        message = self._find(channel, params.get("ts"))
        if message.streaming == "in_progress" and (
            time.monotonic() - message.stream_started > self.stream_ttl
        ):
            message.streaming = "completed"
        if message.streaming != "in_progress":
            raise _ApiError("message_not_in_streaming_state")
        return message

    # ------------------------------------------------------------------ methods: auth, chat

    def _auth_test(self, params: JSONDict) -> JSONDict:
        return {
            "url": f"{self.url}/",
            "team": "Fake Workspace",
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: JSONDict) -> JSONDict:
        target = params.get("channel")
        if isinstance(target, str) and _USER_RE.match(target):
            params = {**params, "channel": self.dm_channel(target)}
        channel = self._channel_param(params)
        self._check_rate(channel)
        text, blocks = self._content(params)
        thread_ts = self._optional_str(params, "thread_ts")
        subtype = "thread_broadcast" if thread_ts and params.get("reply_broadcast") else None
        message = self._new_bot_message(channel, text, blocks, thread_ts, subtype=subtype)
        return {"channel": channel, "ts": message.ts, "message": self._to_slack(message)}

    def _update(self, params: JSONDict) -> JSONDict:
        channel = self._channel_param(params)
        message = self._find(channel, params.get("ts"))
        if not message.is_bot:
            raise _ApiError("cant_update_message")
        self._check_rate(channel)
        text, blocks = self._content(params)
        message.text = text
        if "blocks" in params:
            message.blocks = blocks
        message.edits += 1
        message.edited_ts = self._next_ts()
        return {
            "channel": channel,
            "ts": message.ts,
            "text": text,
            "message": self._to_slack(message),
        }

    def _delete(self, params: JSONDict) -> JSONDict:
        channel = self._channel_param(params)
        message = self._find(channel, params.get("ts"))
        if not message.is_bot:
            raise _ApiError("cant_delete_message")
        message.deleted = True
        return {"channel": channel, "ts": message.ts}

    def _post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel = self._channel_param(params)
        user = params.get("user")
        if not isinstance(user, str) or not _USER_RE.match(user):
            raise _ApiError("user_not_found")
        text, blocks = self._content(params)
        message = _Message(
            channel=channel,
            ts=self._next_ts(),
            user=self.bot_user_id,
            text=text,
            is_bot=True,
            blocks=blocks,
            thread_ts=self._optional_str(params, "thread_ts"),
            ephemeral_to=user,
        )
        self._ephemeral.setdefault((channel, user), []).append(message)
        return {"message_ts": message.ts}

    # ------------------------------------------------------------------ methods: streaming

    def _start_stream(self, params: JSONDict) -> JSONDict:
        channel = self._channel_param(params)
        thread_ts = self._optional_str(params, "thread_ts")
        if thread_ts is None:
            raise _invalid_arguments("missing required field: thread_ts")
        if _channel_type(channel) != "im" and not (
            params.get("recipient_user_id") and params.get("recipient_team_id")
        ):
            raise _invalid_arguments(
                "recipient_user_id and recipient_team_id are required when streaming to channels"
            )
        self._check_rate(channel)
        text, chunks = self._stream_text(params)
        if len(text) > self.max_streamed_text:
            raise _ApiError("msg_too_long")
        message = self._new_bot_message(
            channel,
            text,
            None,
            thread_ts,
            streaming="in_progress",
            stream_started=time.monotonic(),
            chunks=chunks,
        )
        return {"channel": channel, "ts": message.ts}

    def _append_stream(self, params: JSONDict) -> JSONDict:
        message = self._streaming_message(params)
        if params.get("markdown_text") is None and params.get("chunks") is None:
            raise _invalid_arguments("markdown_text or chunks is required")
        self._check_rate(message.channel)
        text, chunks = self._stream_text(params)
        if len(message.text) + len(text) > self.max_streamed_text:
            raise _ApiError("msg_too_long")
        message.text += text
        message.chunks.extend(chunks)
        return {"channel": message.channel, "ts": message.ts}

    def _stop_stream(self, params: JSONDict) -> JSONDict:
        message = self._streaming_message(params)
        self._check_rate(message.channel)
        text, chunks = self._stream_text(params)
        if len(message.text) + len(text) > self.max_streamed_text:
            raise _ApiError("msg_too_long")
        raw_blocks = params.get("blocks")
        if raw_blocks not in (None, "", []):
            message.blocks = validate_blocks(raw_blocks)
        message.text += text
        message.chunks.extend(chunks)
        message.streaming = "completed"
        return {"channel": message.channel, "ts": message.ts, "message": self._to_slack(message)}

    # ------------------------------------------------------------------ methods: assistant, users

    def _set_status(self, params: JSONDict) -> JSONDict:
        channel = self._channel_param(params, "channel_id")
        thread_ts = self._optional_str(params, "thread_ts")
        if thread_ts is None:
            raise _invalid_arguments("missing required field: thread_ts")
        status = params.get("status")
        if not isinstance(status, str):
            raise _invalid_arguments("missing required field: status")
        self._statuses.setdefault((channel, thread_ts), []).append(status)
        return {}

    def _users_info(self, params: JSONDict) -> JSONDict:
        user = self._users.get(str(params.get("user")))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": copy.deepcopy(user)}

    # ------------------------------------------------------------------ methods: files

    def _get_upload_url(self, params: JSONDict) -> JSONDict:
        filename = params.get("filename")
        if not isinstance(filename, str) or not filename:
            raise _invalid_arguments("missing required field: filename")
        length = params.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise _invalid_arguments("missing required field: length")
        if length > MAX_UPLOAD_LENGTH:
            raise _ApiError("file_too_large")
        file_id = _random_id("F")
        self._pending_uploads[file_id] = _PendingUpload(
            file_id=file_id,
            filename=filename,
            length=length,
            alt_txt=self._optional_str(params, "alt_txt"),
            snippet_type=self._optional_str(params, "snippet_type"),
        )
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, params: JSONDict) -> JSONDict:
        items = params.get("files")
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items)
        ):
            raise _invalid_arguments("files must be a JSON array of {id, title} objects")
        channel = None
        if params.get("channel_id"):
            channel = self._channel_param(params, "channel_id")
        elif params.get("channels"):
            channel = self._channel_param({"channel": str(params["channels"]).split(",")[0]})
        thread_ts = self._optional_str(params, "thread_ts")
        if thread_ts is not None and channel is None:
            raise _invalid_arguments("thread_ts requires channel_id")
        comment = self._optional_str(params, "initial_comment")
        pending: list[tuple[_PendingUpload, JSONDict]] = []
        for item in items:
            upload = self._pending_uploads.get(item["id"])
            if upload is None:
                raise _ApiError("file_not_found")
            if upload.content is None:
                raise _invalid_arguments(f"file {upload.file_id} has no uploaded content")
            if len(upload.content) != upload.length:
                raise _invalid_arguments(
                    f"uploaded {len(upload.content)} bytes for {upload.file_id}, "
                    f"declared length {upload.length}"
                )
            pending.append((upload, item))
        results: list[JSONDict] = []
        for upload, item in pending:
            del self._pending_uploads[upload.file_id]
            content = upload.content or b""
            if upload.snippet_type:
                mimetype = "text/plain"
            else:
                mimetype = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
            title = str(item.get("title") or upload.filename)
            data = self._file_object(
                upload.file_id, upload.filename, title, mimetype, len(content), self.bot_user_id
            )
            if upload.alt_txt:
                data["alt_txt"] = upload.alt_txt
            if channel is not None:
                data["channels" if _channel_type(channel) == "channel" else "ims"] = [channel]
            self._files[upload.file_id] = _StoredFile(data=data, content=content)
            self.uploads.append(
                UploadedFile(
                    file_id=upload.file_id,
                    name=upload.filename,
                    title=title,
                    content=content,
                    mimetype=mimetype,
                    channel=channel,
                    thread_ts=thread_ts,
                    initial_comment=comment,
                    alt_txt=upload.alt_txt,
                    snippet_type=upload.snippet_type,
                )
            )
            results.append(data)
        if channel is not None:
            self._new_bot_message(
                channel, comment or "", None, thread_ts, files=copy.deepcopy(results)
            )
        return {"files": copy.deepcopy(results)}

    def _files_info(self, params: JSONDict) -> JSONDict:
        stored = self._files.get(str(params.get("file")))
        if stored is None:
            raise _ApiError("file_not_found")
        return {
            "file": copy.deepcopy(stored.data),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    def _connections_open(self, params: JSONDict) -> JSONDict:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    # ------------------------------------------------------------------ other routes

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        content = b""
        if request.content_type == "multipart/form-data":
            form = await request.post()
            for value in form.values():
                if isinstance(value, web.FileField):
                    content = value.file.read()
                    break
        else:
            content = await request.read()
        with self._lock:
            upload = self._pending_uploads.get(file_id)
            if upload is None:
                return web.Response(status=404, text="Not Found")
            upload.content = content
            size = len(upload.content)
        return web.Response(text=f"OK - {size}", content_type="text/plain")

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        team_file = request.match_info["team_file"]
        file_id = team_file.rsplit("-", 1)[-1]
        header = request.headers.get("Authorization", "")
        authorized = header == f"Bearer {self.bot_token}"
        with self._lock:
            self.downloads.append(Download(file_id, request.path, authorized, time.time()))
        if not authorized:
            target = f"{self.url}/signin?" + urlencode({"redir": request.path_qs})
            raise web.HTTPFound(target)
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=stored.content,
            content_type=stored.data["mimetype"],
            headers={
                "Content-Disposition": f'attachment; filename="{stored.data["name"]}"',
            },
        )

    async def _handle_signin(self, request: web.Request) -> web.Response:
        return web.Response(text=_LOGIN_PAGE, content_type="text/html")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        raw = await request.read()
        with self._lock:
            entry = self._response_urls.get(response_id)
            if (
                entry is None
                or entry.posts >= RESPONSE_URL_MAX_POSTS
                or time.monotonic() - entry.created > self.response_url_ttl
            ):
                return web.json_response({"ok": False, "error": "expired_url"}, status=404)
            try:
                payload = json.loads(raw)
            except ValueError:
                return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
            if not isinstance(payload, dict):
                return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
            try:
                self._apply_response(entry, payload)
            except _ApiError as error:
                return web.json_response(self._error_body(error), status=400)
            entry.posts += 1
            self.responses.append(
                ResponsePost(
                    url=entry.url,
                    payload=copy.deepcopy(payload),
                    channel=entry.channel,
                    user=entry.user,
                    time=time.time(),
                )
            )
        return web.json_response({"ok": True})

    def _apply_response(self, entry: _ResponseUrl, payload: JSONDict) -> None:
        """What a response_url post does to the channel (caller holds the lock)."""
        original = None
        if entry.channel and entry.message_ts:
            found = self._channels.get(entry.channel)
            original = found.messages.get(entry.message_ts) if found else None
        if payload.get("delete_original"):
            if original is not None:
                original.deleted = True
            return
        text, blocks = self._content(payload)
        if payload.get("replace_original") and original is not None:
            original.text = text
            original.blocks = blocks
            original.edits += 1
            original.edited_ts = self._next_ts()
            return
        if entry.channel is None:
            return
        thread_ts = payload.get("thread_ts") if isinstance(payload.get("thread_ts"), str) else None
        if payload.get("response_type") == "in_channel":
            self._new_bot_message(entry.channel, text, blocks, thread_ts)
        elif entry.user is not None:
            message = _Message(
                channel=entry.channel,
                ts=self._next_ts(),
                user=self.bot_user_id,
                text=text,
                is_bot=True,
                blocks=blocks,
                thread_ts=thread_ts,
                ephemeral_to=entry.user,
            )
            self._ephemeral.setdefault((entry.channel, entry.user), []).append(message)

    async def _handle_fake_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_fake_channel(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(m) for m in self.messages(request.match_info["channel"])])

    async def _handle_fake_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = request.match_info["kind"]
        if kind == "dm":
            event = self.dm(body["user"], body["text"], channel=body.get("channel"))
        elif kind == "mention":
            event = self.mention(
                body["user"],
                body["text"],
                channel=body.get("channel", "C0GENERAL"),
                thread_ts=body.get("thread_ts"),
            )
        elif kind == "channel_message":
            event = self.channel_message(
                body["user"], body["text"], channel=body["channel"], thread_ts=body.get("thread_ts")
            )
        else:
            return web.json_response({"error": f"unknown event kind {kind}"}, status=404)
        return web.json_response(event)

    async def _handle_fake_deliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        status, text, elapsed = await self.deliver_event(
            body["app_url"],
            body["event"],
            event_id=body.get("event_id"),
            retry_num=body.get("retry_num"),
        )
        return web.json_response({"status": status, "body": text, "elapsed": elapsed})

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            valid = ticket in self._tickets
            self._tickets.discard(ticket)
        if not valid:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._lock:
            self._sockets.append(ws)
            count = len(self._sockets)
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": count,
                        "debug_info": {
                            "host": "applink-fake",
                            "build_number": 1,
                            "approximate_connection_time": 18060,
                        },
                        "connection_info": {"app_id": self.api_app_id},
                    }
                )
            )
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
                    payload = data.get("payload")
                    with self._lock:
                        self.socket_acks.append(
                            SocketAck(
                                data["envelope_id"],
                                payload if isinstance(payload, dict) else None,
                                time.time(),
                            )
                        )
        finally:
            with self._lock:
                if ws in self._sockets:
                    self._sockets.remove(ws)
        return ws

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode connections are open."""
        with self._lock:
            return len(self._sockets)

    def socket_send(
        self,
        payload_type: str,
        payload: JSONDict,
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Push an envelope to the newest Socket Mode connection; returns its envelope_id.

        ``payload_type`` is ``events_api``, ``slash_commands`` or ``interactive``.
        """
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": payload_type,
            "accepts_response_payload": (
                payload_type != "events_api"
                if accepts_response_payload is None
                else accepts_response_payload
            ),
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        with self._lock:
            if not self._sockets:
                raise RuntimeError("no Socket Mode connection is open")
            ws = self._sockets[-1]
        self._submit(ws.send_str(json.dumps(envelope))).result(timeout=10)
        return envelope_id

    def socket_event(self, event: JSONDict, *, event_id: str | None = None) -> str:
        """Push an Events API envelope for ``event`` over Socket Mode; returns envelope_id."""
        return self.socket_send("events_api", self.event_envelope(event, event_id=event_id))

    def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``disconnect`` message to every connection and close them."""

        async def close_all() -> None:
            for ws in list(self._sockets):
                message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}}
                await ws.send_str(json.dumps(message))
                await ws.close()

        self._submit(close_all()).result(timeout=10)

    async def wait_for_socket_ack(self, envelope_id: str) -> SocketAck:
        """Wait (on the caller's loop) until ``envelope_id`` is acknowledged.

        Gives up with :class:`TimeoutError` after ``WAIT_LIMIT`` seconds; wrap the call in
        ``asyncio.timeout`` for a tighter limit.
        """
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            with self._lock:
                for ack in self.socket_acks:
                    if ack.envelope_id == envelope_id:
                        return ack
            if time.monotonic() > deadline:
                raise TimeoutError(f"envelope {envelope_id} was not acknowledged")
            await asyncio.sleep(0.01)

    async def wait_for_socket_connection(self) -> None:
        """Wait (on the caller's loop) until a Socket Mode connection is open (at most
        ``WAIT_LIMIT`` seconds)."""
        deadline = time.monotonic() + WAIT_LIMIT
        while self.socket_connections == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("no Socket Mode connection was opened")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ events: builders

    def _record_user_message(
        self,
        user: str,
        text: str,
        channel: str,
        thread_ts: str | None,
        *,
        subtype: str | None = None,
        files: list[JSONDict] | None = None,
    ) -> _Message:
        if not _CHANNEL_RE.match(channel):
            raise ValueError(f"not a Slack channel id: {channel!r}")
        if not _USER_RE.match(user):
            raise ValueError(f"not a Slack user id: {user!r}")
        with self._lock:
            self._ensure_user(user)
            return self._store(
                _Message(
                    channel=channel,
                    ts=self._next_ts(),
                    user=user,
                    text=text,
                    is_bot=False,
                    blocks=_rich_text(text) if text and subtype in (None, "file_share") else None,
                    thread_ts=thread_ts,
                    subtype=subtype,
                    files=copy.deepcopy(files or []),
                )
            )

    def _message_event(self, message: _Message, event_type: str = "message") -> JSONDict:
        with self._lock:
            event = self._to_slack(message)
        event["type"] = event_type
        event["channel"] = message.channel
        event["event_ts"] = message.ts
        if event_type == "message":
            event["channel_type"] = _channel_type(message.channel)
        if not message.is_bot and message.subtype in (None, "file_share"):
            event["client_msg_id"] = str(uuid.uuid4())
        return event

    def dm(
        self,
        user: str,
        text: str,
        *,
        channel: str | None = None,
        files: list[JSONDict] | None = None,
        thread_ts: str | None = None,
    ) -> JSONDict:
        """A user's direct message to the bot (``message``, ``channel_type: im``).

        ``channel`` defaults to :meth:`dm_channel`; ``files`` (from :meth:`add_file`) make
        it a ``file_share`` message.
        """
        message = self._record_user_message(
            user,
            text,
            channel or self.dm_channel(user),
            thread_ts,
            subtype="file_share" if files else None,
            files=files,
        )
        return self._message_event(message)

    def mention(
        self,
        user: str,
        text: str,
        *,
        channel: str = "C0GENERAL",
        thread_ts: str | None = None,
        files: list[JSONDict] | None = None,
    ) -> JSONDict:
        """An ``app_mention``; ``<@BOT>`` is put in front of ``text`` unless it mentions it.

        ``files`` (from :meth:`add_file`) are shared with the message: the event lists
        them, and the recorded message is a ``file_share`` (see :meth:`message_event_of`).
        """
        tag = f"<@{self.bot_user_id}>"
        if tag not in text:
            text = f"{tag} {text}"
        message = self._record_user_message(
            user, text, channel, thread_ts, subtype="file_share" if files else None, files=files
        )
        event = self._message_event(message, "app_mention")
        event.pop("subtype", None)  # an app_mention lists the files but has no subtype
        return event

    def message_event_of(self, event: JSONDict) -> JSONDict:
        """The ``message`` event Slack also sends for the message of ``event`` (say an
        ``app_mention``) to apps subscribed to ``message.channels`` and the like."""
        channel, ts = str(event.get("channel")), event.get("ts")
        with self._lock:
            try:
                message = self._find(channel, ts)
            except _ApiError:
                raise ValueError(f"no message {ts} in {channel}") from None
        return self._message_event(message)

    def channel_message(
        self, user: str, text: str, *, channel: str, thread_ts: str | None = None
    ) -> JSONDict:
        """A user's message in a channel (``message``, ``channel_type: channel``)."""
        message = self._record_user_message(user, text, channel, thread_ts)
        return self._message_event(message)

    def own_message(
        self, text: str, channel: str, *, thread_ts: str | None = None, legacy: bool = False
    ) -> JSONDict:
        """The ``message`` event Slack echoes for the bot's own post.

        By default it is shaped as for a chat.postMessage with the bot token (``user`` is
        the bot user, with ``bot_id``/``bot_profile``); ``legacy=True`` gives the
        ``subtype: bot_message`` shape (``bot_id``, ``username``, no ``user``).
        """
        if not _CHANNEL_RE.match(channel):
            raise ValueError(f"not a Slack channel id: {channel!r}")
        with self._lock:
            message = self._new_bot_message(
                channel,
                text,
                None,
                thread_ts,
                subtype="bot_message" if legacy else None,
                legacy_bot=legacy,
            )
        return self._message_event(message)

    def message_changed(self, channel: str, ts: str, new_text: str) -> JSONDict:
        """Edit a stored message and return Slack's ``message_changed`` event for it."""
        with self._lock:
            try:
                message = self._find(channel, ts)
            except _ApiError:
                raise ValueError(f"no message {ts} in {channel}") from None
            previous = self._to_slack(message)
            message.text = new_text
            if not message.is_bot:
                message.blocks = _rich_text(new_text)
            message.edits += 1
            event_ts = self._next_ts()
            message.edited_ts = event_ts
            current = self._to_slack(message)
        return {
            "type": "message",
            "subtype": "message_changed",
            "message": current,
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": _channel_type(channel),
        }

    def channel_join(self, user: str, channel: str) -> JSONDict:
        """A ``channel_join`` message (``<@user> has joined the channel``)."""
        message = self._record_user_message(
            user, f"<@{user}> has joined the channel", channel, None, subtype="channel_join"
        )
        return self._message_event(message)

    def member_joined_channel(self, user: str, channel: str) -> JSONDict:
        """The ``member_joined_channel`` event (no message is recorded)."""
        return {
            "type": "member_joined_channel",
            "user": user,
            "channel": channel,
            "channel_type": "C" if _channel_type(channel) == "channel" else "G",
            "team": self.team_id,
            "event_ts": self._next_ts(),
        }

    def file_share(
        self,
        user: str,
        channel: str,
        file: JSONDict,
        *,
        text: str = "",
        thread_ts: str | None = None,
    ) -> JSONDict:
        """A user's ``file_share`` message carrying ``file`` (from :meth:`add_file`)."""
        message = self._record_user_message(
            user, text, channel, thread_ts, subtype="file_share", files=[file]
        )
        return self._message_event(message)

    # ------------------------------------------------------------------ events: envelopes

    def event_id_for(self, event: JSONDict) -> str:
        """The ``event_id`` of ``event``: stable, so a redelivery carries the same id."""
        key = (
            event.get("type"),
            event.get("subtype"),
            event.get("channel"),
            event.get("event_ts") or event.get("ts"),
        )
        with self._lock:
            found = self._event_ids.get(key)
            if found is None:
                found = _random_id("Ev")
                self._event_ids[key] = found
            return found

    def event_envelope(self, event: JSONDict, *, event_id: str | None = None) -> JSONDict:
        """The ``event_callback`` envelope Slack wraps ``event`` in."""
        stamp = event.get("event_ts") or event.get("ts")
        try:
            event_time = int(float(stamp)) if stamp is not None else int(time.time())
        except ValueError:
            event_time = int(time.time())
        context = {
            "et": event.get("type"),
            "tid": self.team_id,
            "aid": self.api_app_id,
            "cid": event.get("channel"),
        }
        encoded = base64.urlsafe_b64encode(json.dumps(context).encode()).decode().rstrip("=")
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": copy.deepcopy(event),
            "type": "event_callback",
            "event_id": event_id or self.event_id_for(event),
            "event_time": event_time,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{encoded}",
        }

    def slash_command_payload(
        self,
        command: str,
        text: str = "",
        *,
        user_id: str,
        user_name: str = "",
        channel_id: str,
        channel_name: str = "",
    ) -> dict[str, str]:
        """The form fields Slack sends for a slash command (with a fresh response_url)."""
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name or ("directmessage" if channel_id[:1] == "D" else ""),
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(channel_id, user_id),
            "trigger_id": self._trigger_id(),
        }

    def block_action_payload(
        self,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str,
        thread_ts: str | None = None,
        block_id: str | None = None,
        user_name: str = "",
    ) -> JSONDict:
        """The ``block_actions`` payload of a button click on the message ``message_ts``."""
        with self._lock:
            channel = self._channels.get(channel_id)
            stored = channel.messages.get(message_ts) if channel else None
            message: JSONDict = (
                self._to_slack(stored)
                if stored is not None
                else {"type": "message", "ts": message_ts, "text": ""}
            )
        if block_id is None:
            block_id = self._block_id_of(message.get("blocks") or [], action_id)
        container: JSONDict = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        name = user_name or user_id.lower()
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": name, "name": name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": "directmessage"}
            if channel_id[:1] == "D"
            else {"id": channel_id, "name": channel_id.lower()},
            "message": message,
            "state": {"values": {}},
            "response_url": self.new_response_url(channel_id, user_id, message_ts),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": value, "emoji": True},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    @staticmethod
    def _block_id_of(blocks: list[JSONDict], action_id: str) -> str:
        for block in blocks:
            elements = list(block.get("elements") or [])
            if isinstance(block.get("accessory"), dict):
                elements.append(block["accessory"])
            if any(isinstance(e, dict) and e.get("action_id") == action_id for e in elements):
                return str(block.get("block_id") or secrets.token_urlsafe(4)[:5])
        return secrets.token_urlsafe(4)[:5]

    @staticmethod
    def _trigger_id() -> str:
        return f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"

    # ------------------------------------------------------------------ events: senders

    async def _post_signed(
        self,
        app_url: str,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None,
        secret: str | None,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, str, float]:
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "User-Agent": SLACK_USER_AGENT,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(self.signing_secret if secret is None else secret, stamp, body),
            **(extra_headers or {}),
        }
        started = time.perf_counter()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                app_url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
            ) as response,
        ):
            text = await response.text()
            return response.status, text, time.perf_counter() - started

    async def deliver_event(
        self,
        app_url: str,
        event: JSONDict,
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str, float]:
        """POST ``event`` in its ``event_callback`` envelope, signed, to the app.

        Returns ``(status, body, elapsed_seconds)``.  ``retry_num`` adds Slack's retry
        headers; ``secret``/``timestamp`` override the signing secret and request time
        (for bad or stale signatures).
        """
        body = json.dumps(self.event_envelope(event, event_id=event_id)).encode()
        extra: dict[str, str] = {}
        if retry_num is not None:
            extra[RETRY_NUM_HEADER] = str(retry_num)
            extra[RETRY_REASON_HEADER] = retry_reason
        return await self._post_signed(
            app_url,
            body,
            "application/json",
            timestamp=timestamp,
            secret=secret,
            extra_headers=extra,
        )

    async def slash_command(
        self,
        app_url: str,
        command: str,
        text: str = "",
        *,
        user_id: str,
        user_name: str = "",
        channel_id: str,
        channel_name: str = "",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str, float]:
        """POST a slash command, form-encoded and signed like Slack; see :meth:`deliver_event`."""
        fields = self.slash_command_payload(
            command,
            text,
            user_id=user_id,
            user_name=user_name,
            channel_id=channel_id,
            channel_name=channel_name,
        )
        return await self._post_signed(
            app_url,
            urlencode(fields).encode(),
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            secret=secret,
        )

    async def block_action(
        self,
        app_url: str,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str,
        thread_ts: str | None = None,
        block_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str, float]:
        """POST a ``block_actions`` payload (form field ``payload``), signed like Slack."""
        payload = self.block_action_payload(
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
            action_id=action_id,
            value=value,
            thread_ts=thread_ts,
            block_id=block_id,
        )
        return await self._post_signed(
            app_url,
            urlencode({"payload": json.dumps(payload)}).encode(),
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            secret=secret,
        )

    async def url_verification(
        self,
        app_url: str,
        *,
        challenge: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str, float]:
        """POST Slack's ``url_verification`` request; the app must echo the challenge."""
        body = {
            "token": self.verification_token,
            "challenge": challenge or secrets.token_urlsafe(32),
            "type": "url_verification",
        }
        return await self._post_signed(
            app_url,
            json.dumps(body).encode(),
            "application/json",
            timestamp=timestamp,
            secret=secret,
        )

    def deliver_event_sync(
        self, app_url: str, event: JSONDict, **kwargs: Any
    ) -> tuple[int, str, float]:
        """:meth:`deliver_event` from a thread without a loop (for an app in another thread)."""
        result: tuple[int, str, float] = self._submit(
            self.deliver_event(app_url, event, **kwargs)
        ).result(timeout=60)
        return result

    def slash_command_sync(
        self, app_url: str, command: str, text: str = "", **kwargs: Any
    ) -> tuple[int, str, float]:
        """:meth:`slash_command` from a thread without a loop."""
        result: tuple[int, str, float] = self._submit(
            self.slash_command(app_url, command, text, **kwargs)
        ).result(timeout=60)
        return result

    def url_verification_sync(self, app_url: str, **kwargs: Any) -> tuple[int, str, float]:
        """:meth:`url_verification` from a thread without a loop."""
        result: tuple[int, str, float] = self._submit(
            self.url_verification(app_url, **kwargs)
        ).result(timeout=60)
        return result

    def block_action_sync(self, app_url: str, **kwargs: Any) -> tuple[int, str, float]:
        """:meth:`block_action` from a thread without a loop."""
        result: tuple[int, str, float] = self._submit(self.block_action(app_url, **kwargs)).result(
            timeout=60
        )
        return result


# --------------------------------------------------------------------------- standalone


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.slack_server", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=8082, help="TCP port on 127.0.0.1 (0 = pick a free one)"
    )
    parser.add_argument("--bot-token", default="xoxb-test-token")
    parser.add_argument("--app-token", default="xapp-test-token")
    parser.add_argument("--signing-secret", default="test-signing-secret")
    parser.add_argument("--team-id", default="T0FAKE")
    parser.add_argument("--bot-user-id", default="U0BOT")
    parser.add_argument("--bot-id", default="B0BOT")
    parser.add_argument(
        "--per-channel-rate", type=float, default=1.0, help="posts/s per channel (inf = no limit)"
    )
    parser.add_argument("--per-channel-burst", type=int, default=3)
    parser.add_argument("--no-streaming", action="store_true", help="answer chat.*Stream unknown")
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeSlack(
        bot_token=args.bot_token,
        app_token=args.app_token,
        signing_secret=args.signing_secret,
        team_id=args.team_id,
        bot_user_id=args.bot_user_id,
        bot_id=args.bot_id,
        per_channel_rate=args.per_channel_rate,
        per_channel_burst=args.per_channel_burst,
        streaming=not args.no_streaming,
        port=args.port,
    )
    with fake:
        print(f"FAKE_SLACK {fake.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
