"""A fake OpenAI API server speaking the real wire formats.

The fake listens on ``127.0.0.1`` (in a background thread with its own event
loop) and implements enough of the OpenAI HTTP API for the official ``openai``
SDK to be pointed at it with ``base_url=fake.base_url``:

* ``POST /v1/responses`` (Responses API), streaming (SSE) and non-streaming;
* ``POST /v1/chat/completions`` (Chat Completions), streaming and non-streaming;
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

Answers are scripted with :class:`Scripted` objects queued through
:meth:`FakeOpenAI.enqueue`; when the queue is empty the fake echoes the last
user message (or calls ``default_reply``).  Every request is recorded as a
:class:`RecordedRequest`.

Run ``python -m tests.fakes.openai_server --port 8765`` to serve it in the
foreground from another process; it prints ``FAKE_OPENAI <base_url>`` once
listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fakes.background import BackgroundLoop

__all__ = ["ERROR_KINDS", "FakeOpenAI", "RecordedRequest", "Scripted", "main"]

ERROR_KINDS: Final[frozenset[str]] = frozenset(
    {"rate_limit", "insufficient_quota", "context_length_exceeded", "server_error", "bad_request"}
)
"""The values accepted by :attr:`Scripted.error`."""

RESPONSES_PATH: Final = "/v1/responses"
CHAT_PATH: Final = "/v1/chat/completions"
MODEL_PATHS: Final[frozenset[str]] = frozenset({RESPONSES_PATH, CHAT_PATH})

_DEFAULT_CONTEXT_LIMIT: Final = 128_000
_POLL_INTERVAL: Final = 0.05
_PIECE_RE: Final = re.compile(r"\s*\S{1,4}|\s+")
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SYSTEM_FINGERPRINT: Final = "fp_fake0openai"
_REQUEST_ID_KEY: Final = web.RequestKey("request_id", str)
_BODY_KEY: Final[web.RequestKey[dict[str, object] | None]] = web.RequestKey("body")

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


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by the fake (header names are lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object] | None
    """The parsed JSON body, or ``None`` when absent or not a JSON object."""


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


class _Aborted(Exception):
    """The client went away or the server is stopping: stop producing output."""


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


def _last_user_text(api: str, body: dict[str, object]) -> str:
    """Text of the last user message of a Responses or Chat request body."""
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
    else:
        items = body.get("messages")
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if (
            isinstance(item, dict)
            and item.get("role") == "user"
            and item.get("type", "message") == "message"
        ):
            return _parts_text(item.get("content"))
    return ""


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


# --------------------------------------------------------------------------- server


class FakeOpenAI:
    """Runs the fake on 127.0.0.1 in a background thread with its own event loop.

    Token estimates (unless a script sets ``usage``): input tokens are
    ``ceil(chars / 4)`` over instructions, message text (string or text parts),
    function-call arguments and tool outputs; output tokens are
    ``ceil(len(text) / 4)`` plus ``ceil(len(arguments_json) / 4)`` per tool call.
    Tool call ids are ``call_1``, ``call_2``, ... (counter cleared by :meth:`reset`).

    Attributes:
        requests: every request received, in order (header names lower-cased).
        context_limits: per-model context windows (also listed by ``GET /v1/models``).
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        port: int = 0,
        context_limits: dict[str, int] | None = None,
        default_reply: Callable[[str], str] | None = None,
    ) -> None:
        """Configure the fake; call :meth:`start` (or use ``with``) to serve.

        ``context_limits`` maps model names to their context window: requests whose
        estimated input tokens exceed it fail with ``context_length_exceeded``.
        ``default_reply`` computes the answer from the last user text when no
        script is queued (default ``"Echo: <text>"``).
        """
        self.api_key = api_key
        self.context_limits: dict[str, int] = dict(context_limits or {})
        self.default_reply = default_reply
        self.requests: list[RecordedRequest] = []
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._call_counter = 0
        self._background: BackgroundLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

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
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._on_response_prepare)
        app.router.add_post(RESPONSES_PATH, self._handle_responses)
        app.router.add_post(CHAT_PATH, self._handle_chat)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model}", self._handle_model)
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

    def reset(self) -> None:
        """Clear queued scripts, recorded requests and the ``call_N`` id counter."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self._call_counter = 0

    def model_requests(self) -> list[RecordedRequest]:
        """Recorded ``/v1/responses`` and ``/v1/chat/completions`` requests, in order."""
        with self._lock:
            return [r for r in self.requests if r.path in MODEL_PATHS]

    @property
    def pending(self) -> int:
        """Number of scripts still queued."""
        with self._lock:
            return len(self._queue)

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
        raw = await request.read() if request.body_exists else b""
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
        request[_BODY_KEY] = body
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(record)
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

    async def _on_response_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        request_id = request.get(_REQUEST_ID_KEY)
        response.headers.setdefault("x-request-id", request_id or _hex_id("req_", 16))
        response.headers.setdefault("openai-version", "2020-10-01")
        response.headers.setdefault("openai-organization", "org-fake")
        response.headers.setdefault("openai-processing-ms", "1")

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
        data = [self._model_object(m) for m in self.context_limits]
        return _json_response({"object": "list", "data": data})

    async def _handle_model(self, request: web.Request) -> web.Response:
        return _json_response(self._model_object(request.match_info["model"]))

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

        input_tokens = _tokens(_input_chars(api, body))
        limit = self.context_limits.get(model)
        if limit is not None and input_tokens > limit:
            return self._context_error(api, limit, input_tokens)

        script = self._pop_script()
        if script is not None and script.error is not None:
            return self._scripted_error(api, script, model, input_tokens)

        plan = self._plan(api, body, model, script, input_tokens)
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
    ) -> _Plan:
        if script is None:
            user_text = _last_user_text(api, body)
            text = (
                self.default_reply(user_text)
                if self.default_reply is not None
                else f"Echo: {user_text}"
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
        return _Plan(
            model=model,
            text=script.text,
            pieces=_split_text(script.text, script.chunks),
            tool_calls=calls,
            input_tokens=in_tok,
            cached_tokens=cached,
            output_tokens=out_tok,
            chunk_delay=script.chunk_delay,
            hang=script.hang,
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
    def _message_item(item_id: str, text: str | None) -> dict[str, object]:
        done = text is not None
        return {
            "id": item_id,
            "type": "message",
            "status": "completed" if done else "in_progress",
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
            output.append(self._message_item(message_id, plan.text))
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
        return {
            "id": response_id or _hex_id("resp_"),
            "object": "response",
            "created_at": created_at,
            "status": "completed" if completed else "in_progress",
            "background": False,
            "completed_at": int(time.time()) if completed else None,
            "error": None,
            "incomplete_details": None,
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
            for piece in plan.pieces:
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
                    "item": self._message_item(message_id, plan.text),
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
        emit({"type": "response.completed", "response": final})
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
                    "finish_reason": "tool_calls" if plan.tool_calls else "stop",
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
        for piece in plan.pieces:
            await before_delta()
            chunk({"content": piece})
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
        chunk({}, "tool_calls" if plan.tool_calls else "stop")
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


# --------------------------------------------------------------------------- standalone


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
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    limits: list[tuple[str, int]] = args.context_limit
    fake = FakeOpenAI(api_key=args.api_key, port=args.port, context_limits=dict(limits))
    with fake:
        print(f"FAKE_OPENAI {fake.base_url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
