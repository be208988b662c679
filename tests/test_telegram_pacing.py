"""The Telegram channel against the fake Bot API with its flood control on: short replies
in one call, bursts of streaming chats without a 429, a 429 served anyway, raised limits."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest

from bots.pacing import FloodLimits
from bots.telegram.reply import telegram_limits
from core.errors import ConfigError
from tests.conftest import AppFactory, SettingsFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.test_telegram import USER, eventually, final_text, running

MESSAGE_CALLS = ("sendMessage", "editMessageText")


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    """The fake Bot API with Telegram's flood limits on (its defaults)."""
    with FakeTelegram() as fake:
        yield fake


def message_calls(telegram: FakeTelegram, chat: int) -> int:
    return sum(
        1
        for method in MESSAGE_CALLS
        for call in telegram.calls_to(method)
        if call.params.get("chat_id") == chat
    )


async def test_a_quiet_chats_short_turns_are_each_answered_by_one_call(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    """Back-to-back short turns, each streamed in a few pieces within the first moment:
    one message per turn, no edit, and none waits for the chat's pacing."""
    answers = [f"Short answer number {n}, in a few pieces." for n in range(4)]
    fake_openai.enqueue(*[Scripted(text=a, chunks=5, chunk_delay=0.02) for a in answers])
    waits: list[float] = []
    async with running(make_app, telegram):
        for n, answer in enumerate(answers):
            asked = time.monotonic()
            telegram.private_message(USER, f"question {n}")
            await eventually(final_text(telegram, USER, answer))
            waits.append(time.monotonic() - asked)
            await asyncio.sleep(1.0)  # a reader's pause: the chat stays within 1 a second
    assert [m.text for m in telegram.chat(USER)] == answers
    assert message_calls(telegram, USER) == len(answers)
    assert all(m.edits == 0 for m in telegram.chat(USER))
    assert telegram.rate_limited == []
    # The reply finishes within the first moment (0.5 s): nothing waits for a slot.
    assert max(waits) < 1.0


async def test_the_final_edit_uses_the_burst(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    """A reply that shows its first words and then finishes: the final edit goes at once
    (the chat has burst room), not a second after the first message."""
    answer = "word " * 30
    fake_openai.enqueue(Scripted(text=answer, chunks=2, chunk_delay=0.7))
    async with running(make_app, telegram):
        telegram.private_message(USER, "go")
        await eventually(final_text(telegram, USER, answer.strip()))
    [message] = telegram.chat(USER)
    [first] = telegram.calls_to("sendMessage")
    [final] = telegram.calls_to("editMessageText")
    assert final.time - first.time < 0.5  # the stream ended ~0.2 s after the first message
    assert message.edits == 1


@pytest.mark.slow
async def test_55_streaming_chats_at_once_meet_no_429(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    reply = " ".join(f"word{n:04d}" for n in range(334))[:3000]
    fake_openai.enqueue(*[Scripted(text=reply, chunks=100, chunk_delay=0.05)] * 55)
    chats = [3000 + n for n in range(50)]
    groups = [-1003000000000 - n for n in range(5)]
    async with running(make_app, telegram):
        for chat in chats:
            telegram.private_message(chat, "Tell me a long story")
        for group in groups:
            telegram.group_message(group, "a long story please", user_id=7, mention=True)
        await eventually(
            lambda: all(final_text(telegram, c, reply)() for c in chats + groups), within=60
        )
    assert telegram.rate_limited == []
    assert sum(telegram.chat(c)[-1].edits for c in chats) > 0  # they did stream


async def test_a_429_served_anyway_feeds_back_into_the_chats_bucket(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    """Telegram's own count can differ from ours: its 429 stops the chat for retry_after,
    and no call goes there before that (which would be answered 429 again)."""
    async with running(make_app, telegram):
        telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 2", retry_after=2)
        telegram.private_message(USER, "first")
        await eventually(final_text(telegram, USER, "Echo: first"))
        telegram.private_message(USER, "second")  # within the block: waits for it as well
        await eventually(final_text(telegram, USER, "Echo: second"))
    refused, *sent = telegram.calls_to("sendMessage")
    assert [call.params["text"] for call in sent] == ["Echo: first", "Echo: second"]
    assert sent[0].time - refused.time >= 2.0
    assert telegram.rate_limited == [("sendMessage", USER)]  # only the one served anyway


async def test_raised_limits_for_a_self_hosted_bot_api_server(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    """A Bot API server with its limits lifted: with the limits raised in the settings, 30
    messages to one chat are answered at once instead of at one a second."""
    lifted = FakeTelegram(
        private_rate=10_000, private_burst=10_000, global_per_second=10_000
    ).start()
    try:
        async with running(
            make_app,
            lifted,
            SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND="10000",
            SWITCHBOARD_TELEGRAM_CHAT_BURST="100",
            SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND="10000",
        ):
            started = time.monotonic()
            for n in range(30):
                lifted.private_message(USER, f"question {n}")
            await eventually(lambda: len(lifted.chat(USER)) == 30)
            elapsed = time.monotonic() - started
        assert elapsed < 10  # Telegram's public limits would take ~27 s here
        assert lifted.rate_limited == []
    finally:
        lifted.stop()


def test_the_limit_settings_default_to_telegrams_public_limits(
    make_settings: SettingsFactory,
) -> None:
    assert telegram_limits(make_settings()) == FloodLimits(
        chat_per_second=1, chat_burst=3, group_per_minute=20, group_burst=3, overall_per_second=30
    )
    raised = telegram_limits(
        make_settings(
            SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND="inf",
            SWITCHBOARD_TELEGRAM_GROUP_PER_MINUTE="600",
            SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND="1000",
        )
    )
    assert raised.chat_per_second == math.inf
    assert raised.group_per_minute == 600 and raised.overall_per_second == 1000
    with pytest.raises(ConfigError, match="SWITCHBOARD_TELEGRAM_CHAT_BURST"):
        make_settings(SWITCHBOARD_TELEGRAM_CHAT_BURST="0")
