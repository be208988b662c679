"""Telegram delivery under platform faults: 5xx answers and dropped connections are retried
with backoff like 429s, the final message is never dropped (a failure that persists is
raised, so the turn stays open for recovery), and progress edits stay best effort."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from telegram import Bot
from telegram.error import NetworkError

from bots.pacing import FloodControl
from bots.telegram.reply import FINAL_ATTEMPTS, ChatPlace, TelegramReply
from core.conversation.events import ReplyFinished, TextDelta
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.test_telegram import UNPACED, USER, eventually, final_text, running, telegram

__all__ = ["telegram"]  # the fixture, shared with the channel's own tests

LONG = " ".join(f"word{i:04d}" for i in range(334))[:3000]


def unthrottled(bot: Bot) -> TelegramReply:
    return TelegramReply(bot, ChatPlace(USER, group=False), FloodControl(UNPACED))


async def test_502s_on_send_message_and_the_user_still_sees_the_reply(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="the answer", chunks=1))
    # The first may meet the progress message (skipped, best effort), the second the final.
    telegram.fail_next("sendMessage", 502, "Bad Gateway")
    telegram.fail_next("sendMessage", 502, "Bad Gateway")
    async with running(make_app, telegram) as app:
        telegram.private_message(USER, "hello")
        await eventually(final_text(telegram, USER, "the answer"))
        # The turn is closed as delivered: nothing is left open for recovery.
        later = app.storage.clock.now() + dt.timedelta(days=1)
        for _ in range(100):
            if not await app.storage.journal.open_turns(later):
                break
            await asyncio.sleep(0.05)
        assert await app.storage.journal.open_turns(later) == []
    assert len(telegram.calls_to("sendMessage")) == 3
    assert [m.text for m in telegram.chat(USER)] == ["the answer"]


async def test_one_502_on_the_final_send_message_is_retried(telegram: FakeTelegram) -> None:
    async with Bot(telegram.token, base_url=f"{telegram.url}/bot") as bot:
        telegram.fail_next("sendMessage", 502, "Bad Gateway")
        await unthrottled(bot).emit(ReplyFinished("shown after one 502"))
    assert [m.text for m in telegram.chat(USER)] == ["shown after one 502"]


async def test_two_500s_on_the_final_edit_and_the_full_reply_arrives(
    telegram: FakeTelegram,
) -> None:
    async with Bot(telegram.token, base_url=f"{telegram.url}/bot") as bot:
        reply = unthrottled(bot)
        await reply.emit(TextDelta(LONG[:80]))
        await eventually(lambda: bool(telegram.chat(USER)))
        await reply.close()  # the progress edit under way is done: the next edit is final
        telegram.fail_next("editMessageText", 500, "Internal Server Error")
        telegram.fail_next("editMessageText", 500, "Internal Server Error")
        await reply.emit(ReplyFinished(LONG))
    [message] = telegram.chat(USER)
    assert message.text == LONG and len(LONG) == 3000
    assert len(telegram.calls_to("editMessageText")) == 3


async def test_500s_on_progress_edits_are_skipped_and_the_final_text_arrives(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text=LONG, chunks=30, chunk_delay=0.1))
    async with running(make_app, telegram):
        telegram.private_message(USER, "long one")
        await eventually(lambda: bool(telegram.chat(USER)))
        telegram.fail_next("editMessageText", 500, "Internal Server Error")
        telegram.fail_next("editMessageText", 500, "Internal Server Error")
        await eventually(final_text(telegram, USER, LONG))


async def test_a_dropped_connection_is_retried(telegram: FakeTelegram) -> None:
    async with Bot(telegram.token, base_url=f"{telegram.url}/bot") as bot:
        reply = unthrottled(bot)
        telegram.drop_next("sendMessage")
        await reply.emit(ReplyFinished("after a dropped connection"))
    assert [m.text for m in telegram.chat(USER)] == ["after a dropped connection"]
    assert len(telegram.calls_to("sendMessage")) == 2


@pytest.mark.slow
async def test_a_final_message_that_cannot_be_sent_is_raised_not_dropped(
    telegram: FakeTelegram,
) -> None:
    async with Bot(telegram.token, base_url=f"{telegram.url}/bot") as bot:
        reply = unthrottled(bot)
        for _ in range(FINAL_ATTEMPTS):
            telegram.fail_next("sendMessage", 502, "Bad Gateway")
        with pytest.raises(NetworkError):
            await reply.emit(ReplyFinished("never shown"))
    assert telegram.chat(USER) == []
    assert len(telegram.calls_to("sendMessage")) == FINAL_ATTEMPTS
