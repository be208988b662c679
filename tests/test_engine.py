"""The engine end to end: real composition root, real openai client, fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from bots.bootstrap import App
from core.conversation.events import ReplyFailed, ReplyFinished, ToolFinished, ToolStarted
from core.conversation.messages import ConversationKey, IncomingMessage, NewMessage, Role, UserRef
from core.conversation.pipeline import Delivery
from core.models.llm import Usage
from core.money.budgets import Budget, Payer, Scope
from core.money.money import format_usd
from core.money.periods import Period
from core.money.pricing import token_cost
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, RecordedRequest, Scripted
from tests.fakes.sinks import RecordingSink

KEY = ConversationKey("console", place="room-1")
ADA = UserRef("console", "ada", username="ada")

# One model per API family in the shipped registry.
API_MODELS = {"responses": "gpt-4.1-mini", "chat": "gpt-4o"}
API_PATHS = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


def message(text: str, key: ConversationKey = KEY, event_id: str | None = None) -> IncomingMessage:
    return IncomingMessage(key, ADA, text, event_id=event_id)


async def ask(app: App, text: str, key: ConversationKey = KEY) -> RecordingSink:
    """Send ``text`` the way every channel does: through the inbound pipeline."""
    sink = RecordingSink()
    await app.pipeline.handle(Delivery(message(text, key), lambda _: sink))
    return sink


def sent_texts(request: RecordedRequest) -> list[str]:
    """The user/assistant texts a model request carried, in order, for either API."""
    body = request.body or {}
    items = body.get("input") if "input" in body else body.get("messages")
    assert isinstance(items, list)
    texts = []
    for item in items:
        if isinstance(item, dict) and item.get("role") in ("user", "assistant"):
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
    return texts


def tool_outputs(request: RecordedRequest) -> dict[str, str]:
    """Tool results sent back to the model, by call id, for either API."""
    body = request.body or {}
    outputs: dict[str, str] = {}
    for item in body.get("input") or body.get("messages") or []:
        assert isinstance(item, dict)
        if item.get("type") == "function_call_output":
            outputs[str(item["call_id"])] = str(item["output"])
        if item.get("role") == "tool":
            outputs[str(item["tool_call_id"])] = str(item["content"])
    return outputs


def offered_tools(request: RecordedRequest) -> list[str]:
    body = request.body or {}
    names = []
    for entry in body.get("tools") or []:
        assert isinstance(entry, dict)
        function = entry.get("function", entry)
        assert isinstance(function, dict)
        names.append(str(function["name"]))
    return names


@pytest.fixture(params=["responses", "chat"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def use_api(app: App, api: str, key: ConversationKey = KEY) -> None:
    await app.choices.set_model(key, API_MODELS[api])


async def test_reply_streams_and_is_stored_with_usage(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(
        Scripted(text="Hello there, my good friend!", chunks=4, usage=(100, 20, 10))
    )
    async with make_app() as app:
        await use_api(app, api)
        sink = await ask(app, "hi")
        assert len(sink.deltas) == 4
        assert "".join(sink.deltas) == "Hello there, my good friend!"
        assert sink.final == ReplyFinished("Hello there, my good friend!")

        [request] = fake_openai.model_requests()
        assert request.path == API_PATHS[api]
        assert request.body and request.body["stream"] is True
        conversation = await app.store.active_conversation(KEY)
        stored = await app.store.recent_messages(conversation.id, limit=10)
        assert [(m.role, m.text) for m in stored] == [
            (Role.ASSISTANT, "Hello there, my good friend!"),
            (Role.USER, "hi"),
        ]
        [usage] = await app.store.usage(conversation.id)
        model = app.registry.model(API_MODELS[api])
        assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (100, 20, 10)
        assert usage.cost_micros == token_cost(model.prices, Usage(100, 20, 10))
        assert usage.cost_micros == {"responses": 50, "chat": 325}[api]
        assert usage.request_id and usage.request_id.startswith("req_")
        assert usage.prices["output_per_1m"] == model.prices.output


async def test_conversation_remembers_earlier_turns(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    async with make_app() as app:
        await use_api(app, api)
        await ask(app, "My name is Ada.")
        await ask(app, "What is my name?")
    first, second = fake_openai.model_requests()
    assert sent_texts(first) == ["My name is Ada."]
    assert sent_texts(second) == ["My name is Ada.", "Echo: My name is Ada.", "What is my name?"]


async def test_a_restart_loses_nothing(make_app: AppFactory, fake_openai: FakeOpenAI) -> None:
    async with make_app() as app:
        await ask(app, "Remember the number 42.")
    async with make_app() as app:
        sink = await ask(app, "Which number?")
    assert sink.final == ReplyFinished("Echo: Which number?")
    assert sent_texts(fake_openai.model_requests()[-1]) == [
        "Remember the number 42.",
        "Echo: Remember the number 42.",
        "Which number?",
    ]


async def test_reset_starts_a_new_conversation_and_keeps_the_old(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await ask(app, "first topic")
        old = await app.store.active_conversation(KEY)
        await app.choices.reset(KEY)
        await ask(app, "second topic")
        assert len(await app.store.recent_messages(old.id, limit=10)) == 2
    assert sent_texts(fake_openai.model_requests()[-1]) == ["second topic"]


async def test_long_history_is_trimmed_to_the_budget(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    async with make_app(SWITCHBOARD_CONTEXT_TOKENS=3000) as app:
        await use_api(app, api)
        conversation = await app.store.active_conversation(KEY)
        for number in range(300):
            role = Role.USER if number % 2 == 0 else Role.ASSISTANT
            text = f"message {number:03d} " + "x" * 290
            await app.store.add_message(conversation.id, NewMessage(role, text, 100))
        sink = await ask(app, "and now?")
    assert isinstance(sink.final, ReplyFinished)
    texts = sent_texts(fake_openai.model_requests()[0])
    assert texts[-1] == "and now?"
    assert 5 < len(texts) < 40, len(texts)
    # The newest turns are kept, in order, and the context opens with a user turn.
    assert texts[-2].startswith("message 299")
    assert texts[0].startswith("message ") and int(texts[0][8:11]) % 2 == 0
    numbers = [int(t[8:11]) for t in texts[:-1]]
    assert numbers == sorted(numbers) and numbers == list(range(numbers[0], 300))


async def test_context_length_error_trims_and_retries_once(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    async with make_app() as app:
        await use_api(app, api)
        conversation = await app.store.active_conversation(KEY)
        for number in range(40):
            role = Role.USER if number % 2 == 0 else Role.ASSISTANT
            await app.store.add_message(
                conversation.id, NewMessage(role, f"turn {number} " + "y" * 400, 10)
            )
        # Our stored counts say it all fits; the API counts ~4,000 tokens and allows 3,000.
        fake_openai.context_limits[API_MODELS[api]] = 3000
        sink = await ask(app, "summarise")
    assert isinstance(sink.final, ReplyFinished)
    first, second = fake_openai.model_requests()
    assert len(sent_texts(second)) < len(sent_texts(first))
    assert sent_texts(second)[-1] == "summarise"


async def test_context_error_that_persists_is_reported(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(error="context_length_exceeded"), Scripted(error="context_length_exceeded")
    )
    async with make_app() as app:
        sink = await ask(app, "hello")
    assert isinstance(sink.final, ReplyFailed)
    assert "/reset" in sink.final.message
    assert len(fake_openai.model_requests()) == 2


async def test_other_bad_requests_are_reported_not_retried(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(Scripted(error="bad_request"))
    async with make_app() as app:
        await use_api(app, api)
        sink = await ask(app, "hello")
    assert sink.final == ReplyFailed(
        "The model could not answer that request. Try rephrasing it, or /reset."
    )
    assert len(fake_openai.model_requests()) == 1


async def test_rate_limit_is_retried_after_the_hint(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(Scripted(error="rate_limit", retry_after=0.2), Scripted(text="fine"))
    async with make_app() as app:
        await use_api(app, api)
        loop = asyncio.get_running_loop()
        started = loop.time()
        sink = await ask(app, "hello")
        elapsed = loop.time() - started
    assert sink.final == ReplyFinished("fine")
    assert len(fake_openai.model_requests()) == 2
    assert elapsed >= 0.2  # the retry-after hint was honoured, not the tiny test backoff


async def test_server_errors_are_retried_then_reported_kindly(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(*[Scripted(error="server_error")] * 3)
    async with make_app(SWITCHBOARD_OPENAI_MAX_RETRIES=2) as app:
        sink = await ask(app, "hello")
        conversation = await app.store.active_conversation(KEY)
        stored = await app.store.recent_messages(conversation.id, limit=5)
    assert sink.final == ReplyFailed(
        "The model service is not answering right now. Please try again shortly."
    )
    assert len(fake_openai.model_requests()) == 3
    assert [m.text for m in stored] == ["hello"]  # the user's message is kept


async def test_insufficient_quota_is_never_retried(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(Scripted(error="insufficient_quota"), Scripted(text="unreachable"))
    async with make_app() as app:
        await use_api(app, api)
        sink = await ask(app, "hello")
    assert isinstance(sink.final, ReplyFailed)
    assert "out of credit" in sink.final.message
    assert len(fake_openai.model_requests()) == 1


async def test_tools_run_and_results_go_back_to_the_model(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(
        Scripted(
            tool_calls=[
                ("calculator", {"expression": "6*7"}),
                ("current_time", {"timezone": "UTC"}),
            ]
        ),
        Scripted(text="It is 42."),
    )
    async with make_app() as app:
        await use_api(app, api)
        sink = await ask(app, "what is 6*7 and the time?")
    assert sink.final == ReplyFinished("It is 42.")
    started = [e for e in sink.tools if isinstance(e, ToolStarted)]
    finished = [e for e in sink.tools if isinstance(e, ToolFinished)]
    assert [e.name for e in started] == ["calculator", "current_time"]
    assert all(e.ok for e in finished) and len(finished) == 2
    first, second = fake_openai.model_requests()
    assert offered_tools(first) == ["current_time", "calculator", "generate_image"]
    outputs = tool_outputs(second)
    assert outputs[started[0].call_id] == "42"
    assert "UTC" in outputs[started[1].call_id]


async def test_a_failing_tool_is_fed_back_and_the_turn_goes_on(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(
        Scripted(tool_calls=[("calculator", {"expression": "1/0"})]),
        Scripted(text="Cannot divide by zero."),
    )
    async with make_app() as app:
        await use_api(app, api)
        sink = await ask(app, "1/0?")
    assert sink.final == ReplyFinished("Cannot divide by zero.")
    [finished] = [e for e in sink.tools if isinstance(e, ToolFinished)]
    assert not finished.ok
    assert tool_outputs(fake_openai.model_requests()[1]) == {
        finished.call_id: "error: division by zero"
    }


async def test_tool_rounds_are_limited(make_app: AppFactory, fake_openai: FakeOpenAI) -> None:
    call = Scripted(tool_calls=[("calculator", {"expression": "1+1"})])
    fake_openai.enqueue(call, call, Scripted(text="Done."))
    async with make_app(SWITCHBOARD_TOOL_ROUNDS=2) as app:
        sink = await ask(app, "loop forever")
    assert sink.final == ReplyFinished("Done.")
    requests = fake_openai.model_requests()
    assert len(requests) == 3
    assert [bool(offered_tools(r)) for r in requests] == [True, True, False]


def write_operator_tools(tmp_path: Path) -> tuple[Path, Path]:
    """An operator tool module with two tools that only finish if they run concurrently,
    and a modes file that enables them."""
    module = tmp_path / "team_tools.py"
    module.write_text(
        textwrap.dedent(
            '''
            import asyncio
            from core.tools.toolbox import tool

            _arrived = []
            _both = asyncio.Event()

            async def _meet(name: str) -> str:
                _arrived.append(name)
                if len(_arrived) == 2:
                    _both.set()
                await _both.wait()
                return f"{name} met its peer"

            @tool
            async def ping(note: str) -> str:
                """Ping."""
                return await _meet("ping")

            @tool
            async def pong(note: str) -> str:
                """Pong."""
                return await _meet("pong")
            '''
        )
    )
    modes = tmp_path / "modes.toml"
    modes.write_text(
        textwrap.dedent(
            """
            [defaults]
            mode = "team"
            [modes.team]
            title = "Team"
            system_prompt = "You help the team."
            tools = ["ping", "pong"]
            """
        )
    )
    return module, modes


async def test_parallel_tool_calls_run_concurrently(
    make_app: AppFactory,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, modes = write_operator_tools(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_openai.enqueue(
        Scripted(tool_calls=[("ping", {"note": "a"}), ("pong", {"note": "b"})]),
        Scripted(text="Both answered."),
    )
    async with make_app(
        SWITCHBOARD_TOOL_MODULES="team_tools",
        SWITCHBOARD_MODES_FILE=str(modes),
        SWITCHBOARD_TOOL_TIMEOUT_SECONDS=2,
    ) as app:
        sink = await ask(app, "ping and pong")
    assert sink.final == ReplyFinished("Both answered.")
    outputs = sorted(tool_outputs(fake_openai.model_requests()[1]).values())
    # Run one after the other, each would have waited for the other until the timeout.
    assert outputs == ["ping met its peer", "pong met its peer"]
    assert offered_tools(fake_openai.model_requests()[0]) == ["ping", "pong"]


async def test_cancel_stops_the_reply_and_keeps_what_was_written(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(Scripted(text="word " * 200, chunks=200, chunk_delay=0.02))
    async with make_app() as app:
        await use_api(app, api)
        sink = RecordingSink()
        turn = asyncio.create_task(app.assistant.answer_message(message("write a lot"), sink))
        await asyncio.wait_for(sink.first_text.wait(), 5)
        assert app.turns.is_busy(KEY)
        assert app.turns.cancel(KEY)
        await asyncio.wait_for(turn, 5)
        assert isinstance(sink.final, ReplyFinished) and sink.final.cancelled
        partial = sink.final.text
        assert partial and partial == "".join(sink.deltas) and len(partial) < len("word " * 200)
        assert not app.turns.is_busy(KEY)
        conversation = await app.store.active_conversation(KEY)
        [reply, _] = await app.store.recent_messages(conversation.id, limit=2)
        assert reply.text == partial
        [usage] = await app.store.usage(conversation.id)
        assert usage.output_tokens > 0 and usage.cost_micros > 0  # charged by estimate
        # The conversation keeps working afterwards.
        follow_up = await ask(app, "thanks")
    assert follow_up.final == ReplyFinished("Echo: thanks")


async def test_cancel_while_waiting_for_the_first_token(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="never", hang=True))
    async with make_app() as app:
        sink = RecordingSink()
        turn = asyncio.create_task(app.assistant.answer_message(message("hang"), sink))
        for _ in range(200):
            if app.turns.is_busy(KEY) and fake_openai.model_requests():
                break
            await asyncio.sleep(0.01)
        assert app.turns.cancel(KEY)
        await asyncio.wait_for(turn, 5)
    assert sink.final == ReplyFinished("", cancelled=True)


async def test_shutdown_stops_the_reply_and_refuses_those_waiting_behind_it(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="never", hang=True))
    async with make_app() as app:
        running, waiting = RecordingSink(), RecordingSink()
        first = asyncio.create_task(app.assistant.answer_message(message("hang"), running))
        for _ in range(200):
            if app.turns.is_busy(KEY) and fake_openai.model_requests():
                break
            await asyncio.sleep(0.01)
        second = asyncio.create_task(app.assistant.answer_message(message("queued"), waiting))
        await asyncio.sleep(0.05)  # the second waits for the conversation's turn

        assert app.turns.stop(KEY.channel) == 1
        await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert running.final == ReplyFinished("", cancelled=True)
    assert isinstance(waiting.final, ReplyFailed) and "restarting" in waiting.final.message
    assert len(fake_openai.model_requests()) == 1  # the queued message never reached it


async def test_cancel_with_nothing_running(make_app: AppFactory) -> None:
    async with make_app() as app:
        assert not app.turns.cancel(KEY)


async def test_one_reply_at_a_time_per_conversation(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(text="first answer", chunks=5, chunk_delay=0.05), Scripted(text="second answer")
    )
    async with make_app() as app:
        one, two = RecordingSink(), RecordingSink()
        await asyncio.gather(
            app.assistant.answer_message(message("first"), one),
            app.assistant.answer_message(message("second"), two),
        )
    assert one.final == ReplyFinished("first answer")
    assert two.final == ReplyFinished("second answer")
    # The second request was only sent once the first reply was complete and stored.
    assert sent_texts(fake_openai.model_requests()[1]) == ["first", "first answer", "second"]


async def test_different_conversations_run_concurrently(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    slow = Scripted(text="slow " * 20, chunks=20, chunk_delay=0.05)
    fake_openai.enqueue(slow, slow)
    other = ConversationKey("console", place="room-2")
    async with make_app() as app:
        a, b = RecordingSink(), RecordingSink()
        first = asyncio.create_task(app.assistant.answer_message(message("a"), a))
        await asyncio.wait_for(a.first_text.wait(), 5)
        second = asyncio.create_task(app.assistant.answer_message(message("b", other), b))
        await asyncio.wait_for(b.first_text.wait(), 5)
        assert not first.done()  # b started streaming while a was still streaming
        await asyncio.gather(first, second)
    assert isinstance(a.final, ReplyFinished) and isinstance(b.final, ReplyFinished)


@pytest.mark.parametrize("text", ["", "   \n\t "])
async def test_empty_messages_get_a_clear_answer_and_no_api_call(
    make_app: AppFactory, fake_openai: FakeOpenAI, text: str
) -> None:
    async with make_app() as app:
        sink = await ask(app, text)
    assert sink.final == ReplyFailed("Send me some text and I will answer it.")
    assert fake_openai.model_requests() == []


async def test_huge_messages_are_refused_politely(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app(SWITCHBOARD_MAX_MESSAGE_CHARS=1000) as app:
        sink = await ask(app, "z" * 5000)
        conversation = await app.store.active_conversation(KEY)
        assert await app.store.recent_messages(conversation.id, limit=5) == []
    assert isinstance(sink.final, ReplyFailed)
    assert "5,000 characters" in sink.final.message and "1,000" in sink.final.message
    assert fake_openai.model_requests() == []


async def test_a_message_larger_than_the_context_is_refused(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app(SWITCHBOARD_CONTEXT_TOKENS=1000) as app:
        sink = await ask(app, "w" * 20000)
    assert sink.final == ReplyFailed(
        "That message is too long for this model's context. Please shorten it."
    )
    assert fake_openai.model_requests() == []


async def test_a_redelivered_event_is_answered_once(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        first, again = RecordingSink(), RecordingSink()
        for sink in (first, again):
            delivery = Delivery(message("hello", event_id="evt-1"), lambda _, sink=sink: sink)
            await app.pipeline.handle(delivery)
    assert first.final == ReplyFinished("Echo: hello")
    assert again.events == []
    assert len(fake_openai.model_requests()) == 1


async def test_mode_prompt_and_date_reach_the_model(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    async with make_app() as app:
        await use_api(app, api)
        await app.choices.set_mode(KEY, "coder")
        await ask(app, "hi")
    body = fake_openai.model_requests()[0].body or {}
    if api == "responses":
        instructions = str(body["instructions"])
    else:
        messages = body["messages"]
        assert isinstance(messages, list)
        instructions = str(messages[0]["content"])
        assert messages[0]["role"] == "system"
    assert "experienced software engineer" in instructions
    assert "{date}" not in instructions
    assert json.dumps(body).count("sk-test") == 0


async def test_new_threads_start_with_their_places_choices(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = ConversationKey("slack", place="C1", scope="T1")
    thread = ConversationKey("slack", place="C1", scope="T1", thread="171.000")
    older = ConversationKey("slack", place="C1", scope="T1", thread="170.000")
    async with make_app() as app:
        await ask(app, "before the choice", older)
        await app.choices.set_mode(channel, "coder")
        await app.choices.set_model(channel, "gpt-4o")
        assert not await app.choices.has_conversation(thread)
        await ask(app, "in a new thread", thread)
        assert await app.choices.has_conversation(thread)
        new_mode, new_model = await app.choices.current(thread)
        old_mode, _ = await app.choices.current(older)
        await app.choices.set_mode(channel, "translator")
        kept_mode, _ = await app.choices.current(thread)
    assert (new_mode.id, new_model.id, old_mode.id, kept_mode.id) == (
        "coder",
        "gpt-4o",
        "assistant",
        "coder",
    )
    assert fake_openai.model_requests()[-1].path == "/v1/chat/completions"


async def test_cancel_place_stops_every_thread_of_a_channel(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = ConversationKey("slack", place="C1", scope="T1")
    threads = [ConversationKey("slack", place="C1", scope="T1", thread=f"{n}.0") for n in (1, 2)]
    elsewhere = ConversationKey("slack", place="C2", scope="T1", thread="3.0")
    for _ in range(3):
        fake_openai.enqueue(Scripted(text="slow " * 100, chunks=100, chunk_delay=0.02))
    async with make_app() as app:
        sinks = [RecordingSink() for _ in range(3)]
        turns = [
            asyncio.create_task(app.assistant.answer_message(message("go", key), sink))
            for key, sink in zip([*threads, elsewhere], sinks, strict=True)
        ]
        for sink in sinks:
            await asyncio.wait_for(sink.first_text.wait(), 5)
        assert app.turns.cancel_place(channel) == 2
        await asyncio.wait_for(asyncio.gather(*turns), 10)
    cancelled = [isinstance(s.final, ReplyFinished) and s.final.cancelled for s in sinks]
    assert cancelled == [True, True, False]


async def test_two_processes_on_one_database_see_each_others_turns(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as one, make_app() as two:
        await ask(one, "from one")
        await ask(two, "from two")
        await ask(one, "one again")  # one's cached history is stale and must be reloaded
    assert sent_texts(fake_openai.model_requests()[-1]) == [
        "from one",
        "Echo: from one",
        "from two",
        "Echo: from two",
        "one again",
    ]


async def test_cached_history_follows_resets_and_long_conversations(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app(SWITCHBOARD_CONTEXT_TOKENS=1200) as app:
        for number in range(30):
            await ask(app, f"question {number:02d} " + "q" * 100)
        long_request = sent_texts(fake_openai.model_requests()[-1])
        await app.choices.reset(KEY)
        await ask(app, "fresh start")
    # The budget keeps only the newest turns, contiguous and ending with the new question.
    numbers = [int(text[9:11]) for text in long_request if text.startswith("question")]
    assert numbers == list(range(numbers[0], 30)) and numbers[0] > 0
    assert sent_texts(fake_openai.model_requests()[-1]) == ["fresh start"]


async def test_over_budget_no_call_is_made_and_the_user_is_told_when_it_resets(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await app.storage.budgets.set_budget(Budget(Scope.USER, ADA.principal, Period.DAILY, 1_000))
        first = await ask(app, "this one fits, capped to what is left")
        [between] = await app.storage.budgets.status(
            Payer.of(ADA, KEY), app.storage.clock.now(), app.settings.zone
        )
        await app.storage.budgets.set_budget(
            Budget(Scope.USER, ADA.principal, Period.DAILY, between.spent_micros)
        )
        second = await ask(app, "this one may not")
        [status] = await app.storage.budgets.status(
            Payer.of(ADA, KEY), app.storage.clock.now(), app.settings.zone
        )
        conversation = await app.store.active_conversation(KEY)
        [usage] = await app.store.usage(conversation.id)
    assert first.final == ReplyFinished("Echo: this one fits, capped to what is left")
    assert isinstance(second.final, ReplyFailed)
    assert second.final.message.startswith(
        f"Your daily budget of {format_usd(between.spent_micros)} is used up; it resets at"
    )
    assert len(fake_openai.model_requests()) == 1  # the refused turn never reached the API
    assert status.spent_micros == usage.cost_micros > 1  # settled to the reported cost
    assert status.reserved_micros == 0


async def test_a_failed_call_releases_its_reservation(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(*[Scripted(error="server_error")] * 4)
    async with make_app(SWITCHBOARD_OPENAI_MAX_RETRIES=1) as app:
        await app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.MONTHLY, 1_000_000))
        failed = await ask(app, "this fails upstream")
        [status] = await app.storage.budgets.status(
            Payer.of(ADA, KEY), app.storage.clock.now(), app.settings.zone
        )
    assert isinstance(failed.final, ReplyFailed)
    assert (status.spent_micros, status.reserved_micros) == (0, 0)


async def test_a_flood_of_messages_is_slowed_down(make_app: AppFactory) -> None:
    async with make_app(SWITCHBOARD_USER_MESSAGES_PER_MINUTE=3) as app:
        sinks = [await ask(app, f"message {n}") for n in range(5)]
        other = await ask_as(app, UserRef("console", "ben"), "I am someone else")
    finals = [s.final for s in sinks]
    assert all(isinstance(f, ReplyFinished) for f in finals[:3])
    assert all(
        isinstance(f, ReplyFailed) and "faster than I can answer" in f.message for f in finals[3:]
    )
    assert isinstance(other.final, ReplyFinished)


async def ask_as(app: App, user: UserRef, text: str) -> RecordingSink:
    sink = RecordingSink()
    await app.pipeline.handle(Delivery(IncomingMessage(KEY, user, text), lambda _: sink))
    return sink
