"""Which Slack events the bot answers, and the conversation and place each belongs to."""

from __future__ import annotations

from typing import Any

import pytest

from bots.slack.events import SlackPlace, plain_text, translate
from core.conversation.messages import ConversationKey

BOT = "U0BOT"
TEAM = "T0FAKE"


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "message",
        "user": "U1ADA",
        "text": "hello",
        "ts": "1700000001.000100",
        "channel": "D0DM",
        "channel_type": "im",
        "team": TEAM,
        "event_ts": "1700000001.000100",
    }
    base.update(fields)
    return base


def test_a_direct_message_is_the_whole_dm() -> None:
    turn = translate(event(), team=TEAM, bot_user_id=BOT)

    assert turn is not None and not turn.follow_up
    assert turn.message.key == ConversationKey("slack", place="D0DM", scope=TEAM)
    assert turn.message.text == "hello"
    assert turn.message.sender.principal == "slack:U1ADA"
    assert turn.message.platform_message_id == "1700000001.000100"
    assert turn.place == SlackPlace(TEAM, "D0DM", "U1ADA", None)


def test_a_threaded_direct_message_is_answered_in_its_thread() -> None:
    turn = translate(event(thread_ts="1700000000.000001"), team=TEAM, bot_user_id=BOT)

    assert turn is not None
    assert turn.message.key.thread == ""
    assert turn.place.thread_ts == "1700000000.000001"


def test_a_mention_starts_a_thread_that_is_one_conversation() -> None:
    mention = event(
        type="app_mention", channel="C0GENERAL", text=f"<@{BOT}> what is 2+2?", channel_type=None
    )
    turn = translate(mention, team=TEAM, bot_user_id=BOT)

    assert turn is not None and not turn.follow_up
    assert turn.message.text == "what is 2+2?"
    assert turn.message.key == ConversationKey(
        "slack", place="C0GENERAL", scope=TEAM, thread="1700000001.000100"
    )
    assert turn.place.thread_ts == "1700000001.000100"


def test_a_mention_inside_a_thread_joins_that_thread() -> None:
    mention = event(
        type="app_mention",
        channel="C0GENERAL",
        text=f"<@{BOT}> and you?",
        thread_ts="1700000000.000001",
    )
    turn = translate(mention, team=TEAM, bot_user_id=BOT)

    assert turn is not None
    assert turn.message.key.thread == "1700000000.000001"
    assert turn.place.thread_ts == "1700000000.000001"


def test_thread_replies_without_a_mention_are_follow_ups() -> None:
    reply = event(channel="C0GENERAL", channel_type="channel", thread_ts="1700000000.000001")
    turn = translate(reply, team=TEAM, bot_user_id=BOT)

    assert turn is not None and turn.follow_up
    assert turn.message.key.thread == "1700000000.000001"


@pytest.mark.parametrize(
    "fields",
    [
        {"channel": "C0GENERAL", "channel_type": "channel"},  # channel chatter, no mention
        {"channel": "C0GENERAL", "channel_type": "channel", "text": f"<@{BOT}> hi"},
        {
            "channel": "C0GENERAL",
            "channel_type": "channel",
            "thread_ts": "1700000000.000001",
            "text": f"<@{BOT}> hi",
        },  # the app_mention event answers this one
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "bot_message", "bot_id": "B0OTHER"},
        {"bot_id": "B0OTHER"},
        {"user": BOT},
        {"user": None},
        {"ts": None},
        {"type": "reaction_added"},
    ],
)
def test_events_that_are_not_for_the_bot(fields: dict[str, Any]) -> None:
    assert translate(event(**fields), team=TEAM, bot_user_id=BOT) is None


def test_files_and_broadcast_replies_are_answered() -> None:
    assert translate(event(subtype="file_share"), team=TEAM, bot_user_id=BOT) is not None
    broadcast = event(
        subtype="thread_broadcast",
        channel="C0GENERAL",
        channel_type="channel",
        thread_ts="1700000000.000001",
    )
    turn = translate(broadcast, team=TEAM, bot_user_id=BOT)
    assert turn is not None and turn.follow_up


def test_slack_markup_becomes_readable_text() -> None:
    text = (
        "ask <@U2BEN> in <#C0DEV|dev> about <https://example.com/a?b=1&amp;c=2|the doc>, "
        "<https://example.com> and <!here>: 1 &lt; 2 &amp;&amp; 3 &gt; 2"
    )

    assert plain_text(text) == (
        "ask @U2BEN in #dev about the doc (https://example.com/a?b=1&c=2), "
        "https://example.com and @here: 1 < 2 && 3 > 2"
    )
