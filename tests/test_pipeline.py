"""The inbound pipeline, tested once for every channel: deliveries made the way a channel
makes them (a fake channel whose replies record their events), run through the real
composition root against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from core.conversation.commands import Command
from core.conversation.events import (
    CommandAnswered,
    ImageReady,
    Refused,
    ReplyFailed,
    ReplyFinished,
)
from core.conversation.journal import LEASE_SECONDS
from core.conversation.messages import ConversationKey, IncomingMessage, Role, UserRef
from core.conversation.pipeline import Activity, Delivery
from core.errors import MediaTooLarge
from core.media.ports import Attachment
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.sinks import RecordingSink
from tests.fakes.telegram_server import FakeTelegram
from tests.make_images import png
from tests.test_telegram import eventually, running, texts

KEY = ConversationKey("console", place="chat-1")
ADA = UserRef("console", "ada", username="ada")
BEN = UserRef("console", "ben", username="ben")


class FakeChannel:
    """Makes deliveries as a channel would and keeps every reply it opened."""

    def __init__(self) -> None:
        self.replies: list[RecordingSink] = []
        self.activities: list[Activity] = []

    def open(self, activity: Activity) -> RecordingSink:
        self.activities.append(activity)
        reply = RecordingSink()
        self.replies.append(reply)
        return reply

    def delivery(
        self,
        text: str,
        *,
        sender: UserRef = ADA,
        key: ConversationKey = KEY,
        event_id: str | None = None,
        command: Command | None = None,
        **options: object,
    ) -> Delivery:
        message = IncomingMessage(key, sender, text, event_id=event_id)
        return Delivery(message, self.open, command=command, **options)  # type: ignore[arg-type]

    @property
    def events(self) -> list[object]:
        return [event for reply in self.replies for event in reply.events]


async def test_a_message_is_answered_in_a_reply_that_is_started_and_closed(
    make_app: AppFactory,
) -> None:
    channel = FakeChannel()
    async with make_app() as app:
        await app.pipeline.handle(channel.delivery("hello"))
    [reply] = channel.replies
    assert reply.started and reply.closed
    assert reply.final == ReplyFinished("Echo: hello")
    assert channel.activities == [Activity.WRITING]


async def test_a_redelivered_event_is_dropped_before_anything_is_shown(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = FakeChannel()
    async with make_app() as app:
        await app.pipeline.handle(channel.delivery("hello", event_id="update-7"))
        await app.pipeline.handle(channel.delivery("hello", event_id="update-7"))
        await app.pipeline.handle(channel.delivery("hello", event_id="update-8"))
    assert len(channel.replies) == 2  # the redelivery opened no reply at all
    assert len(fake_openai.model_requests()) == 2


async def test_the_gate_refuses_once_and_never_fetches_a_refused_senders_files(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = FakeChannel()
    fetched: list[str] = []

    async def fetch() -> tuple[Attachment, ...]:
        fetched.append("yes")
        return ()

    async with make_app(SWITCHBOARD_ALLOWED_USERS="console:ada") as app:
        for text in ("let me in", "please"):
            await app.pipeline.handle(channel.delivery(text, sender=BEN, fetch=fetch))
        await app.pipeline.handle(channel.delivery("/help", sender=BEN, private=True))
        await app.pipeline.handle(channel.delivery("/help", sender=BEN, private=True))
        await app.pipeline.handle(channel.delivery("I may", sender=ADA))
    refusals = [e for e in channel.events if isinstance(e, Refused)]
    # Once in the chat; a private answer (a Slack slash command) every time.
    assert len(refusals) == 3
    assert "only available to approved users" in refusals[0].text and "ben" in refusals[0].text
    assert fetched == []
    assert len(fake_openai.model_requests()) == 1  # only Ada's message reached the model
    assert channel.replies[-1].final == ReplyFinished("Echo: I may")


async def test_commands_are_answered_and_picture_commands_run_as_turns(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = FakeChannel()
    async with make_app() as app:
        await app.pipeline.handle(channel.delivery("/mode", command=Command("mode", "")))
        await app.pipeline.handle(channel.delivery("/image", command=Command("image", "")))
        await app.pipeline.handle(channel.delivery("/image", command=Command("image", "a cat")))
    mode, usage, drawing = channel.replies
    [answered] = mode.events
    assert isinstance(answered, CommandAnswered)
    assert answered.reply.text.startswith("Current mode:") and answered.reply.choices
    assert not mode.started  # a command's answer shows no typing indicator
    [hint] = usage.events
    assert isinstance(hint, CommandAnswered) and "/image" in hint.reply.text
    assert drawing.started and channel.activities[-1] == Activity.DRAWING
    assert any(isinstance(e, ImageReady) for e in drawing.events)
    [request] = [r for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert "a cat" in str(request.body)


async def test_a_follow_up_is_answered_only_in_a_conversation_the_bot_takes_part_in(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = FakeChannel()
    thread = ConversationKey("console", place="channel-1", thread="t-1")
    async with make_app() as app:
        await app.pipeline.handle(channel.delivery("chatter", key=thread, follow_up=True))
        assert channel.replies == []
        await app.pipeline.handle(channel.delivery("@bot hello", key=thread))
        await app.pipeline.handle(channel.delivery("and more", key=thread, follow_up=True))
    assert [r.final for r in channel.replies] == [
        ReplyFinished("Echo: @bot hello"),
        ReplyFinished("Echo: and more"),
    ]
    assert len(fake_openai.model_requests()) == 2


async def test_a_file_that_cannot_be_fetched_gets_a_clear_reply(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = FakeChannel()

    async def too_big() -> tuple[Attachment, ...]:
        raise MediaTooLarge("That file is too large (25 MB); the limit is 20 MB.")

    async with make_app() as app:
        await app.pipeline.handle(channel.delivery("look", fetch=too_big))
    [reply] = channel.replies
    assert reply.final == ReplyFailed("That file is too large (25 MB); the limit is 20 MB.")
    assert reply.closed
    assert fake_openai.model_requests() == []


async def test_stopping_one_channel_leaves_the_others_replies_running(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    telegram, console = FakeChannel(), FakeChannel()
    telegram_key = ConversationKey("telegram", place="1")
    console_key = ConversationKey("console", place="ada")
    fake_openai.enqueue(Scripted(text="never finished", hang=True))
    async with make_app() as app:
        hung = asyncio.create_task(app.pipeline.handle(telegram.delivery("hang", key=telegram_key)))
        await eventually(lambda: app.turns.is_busy(telegram_key))
        fake_openai.enqueue(Scripted(text="slow but fine", chunks=5, chunk_delay=0.1))
        answered = asyncio.create_task(app.pipeline.handle(console.delivery("hi", key=console_key)))
        await eventually(lambda: app.turns.is_busy(console_key))
        await app.pipeline.drain("telegram", grace=0.1)
        assert hung.done()
        assert app.turns.is_busy(console_key)  # the console's reply goes on
        await asyncio.wait_for(answered, 10)
        await app.pipeline.handle(telegram.delivery("after", key=telegram_key))
        await app.pipeline.handle(console.delivery("still here", key=console_key))
    stopped, refused = telegram.replies
    assert stopped.final == ReplyFinished("", cancelled=True)
    assert isinstance(refused.final, ReplyFailed) and "restarting" in refused.final.message
    assert [r.final for r in console.replies] == [
        ReplyFinished("slow but fine"),
        ReplyFinished("Echo: still here"),
    ]


def lease_until(database: Path) -> datetime:
    """The lease end of the only turn in ``database``."""
    with sqlite3.connect(database) as connection:
        [(until,)] = connection.execute("SELECT lease_until FROM turns").fetchall()
    return datetime.fromisoformat(until)


@pytest.mark.slow
async def test_a_turn_longer_than_a_third_of_its_lease_renews_it(
    make_app: AppFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """Renewal starts only once a third of the lease has passed (short turns create no
    renewal task), and then keeps the lease ahead of the turn."""
    channel = FakeChannel()
    database = tmp_path / "switchboard.db"
    fake_openai.enqueue(Scripted(text="a slow answer", chunks=10, chunk_delay=1.0))
    async with make_app() as app:
        turn = asyncio.create_task(app.pipeline.handle(channel.delivery("take your time")))
        await eventually(lambda: app.turns.is_busy(KEY))
        first = lease_until(database)
        await asyncio.sleep(LEASE_SECONDS / 3 - 2)
        before_renewal = lease_until(database)
        await asyncio.sleep(3)
        renewed = lease_until(database)
        await asyncio.wait_for(turn, 30)
    assert before_renewal == first
    assert (renewed - first).total_seconds() >= LEASE_SECONDS / 3 - 1
    assert channel.replies[0].final == ReplyFinished("a slow answer")


@pytest.mark.slow
async def test_one_chats_messages_in_one_burst_are_answered_in_the_order_sent(
    make_app: AppFactory, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """One chat sends three questions that arrive in the same getUpdates answer, among 60
    other chats' messages keeping the database busy: the answers come in the questions'
    order, and the conversation stores question and answer after one another, in order."""
    telegram = FakeTelegram(
        private_rate=10_000, private_burst=10_000, global_per_second=10_000
    ).start()
    ordered, others = 7000, [7100 + n for n in range(60)]
    questions = ["first question", "second question", "third question"]
    try:
        async with running(
            make_app,
            telegram,
            DATABASE_URL=database_url,
            SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND="10000",
            SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND="10000",
        ) as app:
            for n, chat in enumerate(others):  # one getUpdates answer holds them all
                if n % 20 == 0:
                    telegram.private_message(ordered, questions[n // 20])
                telegram.private_message(chat, f"hello from {chat}")
            await eventually(
                lambda: len(telegram.chat(ordered)) == 3 and all(telegram.chat(c) for c in others),
                within=60,
            )
            conversation = await app.store.find_active(ConversationKey("telegram", str(ordered)))
            assert conversation is not None
            stored = await app.store.recent_messages(conversation.id, limit=10)
    finally:
        telegram.stop()
    assert texts(telegram.chat(ordered)) == [f"Echo: {q}" for q in questions]
    assert [(m.role, m.text) for m in sorted(stored, key=lambda m: m.id)] == [
        pair for q in questions for pair in ((Role.USER, q), (Role.ASSISTANT, f"Echo: {q}"))
    ]


async def test_a_photo_question_then_a_text_one_are_answered_in_the_order_sent(
    make_app: AppFactory, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """A photo with a question, then a text question, in one getUpdates answer: the photo's
    download does not let the text question overtake it."""
    telegram = FakeTelegram().start()
    try:
        async with running(make_app, telegram, DATABASE_URL=database_url):
            telegram.photo_message(7000, png(640, 480), caption="what is in this photo?")
            telegram.private_message(7000, "and what colour is it?")
            await eventually(lambda: len(telegram.chat(7000)) == 2, within=30)
    finally:
        telegram.stop()
    assert texts(telegram.chat(7000)) == [
        "Echo: what is in this photo? [1 image]",
        "Echo: and what colour is it?",
    ]
