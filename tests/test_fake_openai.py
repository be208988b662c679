"""Tests for the fake OpenAI server, driven through the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageFunctionToolCall
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

from tests.fakes import FakeOpenAI, RecordedRequest, Scripted

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake server running for the duration of one test."""
    with FakeOpenAI() as server:
        yield server


def client_for(
    fake: FakeOpenAI, api_key: str = "sk-test", timeout: float = 30.0
) -> openai.AsyncOpenAI:
    """The real SDK client, pointed at the fake, with retries disabled."""
    return openai.AsyncOpenAI(
        base_url=fake.base_url, api_key=api_key, max_retries=0, timeout=timeout
    )


def tokens(chars: int) -> int:
    """The fake's token estimate for ``chars`` characters."""
    return math.ceil(chars / 4)


async def collect(stream: openai.AsyncStream[ResponseStreamEvent]) -> list[ResponseStreamEvent]:
    """All events of a Responses stream."""
    return [event async for event in stream]


# --------------------------------------------------------------------------- Responses API


@pytest.mark.asyncio
async def test_responses_stream_text_deltas_and_usage(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="The quick brown fox jumps", chunks=3))
    async with client_for(fake) as client:
        stream = await client.responses.create(
            model=MODEL, instructions="Be brief.", input="Tell me about foxes", stream=True
        )
        events = await collect(stream)

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[4:-4] == ["response.output_text.delta"] * 3
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))

    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert [d.delta for d in deltas] == ["The quic", "k brown ", "fox jumps"]
    assert all(d.item_id.startswith("msg_") and d.output_index == 0 for d in deltas)
    assert all(d.content_index == 0 and d.logprobs == [] for d in deltas)

    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    response = completed.response
    assert response.id.startswith("resp_")
    assert response.id == events[0].response.id  # type: ignore[union-attr]
    assert response.status == "completed"
    assert response.model == MODEL
    assert response.output_text == "The quick brown fox jumps"
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == tokens(len("Be brief.") + len("Tell me about foxes"))
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens == tokens(len("The quick brown fox jumps"))
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


@pytest.mark.asyncio
async def test_responses_stream_default_chunks_are_small_word_pieces(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="Hello wonderful world"))
    async with client_for(fake) as client:
        events = await collect(await client.responses.create(model=MODEL, input="x", stream=True))
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(deltas) == "Hello wonderful world"
    assert len(deltas) > 3
    assert all(len(d.strip()) <= 4 for d in deltas)


@pytest.mark.asyncio
async def test_responses_stream_helper_echoes_last_user_message(fake: FakeOpenAI) -> None:
    async with (
        client_for(fake) as client,
        client.responses.stream(
            model=MODEL,
            input=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
            ],
        ) as stream,
    ):
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "Echo: second question"
    assert final.output_text == "Echo: second question"
    assert final.usage is not None
    expected_chars = len("first question") + len("first answer") + len("second question")
    assert final.usage.input_tokens == tokens(expected_chars)


@pytest.mark.asyncio
async def test_responses_non_streaming_with_request_id(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="Plain answer"))
    async with client_for(fake) as client:
        raw = await client.responses.with_raw_response.create(
            model=MODEL, input="q?", instructions="sys", max_output_tokens=50
        )
        response = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "Plain answer"
    assert response.instructions == "sys"
    assert response.max_output_tokens == 50
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.id.startswith("msg_")
    assert response.usage is not None
    assert response.usage.input_tokens == tokens(len("q?") + len("sys"))
    assert response.usage.output_tokens == tokens(len("Plain answer"))


@pytest.mark.asyncio
async def test_responses_tool_calls_stream(fake: FakeOpenAI) -> None:
    fake.enqueue(
        Scripted(
            text="Let me check.",
            tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})],
        )
    )
    tools: list[openai.types.responses.ToolParam] = [
        {
            "type": "function",
            "name": name,
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        }
        for name in ("get_weather", "get_time")
    ]
    async with client_for(fake) as client:
        stream = await client.responses.create(
            model=MODEL, input="weather?", tools=tools, stream=True
        )
        events = await collect(stream)

    arg_deltas: dict[str, str] = {}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            arg_deltas[event.item_id] = arg_deltas.get(event.item_id, "") + event.delta
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [item.type for item in added] == ["message", "function_call", "function_call"]
    first_call = added[1]
    assert isinstance(first_call, ResponseFunctionToolCall)
    assert first_call.arguments == ""
    assert first_call.status == "in_progress"

    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    calls = [o for o in completed.response.output if isinstance(o, ResponseFunctionToolCall)]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"tz": "Europe/Paris"}]
    assert [c.call_id for c in calls] == ["call_1", "call_2"]
    assert all(c.id is not None and c.id.startswith("fc_") for c in calls)
    assert {c.id: c.arguments for c in calls} == arg_deltas
    assert completed.response.output_text == "Let me check."
    assert completed.response.tools[0].type == "function"
    usage = completed.response.usage
    assert usage is not None
    expected = tokens(len("Let me check."))
    expected += tokens(len('{"city":"Paris"}')) + tokens(len('{"tz":"Europe/Paris"}'))
    assert usage.output_tokens == expected


@pytest.mark.asyncio
async def test_responses_tool_call_round_trip_non_streaming(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(tool_calls=[("lookup", {"q": "switchboard"})]))
    async with client_for(fake) as client:
        first = await client.responses.create(model=MODEL, input="look it up")
        assert [o.type for o in first.output] == ["function_call"]
        call = first.output[0]
        assert isinstance(call, ResponseFunctionToolCall)
        assert call.name == "lookup"
        assert json.loads(call.arguments) == {"q": "switchboard"}
        assert first.output_text == ""

        second = await client.responses.create(
            model=MODEL,
            input=[
                {"role": "user", "content": "look it up"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "found it"},
            ],
        )
    assert second.output_text == "Echo: look it up"
    body = fake.model_requests()[-1].body
    assert body is not None
    items = body["input"]
    assert isinstance(items, list)
    assert [i.get("type") for i in items] == [None, "function_call", "function_call_output"]
    assert second.usage is not None
    chars = len("look it up") + len(call.arguments) + len("found it")
    assert second.usage.input_tokens == tokens(chars)


# --------------------------------------------------------------------------- Chat Completions


@pytest.mark.asyncio
async def test_responses_stop_at_max_output_tokens_as_incomplete(fake: FakeOpenAI) -> None:
    long_text = "word " * 200  # 250 tokens by the fake's count
    fake.enqueue(Scripted(text=long_text), Scripted(text="short"))
    async with client_for(fake) as client:
        events = await collect(
            await client.responses.create(
                model=MODEL, input="talk", max_output_tokens=16, stream=True
            )
        )
        short = await client.responses.create(model=MODEL, input="talk", max_output_tokens=16)
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    last = events[-1]
    assert text == long_text[:64]  # 16 tokens of 4 characters
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None and last.response.usage.output_tokens == 16
    assert short.status == "completed" and short.output_text == "short"  # within the limit
    assert short.usage is not None and short.usage.output_tokens == tokens(len("short"))


@pytest.mark.asyncio
async def test_responses_refuse_an_output_limit_below_16(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="kept for the next request"))
    async with client_for(fake) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model=MODEL, input="talk", max_output_tokens=15)
        after = await client.responses.create(model=MODEL, input="talk")
    assert refused.value.code == "integer_below_min_value"
    assert refused.value.param == "max_output_tokens"
    assert "Expected a value >= 16, but got 15 instead." in refused.value.message
    assert after.output_text == "kept for the next request"


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
async def test_chat_stops_at_its_output_limit_with_finish_reason_length(
    fake: FakeOpenAI, field: str
) -> None:
    fake.enqueue(
        Scripted(text="word " * 50, tool_calls=[("get_time", {"tz": "UTC"})]),
        Scripted(text="Sure.", tool_calls=[("get_time", {"tz": "UTC"})]),
    )
    async with client_for(fake) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "talk"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={field: 5},
        )
        chunks = [c async for c in stream]
        # Room for the text (2 tokens) but not for the call's arguments (3 more).
        cut_call = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "talk"}], extra_body={field: 4}
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == ("word " * 50)[:20]
    assert finish[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    [choice] = cut_call.choices
    assert choice.finish_reason == "length"
    assert choice.message.content == "Sure." and not choice.message.tool_calls
    assert cut_call.usage is not None and cut_call.usage.completion_tokens == 4


@pytest.mark.asyncio
async def test_chat_refuses_an_output_limit_below_1(fake: FakeOpenAI) -> None:
    async with client_for(fake) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], max_completion_tokens=0
            )
    assert refused.value.code == "integer_below_min_value"
    assert refused.value.param == "max_completion_tokens"


@pytest.mark.asyncio
async def test_chat_stream_text_with_usage_chunk(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="Hi there, human", chunks=2))
    async with client_for(fake) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hello"},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks: list[ChatCompletionChunk] = [c async for c in stream]

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert [piece for piece in content if piece] == ["Hi ther", "e, human"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert finish[:-1] == [None] * (len(finish) - 1)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == tokens(len("You are terse.") + len("hello"))
    assert last.usage.completion_tokens == tokens(len("Hi there, human"))
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 0
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 0
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.asyncio
async def test_chat_stream_without_include_usage_has_no_usage(fake: FakeOpenAI) -> None:
    async with client_for(fake) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "ping"}], stream=True
        )
        chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Echo: ping"


@pytest.mark.asyncio
async def test_chat_stream_helper_accumulates(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="Accumulated reply"))
    async with (
        client_for(fake) as client,
        client.chat.completions.stream(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            stream_options={"include_usage": True},
        ) as stream,
    ):
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "Accumulated reply"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.completion_tokens == tokens(len("Accumulated reply"))


@pytest.mark.asyncio
async def test_chat_non_streaming(fake: FakeOpenAI) -> None:
    async with client_for(fake) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
        )
        completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: parts work"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == tokens(len("parts work"))
    assert completion.usage.completion_tokens == tokens(len("Echo: parts work"))


@pytest.mark.asyncio
async def test_chat_tool_calls_stream(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(tool_calls=[("search", {"query": "cats", "limit": 3}), ("noop", {})]))
    async with client_for(fake) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "find cats"}], stream=True
        )
        chunks = [c async for c in stream]

    assert chunks[0].choices[0].delta.content is None  # tool-only answer, like the real API
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
                assert tc.type == "function"
            assert tc.function is not None
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
    assert sorted(calls) == [0, 1]
    assert calls[0]["name"] == "search"
    assert json.loads(calls[0]["arguments"]) == {"query": "cats", "limit": 3}
    assert calls[1] == {"id": "call_2", "name": "noop", "arguments": "{}"}
    assert calls[0]["id"] == "call_1"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_chat_tool_calls_non_streaming_and_round_trip(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="Checking", tool_calls=[("get_weather", {"city": "Oslo"})]))
    async with client_for(fake) as client:
        first = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "weather in Oslo?"}]
        )
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert message.content == "Checking"
        assert message.tool_calls is not None
        call = message.tool_calls[0]
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        assert call.id == "call_1"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Oslo"}

        second = await client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.function.name,
                                "arguments": call.function.arguments,
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call.id, "content": "-3C, snow"},
            ],
        )
    assert second.choices[0].message.content == "Echo: weather in Oslo?"
    assert second.usage is not None
    chars = len("weather in Oslo?") + len(call.function.arguments) + len("-3C, snow")
    assert second.usage.prompt_tokens == tokens(chars)


@pytest.mark.asyncio
async def test_chat_stream_helper_parses_tool_calls(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(tool_calls=[("add", {"a": 1, "b": 2})]))
    async with (
        client_for(fake) as client,
        client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": "1+2"}]
        ) as stream,
    ):
        done_events = [e async for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = await stream.get_final_completion()
    assert [e.name for e in done_events] == ["add"]
    assert json.loads(done_events[0].arguments) == {"a": 1, "b": 2}
    tool_calls = final.choices[0].message.tool_calls
    assert tool_calls is not None
    assert tool_calls[0].function.name == "add"


# --------------------------------------------------------------------------- errors

ERROR_CASES = [
    ("rate_limit", openai.RateLimitError, 429, "requests", "rate_limit_exceeded"),
    ("insufficient_quota", openai.RateLimitError, 429, "insufficient_quota", "insufficient_quota"),
    (
        "context_length_exceeded",
        openai.BadRequestError,
        400,
        "invalid_request_error",
        "context_length_exceeded",
    ),
    ("server_error", openai.InternalServerError, 500, "server_error", None),
    ("bad_request", openai.BadRequestError, 400, "invalid_request_error", None),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("kind", "exc_type", "status", "err_type", "code"), ERROR_CASES)
async def test_scripted_errors_raise_sdk_exceptions(
    fake: FakeOpenAI,
    api: str,
    stream: bool,
    kind: str,
    exc_type: type[openai.APIStatusError],
    status: int,
    err_type: str,
    code: str | None,
) -> None:
    fake.enqueue(Scripted(error=kind), Scripted(text="after the error"))
    async with client_for(fake) as client:
        with pytest.raises(exc_type) as info:
            if api == "responses":
                await client.responses.create(model=MODEL, input="hi", stream=stream)
            else:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=stream
                )
        after = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "again"}]
        )
    exc = info.value
    assert exc.status_code == status
    assert exc.code == code
    assert exc.type == err_type
    assert exc.request_id is not None and exc.request_id.startswith("req_")
    assert isinstance(exc.body, dict)
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["code"] == code
    if kind == "insufficient_quota":
        assert exc.message.endswith(str(exc.body["message"]))
        assert "You exceeded your current quota" in exc.message
    if kind == "context_length_exceeded":
        assert exc.param == ("input" if api == "responses" else "messages")
        assert "maximum context length is" in exc.message
    if kind == "bad_request":
        assert "Invalid value for 'temperature'" in exc.message
    # The error consumed exactly one script; the next one is served normally.
    assert after.choices[0].message.content == "after the error"


@pytest.mark.asyncio
async def test_rate_limit_retry_after_headers(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(error="rate_limit", retry_after=2.5), Scripted(error="rate_limit"))
    async with client_for(fake) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(model=MODEL, input="hi")
        assert info.value.response.headers["retry-after"] == "2.5"
        assert info.value.response.headers["retry-after-ms"] == "2500"
        assert "try again in 2.5s" in info.value.message

        with pytest.raises(openai.RateLimitError) as info2:
            await client.responses.create(model=MODEL, input="hi")
        assert "retry-after" not in info2.value.response.headers


@pytest.mark.asyncio
async def test_sdk_retries_rate_limit_using_retry_after(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(error="rate_limit", retry_after=0.05), Scripted(text="second try"))
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=1) as c:
        response = await c.responses.create(model=MODEL, input="hi")
    assert response.output_text == "second try"
    assert len(fake.model_requests()) == 2


@pytest.mark.asyncio
async def test_wrong_api_key_is_rejected_without_consuming_script(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="for the right key"))
    async with client_for(fake, api_key="sk-wrong-key-123456") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.responses.create(model=MODEL, input="hi")
    exc = info.value
    assert exc.status_code == 401
    assert exc.code == "invalid_api_key"
    assert exc.type == "invalid_request_error"
    assert exc.message.startswith("Error code: 401 - ")
    assert "Incorrect API key provided" in exc.message
    assert "sk-wrong-key-123456" not in exc.message  # masked like the real API
    assert fake.pending == 1
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-wrong-key-123456"


@pytest.mark.asyncio
async def test_missing_key_and_bad_json_and_unknown_route(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        missing = await http.post("/responses", json={"model": MODEL, "input": "x"})
        auth = {"Authorization": "Bearer sk-test"}
        bad_json = await http.post(
            "/chat/completions",
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json"},
        )
        unknown = await http.get("/nope", headers=auth)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] is None
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    assert bad_json.status_code == 400
    assert "could not parse the JSON body" in bad_json.json()["error"]["message"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    assert all(r.headers["x-request-id"].startswith("req_") for r in (missing, bad_json, unknown))
    assert [r.body for r in fake.requests] == [{"model": MODEL, "input": "x"}, None, None]


@pytest.mark.asyncio
async def test_context_limits_reject_long_input_without_consuming_script() -> None:
    with FakeOpenAI(context_limits={"tiny": 5, "big": 1000}) as fake:
        fake.enqueue(Scripted(text="short answer"))
        long_text = "x" * 40  # 10 estimated tokens > 5
        async with client_for(fake) as client:
            with pytest.raises(openai.BadRequestError) as info:
                await client.responses.create(model="tiny", input=long_text, stream=True)
            assert info.value.code == "context_length_exceeded"
            assert info.value.param == "input"
            assert "maximum context length is 5 tokens" in info.value.message
            assert "resulted in 10 tokens" in info.value.message

            with pytest.raises(openai.BadRequestError) as chat_info:
                await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": long_text}]
                )
            assert chat_info.value.code == "context_length_exceeded"
            assert chat_info.value.param == "messages"

            assert fake.pending == 1
            ok = await client.responses.create(model="big", input=long_text)
            assert ok.output_text == "short answer"
            assert fake.pending == 0

            models = await client.models.list()
            listed = [m.id for m in models.data]
            assert listed[-2:] == ["tiny", "big"]  # after the shipped registry's models
            assert set(listed) == set(fake.shutdowns) | {"big", "tiny"}


# --------------------------------------------------------------------------- behaviour knobs


@pytest.mark.asyncio
async def test_usage_override_and_default_reply() -> None:
    with FakeOpenAI(default_reply=lambda text: text.upper()) as fake:
        fake.enqueue(Scripted(text="cached", usage=(1000, 800, 7)))
        async with client_for(fake) as client:
            first = await client.responses.create(model=MODEL, input="hi")
            second = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "shout this"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in second]
    assert first.usage is not None
    assert first.usage.input_tokens == 1000
    assert first.usage.input_tokens_details.cached_tokens == 800
    assert first.usage.output_tokens == 7
    assert first.usage.total_tokens == 1007
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "SHOUT THIS"


@pytest.mark.asyncio
async def test_chunk_delay_spaces_out_deltas(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="one two three", chunks=3, chunk_delay=0.1))
    arrivals: list[float] = []
    async with client_for(fake) as client:
        stream = await client.responses.create(model=MODEL, input="x", stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.18


@pytest.mark.asyncio
async def test_hang_stream_can_be_cancelled_by_client(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="never sent", hang=True), Scripted(text="next"))
    async with client_for(fake) as client:
        stream = await client.responses.create(model=MODEL, input="x", stream=True)
        first = await stream.__anext__()
        assert first.type == "response.created"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await stream.__anext__()
        await stream.close()

        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
        assert chat.choices[0].message.content == "next"


@pytest.mark.asyncio
async def test_hang_non_streaming_times_out_on_client(fake: FakeOpenAI) -> None:
    fake.enqueue(Scripted(text="never", hang=True))
    async with client_for(fake, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}]
            )
    assert len(fake.model_requests()) == 1


@pytest.mark.asyncio
async def test_hang_does_not_block_server_shutdown() -> None:
    fake = FakeOpenAI().start()
    try:
        fake.enqueue(Scripted(hang=True))
        async with client_for(fake) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
            first = await stream.__anext__()
            assert first.choices[0].delta.role == "assistant"
            started = time.monotonic()
            await asyncio.to_thread(fake.stop)
            assert time.monotonic() - started < 3
            assert not fake.running
            with pytest.raises((StopAsyncIteration, openai.APIConnectionError)):
                async with asyncio.timeout(2):
                    await stream.__anext__()
            await stream.close()
    finally:
        fake.stop()


# --------------------------------------------------------------------------- recording & misc


@pytest.mark.asyncio
async def test_requests_are_recorded_and_reset(fake: FakeOpenAI) -> None:
    async with client_for(fake) as client:
        await client.models.list()
        await client.responses.create(model=MODEL, input="one", store=False)
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "two"}], temperature=0.2
        )
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/responses"),
        ("POST", "/v1/chat/completions"),
    ]
    model_requests = fake.model_requests()
    assert [r.path for r in model_requests] == ["/v1/responses", "/v1/chat/completions"]
    responses_req, chat_req = model_requests
    assert isinstance(responses_req, RecordedRequest)
    assert responses_req.headers["authorization"] == "Bearer sk-test"
    assert responses_req.body == {"model": MODEL, "input": "one", "store": False}
    assert chat_req.body is not None
    assert chat_req.body["temperature"] == 0.2
    assert fake.requests[0].body is None

    fake.enqueue(Scripted(text="dropped"))
    fake.reset()
    assert fake.requests == []
    assert fake.pending == 0
    async with client_for(fake) as client:
        reply = await client.responses.create(model=MODEL, input="fresh")
    assert reply.output_text == "Echo: fresh"
    assert len(fake.requests) == 1


@pytest.mark.asyncio
async def test_concurrent_requests_consume_each_script_once(fake: FakeOpenAI) -> None:
    expected = {f"reply {i}" for i in range(20)}
    fake.enqueue(*(Scripted(text=t) for t in sorted(expected)))
    async with client_for(fake) as client:

        async def ask(i: int) -> str:
            if i % 2:
                r = await client.responses.create(model=MODEL, input="q")
                return r.output_text
            c = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "q"}]
            )
            return c.choices[0].message.content or ""

        answers = await asyncio.gather(*(ask(i) for i in range(20)))
    assert set(answers) == expected
    assert fake.pending == 0
    assert len(fake.model_requests()) == 20


def test_enqueue_from_other_threads_is_safe(fake: FakeOpenAI) -> None:
    def worker(n: int) -> None:
        for i in range(50):
            fake.enqueue(Scripted(text=f"{n}-{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.pending == 200


def test_scripted_rejects_unknown_error_kind() -> None:
    with pytest.raises(ValueError, match="unknown error kind"):
        Scripted(error="teapot")
    with pytest.raises(ValueError, match="chunks"):
        Scripted(chunks=0)


def test_base_url_and_lifecycle() -> None:
    fake = FakeOpenAI()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
        assert fake.port > 0
        with pytest.raises(RuntimeError):
            fake.start()
    assert not fake.running
    fake.stop()  # idempotent


def test_standalone_process_serves_default_replies() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        marker, base_url = line.split(" ", 1)
        assert marker == "FAKE_OPENAI"
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
            response = client.responses.create(model=MODEL, input="standalone")
            chat = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "streamed"}],
                stream=True,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
        assert response.output_text == "Echo: standalone"
        assert text == "Echo: streamed"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
