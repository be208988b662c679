"""Slack delivery under platform faults: 5xx answers, dropped connections and odd
429s without a hint are retried by the Web API client's handlers, the final message is
never dropped (a failure that persists is raised, so the turn stays open for recovery), and
a native stream is always closed — also when the reply fails or ends without its final
event."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.pacing import FloodControl
from bots.slack.events import SlackPlace
from bots.slack.reply import NativeStreaming, SlackReply
from bots.slack.retry import TRANSIENT_RETRIES, retry_handlers
from core.conversation.events import ReplyFinished, TextDelta
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.slack_server import FakeSlack
from tests.test_slack import (
    ADA,
    FAST,
    GENERAL,
    bot_messages,
    eventually,
    replied,
    running,
    section_texts,
    slack,
)

__all__ = ["slack"]  # the fixture, shared with the channel's own tests


def client_for(slack: FakeSlack, flood: FloodControl) -> AsyncWebClient:
    return AsyncWebClient(
        token=slack.bot_token, base_url=slack.api_url, retry_handlers=retry_handlers(flood)
    )


def threaded_reply(slack: FakeSlack) -> tuple[SlackReply, str]:
    root = str(slack.mention(ADA, "stream it", channel=GENERAL)["ts"])
    flood = FloodControl(FAST)
    place = SlackPlace(slack.team_id, GENERAL, ADA, thread_ts=root)
    reply = SlackReply(client_for(slack, flood), place, flood, streaming=NativeStreaming())
    return reply, root


async def test_a_502_on_post_message_and_the_user_still_sees_the_reply(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="the answer", chunks=1))
    dm = slack.dm_channel(ADA)
    slack.fail_next("chat.postMessage", "internal_error", status=502, times=2)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "hello"))
        await eventually(replied(slack, dm, "the answer"))
    assert [section_texts(m) for m in bot_messages(slack, dm)] == ["the answer"]
    failed = [c for c in slack.calls_to("chat.postMessage") if c.status == 502]
    assert len(failed) == 2


async def test_a_dropped_connection_and_a_429_without_a_hint_are_retried(
    slack: FakeSlack,
) -> None:
    dm = slack.dm_channel(ADA)
    flood = FloodControl(FAST)
    reply = SlackReply(client_for(slack, flood), SlackPlace(slack.team_id, dm, ADA), flood)
    slack.drop_next("chat.postMessage")
    await reply.emit(ReplyFinished("after a dropped connection"))
    slack.fail_next("chat.update", status=429, retry_after=None)  # no usable hint
    await reply.emit(ReplyFinished("and a 429 without a hint"))
    await reply.close()
    [message] = bot_messages(slack, dm)
    assert section_texts(message) == "and a 429 without a hint"
    assert len(slack.calls_to("chat.postMessage")) == 2


async def test_a_stream_is_closed_when_the_reply_ends_without_its_final_event(
    slack: FakeSlack,
) -> None:
    reply, root = threaded_reply(slack)
    await reply.start()
    await reply.emit(TextDelta("the first words of an answer"))
    await eventually(lambda: bool(slack.calls_to("chat.startStream")))
    await reply.close()  # the turn crashed or was cancelled: no final event
    [message] = [m for m in slack.thread(GENERAL, root) if m.is_bot]
    assert message.streaming == "completed"
    assert len(slack.calls_to("chat.stopStream")) == 1


@pytest.mark.parametrize("hint", ["nan", "inf", "-3", "soon", "1.5"])
async def test_a_retry_after_that_is_not_a_whole_number_is_survived(
    slack: FakeSlack, hint: str
) -> None:
    dm = slack.dm_channel(ADA)
    flood = FloodControl(FAST)
    reply = SlackReply(client_for(slack, flood), SlackPlace(slack.team_id, dm, ADA), flood)
    slack.fail_next("chat.postMessage", retry_after=hint)
    await reply.emit(ReplyFinished(f"after Retry-After: {hint}"))
    [message] = bot_messages(slack, dm)
    assert section_texts(message) == f"after Retry-After: {hint}"
    assert len(slack.calls_to("chat.postMessage")) == 2


@pytest.mark.slow
async def test_a_stream_is_closed_when_the_final_message_cannot_be_delivered(
    slack: FakeSlack,
) -> None:
    reply, root = threaded_reply(slack)
    await reply.start()
    await reply.emit(TextDelta("the first words"))
    await eventually(lambda: bool(slack.calls_to("chat.startStream")))
    slack.fail_next("chat.update", "internal_error", status=500, times=TRANSIENT_RETRIES + 1)
    with pytest.raises(SlackApiError):
        await reply.emit(ReplyFinished("the first words, and the rest"))
    await reply.close()
    [message] = [m for m in slack.thread(GENERAL, root) if m.is_bot]
    assert message.streaming == "completed"
    assert len(slack.calls_to("chat.update")) == TRANSIENT_RETRIES + 1
