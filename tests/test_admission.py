"""Turns in the order they came: a few at a time work, earliest arrival first; a turn lets
go while it waits for the model, when its reply is ready, and after ``hold_seconds``; a
waiting turn can be cancelled or stopped for shutdown; a burst through the Telegram
channel is answered first come, first served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as SqlTimeoutError

from core.conversation.admission import Admission, AdmittedGateway, leave, outside
from core.conversation.events import ReplyEvent, ReplyFailed, ReplyFinished
from core.conversation.messages import ConversationKey, Role
from core.conversation.turns import RESTARTING, Turn, TurnBody, TurnRunner
from core.models.llm import ChatTurn, LLMEvent, LLMRequest, TextChunk
from core.models.registry import load_registry
from core.storage.database import create_engine
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import FakeTelegram
from tests.test_telegram import eventually, running


class Sink:
    """Records what a reply shows."""

    def __init__(self) -> None:
        self.events: list[ReplyEvent] = []

    async def emit(self, event: ReplyEvent) -> None:
        self.events.append(event)


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_turns_beyond_the_limit_wait_and_go_in_arrival_order() -> None:
    admission = Admission(2)
    arrivals = [admission.arrival() for _ in range(6)]
    entered: list[int] = []
    release = {a: asyncio.Event() for a in arrivals}

    async def turn(arrival: int) -> None:
        with await admission.admit(arrival):
            entered.append(arrival)
            await release[arrival].wait()

    # The last two arrivals ask first and find free slots; the rest wait.
    tasks = [asyncio.create_task(turn(a)) for a in reversed(arrivals)]
    await settle()
    assert entered == [5, 4]
    assert (admission.working(), admission.waiting()) == (2, 4)
    for arrival in (5, 4, 0, 1, 2, 3):
        release[arrival].set()
        await settle()
    await asyncio.gather(*tasks)
    assert entered == [5, 4, 0, 1, 2, 3]  # the waiting ones by arrival, not by asking
    assert (admission.working(), admission.waiting()) == (0, 0)


async def test_a_turn_back_from_the_model_goes_before_later_arrivals() -> None:
    admission = Admission(1)
    first, second, third = (admission.arrival() for _ in range(3))
    order: list[str] = []
    model_answered = asyncio.Event()
    second_done = asyncio.Event()

    async def first_turn() -> None:
        with await admission.admit(first):
            order.append("first stores the question")
            async with outside():  # waiting for the model: its slot is free
                await model_answered.wait()
            order.append("first stores the answer")

    async def later_turn(arrival: int, name: str, done: asyncio.Event | None) -> None:
        with await admission.admit(arrival):
            order.append(f"{name} works")
            if done is not None:
                await done.wait()

    a = asyncio.create_task(first_turn())
    await settle()
    b = asyncio.create_task(later_turn(second, "second", second_done))
    await settle()
    assert order == ["first stores the question", "second works"]
    c = asyncio.create_task(later_turn(third, "third", None))
    await settle()
    model_answered.set()  # the first turn wants its slot back: it waits with the third
    await settle()
    second_done.set()
    await asyncio.gather(a, b, c)
    assert order == [
        "first stores the question",
        "second works",
        "first stores the answer",  # before the third, which came later
        "third works",
    ]


async def test_a_slot_held_too_long_is_let_go_so_nobody_starves() -> None:
    admission = Admission(1, hold_seconds=0.1)
    slow, quick = admission.arrival(), admission.arrival()
    forever = asyncio.Event()

    async def slow_turn() -> None:
        with await admission.admit(slow):
            await forever.wait()  # a picture being drawn, a tool that takes its time

    hog = asyncio.create_task(slow_turn())
    await settle()
    started = time.monotonic()
    with await admission.admit(quick):
        waited = time.monotonic() - started
    assert 0.05 < waited < 1.0
    forever.set()
    await hog
    assert admission.working() == 0


async def test_a_reply_ready_to_show_lets_the_next_turn_in() -> None:
    admission = Admission(1)
    first, second = admission.arrival(), admission.arrival()
    shown = asyncio.Event()

    async def first_turn() -> None:
        with await admission.admit(first):
            leave()  # the reply is ready; showing it waits for the platform
            await shown.wait()

    a = asyncio.create_task(first_turn())
    await settle()
    with await admission.admit(second):
        assert admission.working() == 1
    shown.set()
    await a
    assert admission.working() == 0


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    admission = Admission(1)
    holder, cancelled, next_one = (admission.arrival() for _ in range(3))
    done = asyncio.Event()

    async def holding() -> None:
        with await admission.admit(holder):
            await done.wait()

    a = asyncio.create_task(holding())
    await settle()
    b = asyncio.create_task(admission.admit(cancelled))
    c = asyncio.create_task(admission.admit(next_one))
    await settle()
    b.cancel()
    await settle()
    assert b.cancelled()
    done.set()
    await a
    with await c:
        assert (admission.working(), admission.waiting()) == (1, 0)
    assert admission.working() == 0


async def test_no_limit_never_waits() -> None:
    admission = Admission(0)
    holds = [await admission.admit(admission.arrival()) for _ in range(100)]
    assert admission.waiting() == 0
    for hold in holds:
        with hold:
            pass


def key(place: str) -> ConversationKey:
    return ConversationKey("test", place)


async def test_cancelling_a_waiting_turn_stops_it_before_it_begins() -> None:
    runner = TurnRunner(Admission(1))
    busy = asyncio.Event()
    finish = asyncio.Event()
    began: list[str] = []

    async def long_body(turn: Turn) -> None:
        began.append(turn.key.place)
        busy.set()
        await finish.wait()

    async def short_body(turn: Turn) -> None:
        began.append(turn.key.place)

    first_sink, waiting_sink = Sink(), Sink()
    a = asyncio.create_task(runner.run(key("a"), first_sink, long_body))
    await busy.wait()
    b = asyncio.create_task(runner.run(key("b"), waiting_sink, short_body))
    await settle()
    assert runner.is_busy(key("b"))  # waiting for a slot is being busy: /cancel finds it
    assert runner.cancel(key("b"))
    await b
    assert waiting_sink.events == [ReplyFinished("", cancelled=True)]
    assert began == ["a"]
    finish.set()
    await a
    assert not runner.is_busy(key("a")) and not runner.is_busy(key("b"))


async def test_shutdown_tells_a_waiting_turn_to_be_sent_again() -> None:
    runner = TurnRunner(Admission(1))
    busy = asyncio.Event()

    async def long_body(turn: Turn) -> None:
        busy.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert turn.stopped_by_request()

    async def never(turn: Turn) -> None:
        raise AssertionError("a waiting turn must not begin at shutdown")

    waiting_sink = Sink()
    a = asyncio.create_task(runner.run(key("a"), Sink(), long_body))
    await busy.wait()
    b = asyncio.create_task(runner.run(key("b"), waiting_sink, never))
    await settle()
    assert runner.stop("test") == 2
    await asyncio.gather(a, b)
    # Postponed: the turn stays open and recovery answers it after the restart.
    assert waiting_sink.events == [ReplyFailed(RESTARTING, postponed=True)]


async def test_one_conversations_turns_stay_in_order_with_a_limit() -> None:
    runner = TurnRunner(Admission(1))
    order: list[int] = []

    def body(n: int, pause: float) -> TurnBody:
        async def run(turn: Turn) -> None:
            await asyncio.sleep(pause)
            order.append(n)

        return run

    await asyncio.gather(
        *(runner.run(key("same"), Sink(), body(n, 0.03 - n * 0.01)) for n in range(3))
    )
    assert order == [0, 1, 2]


async def test_a_place_reserved_first_runs_first_even_if_its_turn_is_asked_later() -> None:
    runner = TurnRunner(Admission(1))
    order: list[str] = []
    first_ready = asyncio.Event()

    async def message(name: str, before: asyncio.Event | None) -> None:
        with runner.reserved(key("same")):  # as the pipeline does when a message arrives
            if before is not None:
                await before.wait()  # e.g. its photo still downloading

            async def body(turn: Turn) -> None:
                order.append(name)

            await runner.run(key("same"), Sink(), body)

    slow = asyncio.create_task(message("first", first_ready))
    fast = asyncio.create_task(message("second", None))
    await settle()
    assert order == []  # the second waits for the first, which has not run yet
    first_ready.set()
    await asyncio.gather(slow, fast)
    assert order == ["first", "second"]


async def test_a_place_given_up_without_a_turn_lets_the_next_one_run() -> None:
    runner = TurnRunner(Admission(1))
    ran: list[str] = []
    dropped = asyncio.Event()

    async def redelivery() -> None:
        with runner.reserved(key("same")):
            await dropped.wait()  # then found to be a redelivery: no turn

    async def body(turn: Turn) -> None:
        ran.append(turn.key.place)

    gone = asyncio.create_task(redelivery())
    await settle()
    with runner.reserved(key("same")):
        later = asyncio.create_task(runner.run(key("same"), Sink(), body))
        await settle()
        assert ran == []
        dropped.set()
        await asyncio.gather(gone, later)
    assert ran == ["same"]
    with runner.reserved(key("same")):  # the line is empty again: no wait
        await runner.run(key("same"), Sink(), body)
    assert ran == ["same", "same"]


async def test_the_sqlite_connection_goes_to_whoever_asked_for_it_first(sqlite_url: str) -> None:
    """A task that gives the single connection back and at once asks again (a turn's next
    statement) queues behind the task already waiting for it, instead of taking it back."""
    engine = create_engine(sqlite_url)
    order: list[str] = []

    async def waiter() -> None:
        async with engine.connect():
            order.append("waiting first")

    try:
        holder = await engine.connect()
        waiting = asyncio.create_task(waiter())
        await settle()
        await holder.close()
        async with engine.connect():
            order.append("asked again")
        await waiting
    finally:
        await engine.dispose()
    assert order == ["waiting first", "asked again"]


async def test_a_wait_for_the_connection_that_times_out_or_is_cancelled_leaves_no_trace(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, pool_timeout=0.05)
    try:
        holder = await engine.connect()
        with pytest.raises(SqlTimeoutError):
            await engine.connect()
        cancelled = asyncio.create_task(engine.connect().start())
        await settle()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await holder.close()
        async with engine.connect() as connection:  # handed to nobody gone: free at once
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_a_burst_of_chats_is_answered_first_come_first_served(
    make_app: AppFactory, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """40 private chats ask at the same moment (the Bot API's limits lifted, so that its
    pacing does not decide the order): the first chats' answers are stored before the last
    chats' questions, and sent before them, instead of all turns finishing together."""
    lifted = FakeTelegram(
        private_rate=10_000, private_burst=10_000, global_per_second=10_000
    ).start()
    chats = [5000 + n for n in range(40)]
    try:
        async with running(
            make_app,
            lifted,
            DATABASE_URL=database_url,
            SWITCHBOARD_TURNS_WORKING="4",
            SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND="10000",
            SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND="10000",
        ) as app:
            for chat in chats:  # one getUpdates answer holds them all, in this order
                lifted.private_message(chat, f"hello from {chat}")
            await eventually(lambda: all(lifted.chat(c) for c in chats), within=60)
            stored: dict[int, dict[Role, int]] = {}
            for chat in chats:
                conversation = await app.store.find_active(ConversationKey("telegram", str(chat)))
                assert conversation is not None
                messages = await app.store.recent_messages(conversation.id, limit=10)
                stored[chat] = {m.role: m.id for m in messages}
    finally:
        lifted.stop()
    assert all(lifted.chat(c)[-1].text == f"Echo: hello from {c}" for c in chats)
    assert lifted.rate_limited == []
    first, last = chats[:10], chats[-10:]
    assert max(stored[c][Role.ASSISTANT] for c in first) < min(stored[c][Role.USER] for c in last)
    sent = {call.params["chat_id"]: call.time for call in lifted.calls_to("sendMessage")}
    assert max(sent[c] for c in first) < min(sent[c] for c in last)


class SlowModel:
    """An ``LLMGateway`` whose answer comes when the test says so (a long stream)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.answer = asyncio.Event()

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.called.set()
        await self.answer.wait()
        yield TextChunk("done")


async def test_a_turn_waiting_for_the_model_does_not_keep_others_waiting() -> None:
    """One slot: while the first turn's model streams, the next turn works; when the
    stream ends the first turn takes a slot back before storing its answer."""
    runner = TurnRunner(Admission(1, hold_seconds=60))
    model = SlowModel()
    gateway = AdmittedGateway(model)
    request = LLMRequest(load_registry().model(None), "", [ChatTurn("user", "hi")])
    order: list[str] = []

    async def streaming(turn: Turn) -> None:
        async for event in gateway.stream(request):
            assert isinstance(event, TextChunk)
        order.append("first stores its answer")

    async def quick(turn: Turn) -> None:
        order.append("second works")
        await model.called.wait()

    first = asyncio.create_task(runner.run(key("a"), Sink(), streaming))
    await model.called.wait()
    await asyncio.wait_for(runner.run(key("b"), Sink(), quick), 5)
    assert order == ["second works"]
    model.answer.set()
    await asyncio.wait_for(first, 5)
    assert order == ["second works", "first stores its answer"]
