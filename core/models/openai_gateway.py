"""The LLM gateway on the official ``openai`` SDK: Responses API and Chat Completions, both
streaming, with retries and vendor errors translated into ``core.errors``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai import AsyncAPIResponse, AsyncOpenAI

from core.errors import (
    AccessDenied,
    ApiKeyRejected,
    ContextTooLong,
    EndpointNotFound,
    ModelNotFound,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from core.models.llm import (
    ChatTurn,
    Completion,
    ContextItem,
    LLMEvent,
    LLMRequest,
    TextChunk,
    ToolCall,
    ToolOutput,
    Usage,
)

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry 429s, 5xx, cut streams and timeouts before any
    text arrived; ``total`` bounds the seconds from the first attempt until the first text
    (or the failure the user is told of), whatever the retries and the per-call timeout."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0
    total: float = 120.0

    def delay(self, attempt: int, hint: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (from 0), honouring ``hint``
        unless it is not a finite, non-negative number."""
        if hint is not None and math.isfinite(hint) and hint >= 0:
            return min(hint, MAX_RETRY_AFTER)
        base = min(self.backoff * 2.0**attempt, self.max_backoff)
        return base * (0.5 + random.random() / 2)


class Deadline:
    """The time left of a ``RetryPolicy.total`` started now."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._end = self._loop.time() + seconds

    def left(self) -> float:
        """Seconds left (0 when it has passed)."""
        return max(self._end - self._loop.time(), 0.0)

    def expired(self, what: str) -> UpstreamTimeout:
        """The error for a call that got no answer in time."""
        return UpstreamTimeout(
            f"the {what} got no answer within {self._seconds:g} s, retries included — "
            "check the network, or raise SWITCHBOARD_OPENAI_TOTAL_SECONDS"
        )


class OpenAIGateway:
    """``LLMGateway`` over an injected ``AsyncOpenAI`` client; the registry picks the API.

    The SDK sends the request (auth, base URL, headers, status errors), but bodies are built
    here in wire format and passed as ``extra_body``, and the event stream is read as plain
    JSON: the SDK's type-driven transforms cost about half a millisecond per context item
    going out and several milliseconds per reply coming back, which dominated a turn's own
    time (see bench/RESULTS.md).
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        """Run the call, retrying failures that happen before the first text chunk (a cut
        stream among them) within the policy's total time."""
        attempt = 0
        deadline = Deadline(self._retry.total)
        while True:
            started = False
            call = (
                self._responses(request)
                if request.model.api == "responses"
                else self._chat(request)
            )
            try:
                # Until the first event, the wait is bounded by what is left of the total;
                # after it, the SDK's timeout bounds each read of a reply under way.
                async with asyncio.timeout(deadline.left()):
                    first = await anext(call)
                started = True
                yield first
                async for event in call:
                    yield event
                return
            except StopAsyncIteration:
                return
            except TimeoutError:
                error: UpstreamError = deadline.expired("model call")
            except openai.OpenAIError as exc:
                error = translate(exc)
            except UpstreamError as exc:
                error = exc
            except httpx2.TransportError as exc:
                error = _cut(exc, request.model.id)
            finally:
                await call.aclose()
            delay = (
                None
                if started
                else retry_delay(self._retry, error, attempt, "model call", deadline.left())
            )
            if delay is None:
                raise error
            attempt += 1
            await self._sleep(delay)

    async def _responses(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        params: dict[str, Any] = {
            "model": request.model.id,
            "instructions": request.instructions,
            "input": [_responses_item(item) for item in request.items],
            "store": False,
        }
        if request.max_output_tokens:
            params["max_output_tokens"] = request.max_output_tokens
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "strict": tool.strict,
                }
                for tool in request.tools
            ]
        text: list[str] = []
        calls: list[ToolCall] = []
        usage: Usage | None = None
        # Everything but ``stream`` goes as extra_body: the SDK then has nothing to transform
        # (its type-driven transform of even the model name costs more than the request).
        async with self._client.responses.with_streaming_response.create(
            stream=True, extra_body=params
        ) as response:
            request_id = response.request_id
            _require_event_stream(response)
            async for event in _sse_data(response):
                kind = event.get("type")
                if kind == "response.output_text.delta":
                    delta = str(event.get("delta", ""))
                    text.append(delta)
                    yield TextChunk(delta)
                elif kind == "response.output_item.done":
                    item = _mapping(event.get("item"))
                    if item.get("type") == "function_call":
                        calls.append(
                            ToolCall(
                                str(item.get("call_id", "")),
                                str(item.get("name", "")),
                                str(item.get("arguments") or "{}"),
                            )
                        )
                elif kind in ("response.completed", "response.incomplete"):
                    result = _mapping(event.get("response"))
                    reported = _mapping(result.get("usage"))
                    if reported:
                        usage = Usage(
                            _int(reported.get("input_tokens")),
                            _int(
                                _mapping(reported.get("input_tokens_details")).get("cached_tokens")
                            ),
                            _int(reported.get("output_tokens")),
                        )
                elif kind == "response.failed":
                    failure = _mapping(_mapping(event.get("response")).get("error"))
                    raise _stream_error(
                        failure.get("code"), str(failure.get("message", "failed")), request_id
                    )
                elif kind == "error":
                    raise _stream_error(
                        event.get("code"), str(event.get("message", "error")), request_id
                    )
        yield Completion("".join(text), tuple(calls), usage, request_id)

    async def _chat(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        params: dict[str, Any] = {
            "messages": _chat_messages(request.instructions, request.items),
            "stream_options": {"include_usage": True},
        }
        if request.max_output_tokens:
            params["max_completion_tokens"] = request.max_output_tokens
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                        "strict": tool.strict,
                    },
                }
                for tool in request.tools
            ]
        text: list[str] = []
        partial_calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        async with self._client.chat.completions.with_streaming_response.create(
            model=request.model.id, messages=[], stream=True, extra_body=params
        ) as response:
            request_id = response.request_id
            _require_event_stream(response)
            async for chunk in _sse_data(response):
                if "error" in chunk:
                    failure = _mapping(chunk["error"])
                    raise _stream_error(
                        failure.get("code"), str(failure.get("message", "error")), request_id
                    )
                reported = _mapping(chunk.get("usage"))
                if reported:
                    usage = Usage(
                        _int(reported.get("prompt_tokens")),
                        _int(_mapping(reported.get("prompt_tokens_details")).get("cached_tokens")),
                        _int(reported.get("completion_tokens")),
                    )
                for choice in chunk.get("choices") or ():
                    delta = _mapping(_mapping(choice).get("delta"))
                    content = delta.get("content")
                    if content:
                        text.append(str(content))
                        yield TextChunk(str(content))
                    for raw_fragment in delta.get("tool_calls") or ():
                        fragment = _mapping(raw_fragment)
                        call = partial_calls.setdefault(
                            _int(fragment.get("index")), {"id": "", "name": "", "arguments": ""}
                        )
                        call["id"] = str(fragment.get("id") or call["id"])
                        function = _mapping(fragment.get("function"))
                        call["name"] += str(function.get("name") or "")
                        call["arguments"] += str(function.get("arguments") or "")
        calls = tuple(
            ToolCall(call["id"], call["name"], call["arguments"] or "{}")
            for _, call in sorted(partial_calls.items())
        )
        yield Completion("".join(text), calls, usage, request_id)


async def _sse_data(response: AsyncAPIResponse[Any]) -> AsyncIterator[dict[str, Any]]:
    """The JSON ``data`` payloads of a server-sent event stream, until ``[DONE]``.

    Parsed here as plain dicts: building the SDK's typed event models costs several times
    more CPU than the rest of a turn (see bench/RESULTS.md).
    """
    events = 0
    async for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        events += 1
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            raise UpstreamUnavailable("the model API sent a malformed event") from None
        if isinstance(payload, dict):
            yield payload
    if not events:
        raise EndpointNotFound(
            f"{_where(response.http_request.url)} answered without any events — {_BASE_URL_HINT}"
        )


def _require_event_stream(response: AsyncAPIResponse[Any]) -> None:
    """A web page where events were expected means the base URL leads somewhere else."""
    kind = response.headers.get("content-type", "")
    if "html" in kind:
        raise EndpointNotFound(
            f"{_where(response.http_request.url)} answered with a web page ({kind}), "
            f"not the API — {_BASE_URL_HINT}"
        )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _responses_item(item: ContextItem) -> dict[str, Any]:
    if isinstance(item, ChatTurn):
        if not item.images:
            return {"role": item.role, "content": item.text}
        parts: list[dict[str, Any]] = [{"type": "input_text", "text": item.text}]
        parts.extend(
            {"type": "input_image", "image_url": image.data_url, "detail": "auto"}
            for image in item.images
        )
        return {"role": item.role, "content": parts}
    if isinstance(item, ToolCall):
        return {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    return {"type": "function_call_output", "call_id": item.call_id, "output": item.output}


def _chat_messages(instructions: str, items: Sequence[ContextItem]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}]
    for item in items:
        if isinstance(item, ChatTurn):
            content: str | list[dict[str, Any]] = item.text
            if item.images:
                content = [{"type": "text", "text": item.text}]
                content.extend(
                    {"type": "image_url", "image_url": {"url": image.data_url, "detail": "auto"}}
                    for image in item.images
                )
            messages.append({"role": item.role, "content": content})
        elif isinstance(item, ToolCall):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1]
            if last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, ToolOutput):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def _stream_error(code: str | None, message: str, request_id: str | None) -> UpstreamError:
    if code == "context_length_exceeded":
        return ContextTooLong(message, request_id=request_id)
    if code == "insufficient_quota":
        return QuotaExhausted(message, request_id=request_id)
    if code == "rate_limit_exceeded":
        return RateLimited(message, request_id=request_id)
    if code == "model_not_found":
        return ModelNotFound(message, request_id=request_id)
    if code in (None, "server_error"):
        return UpstreamUnavailable(message, request_id=request_id)
    return UpstreamRejected(message, request_id=request_id)


def _cut(exc: httpx2.TransportError, model: str) -> UpstreamUnavailable:
    """The connection failed while the answer was read (the SDK leaves that unwrapped)."""
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout(
            f"the stream from {model} stalled — check the network, or raise "
            "SWITCHBOARD_OPENAI_TIMEOUT_SECONDS"
        )
    return UpstreamUnavailable(f"the stream from {model} was cut ({type(exc).__name__})")


def retry_delay(
    policy: RetryPolicy, error: UpstreamError, attempt: int, what: str, left: float
) -> float | None:
    """Seconds to wait before retry number ``attempt`` (from 0) after ``error``, logged; None
    when it is not retried: not a 429, 5xx, cut or timeout, ``insufficient_quota``, no
    attempts left, or the wait would not leave time for another try within ``left`` s."""
    if not isinstance(error, RateLimited | UpstreamUnavailable) or attempt >= policy.attempts:
        return None
    delay = policy.delay(attempt, error.retry_after if isinstance(error, RateLimited) else None)
    if delay >= left:
        return None
    log.warning(
        "%s failed (%s, request %s); retry %d in %.2fs",
        what,
        type(error).__name__,
        error.request_id,
        attempt + 1,
        delay,
    )
    return delay


_BASE_URL_HINT = "check OPENAI_BASE_URL (an OpenAI-compatible API, usually ending in /v1)"
_KEY_LIKE = re.compile(r"\b(?:sk|rk|sess)-[\w*.-]+")


def translate(exc: openai.OpenAIError) -> UpstreamError:
    """Turn an ``openai`` SDK exception into Switchboard's error tree.

    Messages are for the operator's log: they say what failed and which setting to check,
    and carry no key (the provider's own messages quote a masked one).
    """
    if isinstance(exc, openai.APIConnectionError):
        return _connection_error(exc)
    if isinstance(exc, openai.APIResponseValidationError):
        return EndpointNotFound(
            f"{_where(exc.request.url)} answered in a format that is not OpenAI's — "
            f"{_BASE_URL_HINT}"
        )
    if not isinstance(exc, openai.APIStatusError):
        return UpstreamUnavailable(type(exc).__name__)
    request_id = exc.request_id
    code = exc.code if isinstance(exc.code, str) else None
    message = _KEY_LIKE.sub("sk-…", exc.message)
    status = exc.status_code
    where = _where(exc.request.url)
    web_page = "html" in exc.response.headers.get("content-type", "")
    if status == 429:
        if code == "insufficient_quota":
            return QuotaExhausted(
                f"the account is out of credit (insufficient_quota: {message}) — add credit, "
                "or change OPENAI_API_KEY",
                request_id=request_id,
            )
        return RateLimited(message, retry_after=_retry_after(exc), request_id=request_id)
    if status >= 500 or status in (408, 409):
        return UpstreamUnavailable(
            f"{where} failed with {status}: {message}", request_id=request_id
        )
    if status == 401:
        return ApiKeyRejected(
            f"{where} rejected the key (401 {code or 'unauthorized'}: {message}) — "
            "check OPENAI_API_KEY",
            request_id=request_id,
        )
    if code == "model_not_found" or (
        status == 404 and not web_page and _MODEL_MISSING.search(message)
    ):
        return ModelNotFound(
            f"{where}: {message} — check the model names (the registry, "
            "SWITCHBOARD_MODELS_FILE) and that OPENAI_API_KEY may use them",
            request_id=request_id,
        )
    if status == 403:
        return AccessDenied(
            f"{where} refused access (403 {code or 'forbidden'}: {message}) — check that "
            "OPENAI_API_KEY's organisation and project may use it, from this region",
            request_id=request_id,
        )
    if status in (404, 405) or web_page:
        return EndpointNotFound(
            f"{where} answered {status} ({message}) — {_BASE_URL_HINT}", request_id=request_id
        )
    if status in (400, 413) and (
        code == "context_length_exceeded" or "maximum context length" in message
    ):
        return ContextTooLong(message, request_id=request_id)
    if status == 404 and (code == "model_not_found" or "does not exist" in message):
        return ModelNotFound(message, request_id=request_id)
    return UpstreamRejected(message, request_id=request_id)


_MODEL_MISSING = re.compile(r"\bmodel\b.*\b(?:not found|does not exist|not exist)", re.IGNORECASE)


def _connection_error(exc: openai.APIConnectionError) -> UpstreamUnavailable:
    """Refused connections and unknown hosts are not timeouts, whatever the SDK calls them:
    its aiohttp transport reports every failed connect as ``APITimeoutError``."""
    where = _where(exc.request.url)
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, socket.gaierror) for c in chain):
        return UpstreamUnreachable(f"cannot resolve the host of {where} — {_BASE_URL_HINT}")
    if any(isinstance(c, ssl.SSLError) for c in chain):
        return UpstreamUnreachable(f"TLS failed with {where} — {_BASE_URL_HINT}")
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return UpstreamUnreachable(
            f"cannot connect to {where} (connection refused) — {_BASE_URL_HINT}"
        )
    # The innermost OS error is the real one (aiohttp's own errors wrap it).
    system = [c for c in chain if isinstance(c, OSError) and not isinstance(c, TimeoutError)]
    if system:
        reason = system[-1].strerror or type(system[-1]).__name__
        return UpstreamUnreachable(f"cannot connect to {where} ({reason}) — {_BASE_URL_HINT}")
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(
            f"{where} did not answer in time — check the network, or raise "
            "SWITCHBOARD_OPENAI_TIMEOUT_SECONDS"
        )
    return UpstreamUnreachable(f"the connection to {where} failed — {_BASE_URL_HINT}")


def _where(url: object) -> str:
    """``scheme://host:port/path`` of a request, for logs: no query, no credentials."""
    text = str(url)
    scheme, _, rest = text.partition("://")
    host_and_path = rest.split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host_and_path}" if rest else text


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds  # ``nan``, ``inf`` or a negative hint is ignored: the backoff rules
    return None
