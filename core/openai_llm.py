"""The LLM gateway on the official ``openai`` SDK: Responses API and Chat Completions, both
streaming, with retries and vendor errors translated into ``core.errors``."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
)

from core.errors import (
    ContextTooLong,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from core.llm import (
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
    """How often and how patiently to retry 429s and 5xx before any text arrived."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0

    def delay(self, attempt: int, hint: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (from 0), honouring ``hint``."""
        if hint is not None:
            return min(max(hint, 0.0), MAX_RETRY_AFTER)
        base = min(self.backoff * 2.0**attempt, self.max_backoff)
        return base * (0.5 + random.random() / 2)


class OpenAIGateway:
    """``LLMGateway`` over an injected ``AsyncOpenAI`` client; the registry picks the API.

    The request bodies are built here already in wire format and passed as ``extra_body``:
    the SDK's recursive type-driven transform of ``input``/``messages`` costs about half a
    millisecond per context item, which dominated a turn's own time (see bench/RESULTS.md).
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
        """Run the call, retrying failures that happen before the first text chunk."""
        attempt = 0
        while True:
            started = False
            try:
                call = (
                    self._responses(request)
                    if request.model.api == "responses"
                    else self._chat(request)
                )
                async for event in call:
                    started = True
                    yield event
                return
            except openai.OpenAIError as exc:
                error = translate(exc)
            except UpstreamError as exc:
                error = exc
            retryable = isinstance(error, RateLimited | UpstreamUnavailable)
            if started or not retryable or attempt >= self._retry.attempts:
                raise error
            hint = error.retry_after if isinstance(error, RateLimited) else None
            delay = self._retry.delay(attempt, hint)
            log.warning(
                "model call failed (%s, request %s); retry %d in %.2fs",
                type(error).__name__,
                error.request_id,
                attempt + 1,
                delay,
            )
            attempt += 1
            await self._sleep(delay)

    async def _responses(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        params: dict[str, Any] = {
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
        stream = await self._client.responses.create(
            model=request.model.id, stream=True, extra_body=params
        )
        request_id = stream.response.headers.get("x-request-id")
        text: list[str] = []
        calls: list[ToolCall] = []
        usage: Usage | None = None
        status = "completed"
        async with stream:
            async for event in stream:
                if isinstance(event, ResponseTextDeltaEvent):
                    text.append(event.delta)
                    yield TextChunk(event.delta)
                elif isinstance(event, ResponseOutputItemDoneEvent) and isinstance(
                    event.item, ResponseFunctionToolCall
                ):
                    item = event.item
                    calls.append(ToolCall(item.call_id, item.name, item.arguments))
                elif isinstance(event, ResponseCompletedEvent | ResponseIncompleteEvent):
                    status = event.response.status or status
                    reported = event.response.usage
                    if reported is not None:
                        usage = Usage(
                            reported.input_tokens,
                            reported.input_tokens_details.cached_tokens,
                            reported.output_tokens,
                        )
                elif isinstance(event, ResponseFailedEvent):
                    failure = event.response.error
                    raise _stream_error(
                        failure.code if failure else None,
                        failure.message if failure else "response failed",
                        request_id,
                    )
                elif isinstance(event, ResponseErrorEvent):
                    raise _stream_error(event.code, event.message, request_id)
        yield Completion("".join(text), tuple(calls), usage, request_id, {"status": status})

    async def _chat(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
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
        stream = await self._client.chat.completions.create(
            model=request.model.id, messages=[], stream=True, extra_body=params
        )
        request_id = stream.response.headers.get("x-request-id")
        text: list[str] = []
        partial_calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        finish = "stop"
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    details = chunk.usage.prompt_tokens_details
                    usage = Usage(
                        chunk.usage.prompt_tokens,
                        (details.cached_tokens or 0) if details else 0,
                        chunk.usage.completion_tokens,
                    )
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        yield TextChunk(delta.content)
                    for fragment in delta.tool_calls or ():
                        call = partial_calls.setdefault(
                            fragment.index, {"id": "", "name": "", "arguments": ""}
                        )
                        call["id"] = fragment.id or call["id"]
                        if fragment.function is not None:
                            call["name"] += fragment.function.name or ""
                            call["arguments"] += fragment.function.arguments or ""
                    finish = choice.finish_reason or finish
        calls = tuple(
            ToolCall(call["id"], call["name"], call["arguments"] or "{}")
            for _, call in sorted(partial_calls.items())
        )
        yield Completion("".join(text), calls, usage, request_id, {"status": finish})


def _responses_item(item: ContextItem) -> dict[str, Any]:
    if isinstance(item, ChatTurn):
        return {"role": item.role, "content": item.text}
    if isinstance(item, ToolCall):
        return {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    return {"type": "function_call_output", "call_id": item.call_id, "output": item.output}


def _chat_messages(instructions: str, items: list[ContextItem] | Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}]
    for item in items:
        if isinstance(item, ChatTurn):
            messages.append({"role": item.role, "content": item.text})
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
    if code in (None, "server_error"):
        return UpstreamUnavailable(message, request_id=request_id)
    return UpstreamRejected(message, request_id=request_id)


def translate(exc: openai.OpenAIError) -> UpstreamError:
    """Turn an ``openai`` SDK exception into Switchboard's error tree."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return UpstreamUnavailable(f"cannot reach the model API: {type(exc).__name__}")
    if not isinstance(exc, openai.APIStatusError):
        return UpstreamUnavailable(type(exc).__name__)
    request_id = exc.request_id
    code = exc.code if isinstance(exc.code, str) else None
    message = exc.message
    status = exc.status_code
    if status == 429:
        if code == "insufficient_quota":
            return QuotaExhausted(message, request_id=request_id)
        return RateLimited(message, retry_after=_retry_after(exc), request_id=request_id)
    if status >= 500 or status in (408, 409):
        return UpstreamUnavailable(message, request_id=request_id)
    if status in (400, 413) and (
        code == "context_length_exceeded" or "maximum context length" in message
    ):
        return ContextTooLong(message, request_id=request_id)
    return UpstreamRejected(message, request_id=request_id)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            continue
    return None
