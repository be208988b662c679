"""The Slack channel end to end: the real slack-bolt app over HTTP (and Socket Mode) with the
real slack-sdk client against the fake Slack, the real engine against the fake OpenAI."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from bots.bootstrap import App
from bots.pacing import FloodControl, FloodLimits
from bots.slack.channel import SLACK_LIMITS, SlackChannel
from bots.slack.events import conversation_key
from core.errors import ConfigError
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.slack_server import FakeSlack, SentMessage

ADA = "U0ADA"
BEN = "U0BEN"
GENERAL = "C0GENERAL"
FAST = FloodLimits(chat_per_second=20, chat_burst=1, overall_per_second=100)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(per_channel_rate=math.inf) as fake:
        yield fake


async def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running:
    """A Slack channel serving on a free port, and where to post to it."""

    def __init__(self, app: App, channel: SlackChannel) -> None:
        self.app = app
        self.channel = channel
        self.url = f"http://127.0.0.1:{app.settings.slack_port}/slack/events"


@asynccontextmanager
async def running(
    make_app: AppFactory,
    slack: FakeSlack,
    *,
    limits: FloodLimits = FAST,
    **settings: object,
) -> AsyncIterator[Running]:
    values: dict[str, object] = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "SLACK_PORT": free_port(),
        **settings,
    }
    async with make_app(**values) as app:
        channel = SlackChannel(
            app.pipeline, app.outbox, app.settings, flood=FloodControl(limits), shutdown_grace=1.0
        )
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        await eventually(lambda: task.done() or _listening(app.settings.slack_port, values))
        if task.done():
            task.result()
        try:
            yield Running(app, channel)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def _listening(port: int, values: dict[str, object]) -> bool:
    if "SLACK_APP_TOKEN" in values:
        return True  # Socket Mode: the caller waits for the connection
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def section_texts(message: SentMessage) -> str:
    return "\n".join(
        str(block["text"]["text"]) for block in message.blocks or [] if block["type"] == "section"
    )


def bot_messages(slack: FakeSlack, channel: str) -> list[SentMessage]:
    return [m for m in slack.messages(channel) if m.is_bot and not m.deleted]


def replied(slack: FakeSlack, channel: str, expected: str) -> Callable[[], bool]:
    def check() -> bool:
        messages = bot_messages(slack, channel)
        return bool(messages) and section_texts(messages[-1]) == expected

    return check


async def test_a_direct_message_gets_a_streamed_formatted_reply(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    answer = "Here is a **bold** answer with `code` that streams in many small pieces."
    # The model is slow to start (a retried 429), so the thinking note shows meanwhile.
    fake_openai.enqueue(
        Scripted(error="rate_limit", retry_after=1.0),
        Scripted(text=answer, chunks=20, chunk_delay=0.1),
    )
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        status, _, _ = await slack.deliver_event(bot.url, slack.dm(ADA, "hello"))
        expected = "Here is a *bold* answer with `code` that streams in many small pieces."
        await eventually(replied(slack, dm, expected))
    [reply] = bot_messages(slack, dm)
    assert status == 200
    assert reply.edits >= 2  # the thinking note, then the text growing in place
    first = slack.calls_to("chat.postMessage")[0].params
    assert "Thinking" in json.dumps(first["blocks"])
    assert reply.thread_ts is None  # a DM is answered at its top level
    assert "bold" in reply.text  # the notification text
    assert slack.rate_limited == 0
    sent = fake_openai.model_requests()[-1].body
    assert "hello" in json.dumps(sent)


async def test_events_are_acknowledged_before_the_work_and_shutdown_stops_it_cleanly(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="never finishes", hang=True))
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        status, body, _ = await slack.deliver_event(bot.url, slack.dm(ADA, "think hard"))
        # Answered while the model has not even started to reply.
        assert (status, body) == (200, "")
        await eventually(lambda: bool(fake_openai.model_requests()))
        key = conversation_key(slack.team_id, dm)
        assert bot.app.turns.is_busy(key)
        await eventually(lambda: bool(bot_messages(slack, dm)))  # the thinking note
    # Leaving ``running`` stopped the channel: the reply in flight was stopped, not lost.
    [reply] = bot_messages(slack, dm)
    assert section_texts(reply) == "_(stopped)_"


async def test_a_mention_is_answered_in_its_thread_and_the_thread_continues(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, slack) as bot:
        await slack.deliver_event(
            bot.url, slack.channel_message(BEN, "humans talking", channel=GENERAL)
        )
        mention = slack.mention(ADA, "what is 2+2?", channel=GENERAL)
        await slack.deliver_event(bot.url, mention)
        root = str(mention["ts"])
        await eventually(lambda: bool(slack.thread(GENERAL, root)[1:]))
        await eventually(
            lambda: section_texts(slack.thread(GENERAL, root)[-1]) == "Echo: what is 2+2?"
        )
        # A follow-up in the thread needs no mention; another thread the bot is not in is
        # left alone.
        follow_up = slack.channel_message(BEN, "and 3+3?", channel=GENERAL, thread_ts=root)
        await slack.deliver_event(bot.url, follow_up)
        other_root = slack.channel_message(BEN, "unrelated", channel=GENERAL)
        other = slack.channel_message(
            ADA, "not for the bot", channel=GENERAL, thread_ts=str(other_root["ts"])
        )
        await slack.deliver_event(bot.url, other)
        await eventually(lambda: section_texts(slack.thread(GENERAL, root)[-1]) == "Echo: and 3+3?")
        key = conversation_key(slack.team_id, GENERAL, root)
        conversation = await bot.app.store.active_conversation(key)
        stored = await bot.app.store.recent_messages(conversation.id, limit=10)
    requests = fake_openai.model_requests()
    assert len(requests) == 2
    assert "humans talking" not in json.dumps([r.body for r in requests])
    assert "not for the bot" not in json.dumps([r.body for r in requests])
    assert "<@U0BOT>" not in json.dumps(requests[0].body)  # the mention is not the question
    assert [m.text for m in stored][::-1] == [
        "what is 2+2?",
        "Echo: what is 2+2?",
        "and 3+3?",
        "Echo: and 3+3?",
    ]
    replies = [m for m in slack.thread(GENERAL, root) if m.is_bot]
    assert all(m.thread_ts == root for m in replies)
    assert [m for m in bot_messages(slack, GENERAL) if m.thread_ts != root] == []


async def test_own_messages_edits_joins_and_other_events_are_acknowledged_and_ignored(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        first = slack.dm(ADA, "original")
        ignored = [
            slack.own_message("I said this", dm),
            slack.own_message("legacy bot post", dm, legacy=True),
            slack.message_changed(dm, str(first["ts"]), "edited text"),
            slack.channel_join(BEN, GENERAL),
            slack.member_joined_channel(BEN, GENERAL),
        ]
        statuses = [(await slack.deliver_event(bot.url, event))[0] for event in ignored]
        await slack.deliver_event(bot.url, slack.dm(ADA, "after all that"))
        await eventually(replied(slack, dm, "Echo: after all that"))
    assert statuses == [200] * len(ignored)
    assert len(fake_openai.model_requests()) == 1
    # The fake's two posts in the bot's name, and the one reply.
    assert [m.text for m in bot_messages(slack, dm)] == [
        "I said this",
        "legacy bot post",
        "Echo: after all that",
    ]


async def test_a_redelivered_event_is_answered_once(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(ADA)
    event = slack.dm(ADA, "only once please")
    async with running(make_app, slack) as bot:
        first = await slack.deliver_event(bot.url, event, event_id="Ev0ONCE")
        retries = [
            await slack.deliver_event(bot.url, event, event_id="Ev0ONCE", retry_num=n)
            for n in (1, 2)
        ]
        await eventually(replied(slack, dm, "Echo: only once please"))
        await asyncio.sleep(0.3)
    assert [first[0], *(r[0] for r in retries)] == [200, 200, 200]
    assert len(fake_openai.model_requests()) == 1
    assert len(bot_messages(slack, dm)) == 1


async def test_bad_and_stale_signatures_are_refused(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, slack) as bot:
        forged = await slack.deliver_event(bot.url, slack.dm(ADA, "forged"), secret="wrong")
        stale = await slack.deliver_event(
            bot.url, slack.dm(ADA, "stale"), timestamp=int(time.time()) - 10 * 60
        )
        command = await slack.slash_command(
            bot.url, "/reset", user_id=ADA, channel_id=GENERAL, secret="wrong"
        )
        await asyncio.sleep(0.3)
    assert (forged[0], stale[0], command[0]) == (401, 401, 401)
    assert fake_openai.model_requests() == []
    assert slack.calls_to("chat.postMessage") == []


async def test_slash_commands_answer_ephemerally_with_buttons(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        status, body, _ = await slack.slash_command(bot.url, "/help", user_id=ADA, channel_id=dm)
        await eventually(lambda: len(slack.responses) == 1)
        await slack.slash_command(bot.url, "/mode", user_id=ADA, channel_id=dm)
        await eventually(lambda: len(slack.responses) == 2)
        menu = slack.responses[1].payload
        buttons = [e for b in menu["blocks"] if b["type"] == "actions" for e in b["elements"]]
        coder = next(b for b in buttons if b["value"] == "/mode coder")
        await slack.block_action(
            bot.url,
            user_id=ADA,
            channel_id=dm,
            message_ts="1700000000.000001",
            action_id=coder["action_id"],
            value=coder["value"],
        )
        await eventually(lambda: len(slack.responses) == 3)
        await slack.slash_command(bot.url, "/model", "no-such-model", user_id=ADA, channel_id=dm)
        await eventually(lambda: len(slack.responses) == 4)
        mode, _ = await bot.app.choices.current(conversation_key(slack.team_id, dm))
    assert status == 200
    assert body == ""  # acknowledged at once; the answer goes to the response_url
    help_answer = slack.responses[0].payload
    assert help_answer["response_type"] == "ephemeral"
    assert "/reset" in help_answer["text"] and "/model" in help_answer["text"]
    chosen = slack.responses[2].payload
    assert chosen["replace_original"] is True and "Mode set to" in chosen["text"]
    assert mode.id == "coder"
    assert "Unknown model" in slack.responses[3].payload["text"]
    assert len({b["action_id"] for b in buttons}) == len(buttons)  # Slack wants them unique
    assert fake_openai.model_requests() == []
    assert bot_messages(slack, dm) == []  # nothing posted for all to see


async def test_channel_commands_set_choices_for_new_threads_and_cancel_them(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="slow " * 200, chunks=200, chunk_delay=0.02))
    async with running(make_app, slack) as bot:
        await slack.slash_command(bot.url, "/model", "gpt-4o", user_id=ADA, channel_id=GENERAL)
        await eventually(lambda: len(slack.responses) == 1)
        mention = slack.mention(ADA, "write a lot", channel=GENERAL)
        await slack.deliver_event(bot.url, mention)
        await eventually(lambda: bool(fake_openai.model_requests()))
        await eventually(
            lambda: bot.app.turns.is_busy(
                conversation_key(slack.team_id, GENERAL, str(mention["ts"]))
            )
        )
        await slack.slash_command(bot.url, "/cancel", user_id=ADA, channel_id=GENERAL)
        await eventually(lambda: len(slack.responses) == 2)
        root = str(mention["ts"])
        await eventually(
            lambda: section_texts(slack.thread(GENERAL, root)[-1]).endswith("_(stopped)_")
        )
        await slack.slash_command(bot.url, "/reset", user_id=ADA, channel_id=GENERAL)
        await eventually(lambda: len(slack.responses) == 3)
    assert fake_openai.model_requests()[0].path == "/v1/chat/completions"  # gpt-4o's API
    assert "Stopped 1 reply" in slack.responses[1].payload["text"]
    assert "own conversation" in slack.responses[2].payload["text"]


async def test_a_429_mid_stream_is_waited_out_and_the_reply_completes(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    answer = " ".join(f"word{i}" for i in range(150))
    fake_openai.enqueue(Scripted(text=answer, chunks=60, chunk_delay=0.05))
    with FakeSlack(per_channel_rate=1.0, per_channel_burst=3) as slack:
        dm = slack.dm_channel(ADA)
        async with running(make_app, slack, limits=SLACK_LIMITS) as bot:
            await slack.deliver_event(bot.url, slack.dm(ADA, "stream please"))
            await eventually(lambda: bool(slack.calls_to("chat.update")))
            slack.fail_next("chat.update", "ratelimited", status=429, retry_after=1)
            await eventually(replied(slack, dm, answer), within=20)
        rate_limited = slack.rate_limited
        updates = slack.calls_to("chat.update")
    assert rate_limited == 1  # only the injected one: the pacing keeps within the limits
    assert any(call.status == 429 for call in updates)
    [reply] = bot_messages(slack, dm)
    assert section_texts(reply) == answer


async def test_long_and_hostile_markdown_stays_within_slack_limits(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    hostile = "Ping <!channel> and @here, <script>alert(1)</script> **unbalanced\n\n"
    code = "```python\n" + "\n".join(f"print({i})  # line" for i in range(900)) + "\n```\n\n"
    prose = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 40 for i in range(60))
    fake_openai.enqueue(Scripted(text=hostile + code + prose, chunks=40))
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "go long"))
        await eventually(
            lambda: (
                bool(bot_messages(slack, dm))
                and "Paragraph 59" in section_texts(bot_messages(slack, dm)[-1])
            )
        )
        await asyncio.sleep(0.3)
    messages = bot_messages(slack, dm)
    assert len(messages) >= 3
    everything = "\n".join(section_texts(m) for m in messages)
    assert "<!channel>" not in everything and "<script>" not in everything
    assert "&lt;script&gt;" in everything
    for message in messages:
        assert message.blocks is not None and len(message.blocks) <= 50
        for block in message.blocks:
            assert len(block["text"]["text"]) <= 3000
            assert block["text"]["text"].count("```") % 2 == 0
    assert everything.count("print(") == 900
    assert all(f"Paragraph {i}:" in everything for i in range(60))


async def test_rejected_blocks_fall_back_to_plain_text(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="A **quick** answer"))
    slack.fail_next("chat.postMessage", "invalid_blocks", status=200)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "quick"))
        await eventually(lambda: bool(bot_messages(slack, dm)))
    [reply] = bot_messages(slack, dm)
    assert reply.blocks in (None, [])
    assert reply.text == "A quick answer"


async def test_upstream_failures_get_a_friendly_line_and_the_bot_keeps_working(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(*[Scripted(error="server_error")] * 5)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack, SWITCHBOARD_OPENAI_MAX_RETRIES=1) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "this fails"))
        await eventually(
            lambda: (
                bool(bot_messages(slack, dm)) and "⚠️" in section_texts(bot_messages(slack, dm)[-1])
            )
        )
        fake_openai.reset()
        await slack.deliver_event(bot.url, slack.dm(ADA, "and this works"))
        await eventually(replied(slack, dm, "Echo: and this works"))
    shown = json.dumps([m.blocks for m in slack.messages(dm)]) + json.dumps(
        [m.text for m in slack.messages(dm)]
    )
    assert "Traceback" not in shown and slack.bot_token not in shown
    assert "sk-" not in shown


async def test_the_allow_list_refuses_others_once(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(BEN)
    async with running(make_app, slack, SWITCHBOARD_ALLOWED_USERS=f"slack:{ADA}") as bot:
        for text in ("let me in", "please"):
            assert (await slack.deliver_event(bot.url, slack.dm(BEN, text)))[0] == 200
        await eventually(lambda: any(m.is_bot for m in slack.messages(dm)))
        await slack.deliver_event(bot.url, slack.mention(BEN, "hey bot", channel=GENERAL))
        status, _, _ = await slack.slash_command(bot.url, "/help", user_id=BEN, channel_id=dm)
        await slack.deliver_event(bot.url, slack.dm(ADA, "I am allowed"))
        await eventually(replied(slack, slack.dm_channel(ADA), "Echo: I am allowed"))
        await asyncio.sleep(0.3)
    refusals = [m for m in slack.messages(dm) if m.is_bot]
    assert len(refusals) == 1 and "only available to approved users" in refusals[0].text
    assert BEN[1:] in refusals[0].text or BEN in refusals[0].text
    assert slack.ephemeral(GENERAL, BEN) == []  # refused once per user, already done in DM
    # A slash command is answered only to its sender: it is refused every time.
    assert status == 200
    [command_refusal] = slack.ephemeral(dm, BEN)
    assert "only available to approved users" in command_refusal.text
    assert len(fake_openai.model_requests()) == 1


async def test_socket_mode_receives_events_and_acknowledges_them(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack, SLACK_APP_TOKEN=slack.app_token, SLACK_SIGNING_SECRET=None):
        await slack.wait_for_socket_connection()
        envelope = slack.socket_event(slack.dm(ADA, "over the socket"))
        ack = await slack.wait_for_socket_ack(envelope)
        await eventually(replied(slack, dm, "Echo: over the socket"))
    assert ack.envelope_id == envelope


async def test_a_rejected_token_stops_start_up_with_a_clear_error(
    make_app: AppFactory, slack: FakeSlack
) -> None:
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN was rejected by Slack"):
        async with running(make_app, slack, SLACK_BOT_TOKEN="xoxb-wrong"):
            pass


async def test_http_mode_needs_the_signing_secret(make_app: AppFactory, slack: FakeSlack) -> None:
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        async with running(make_app, slack, SLACK_SIGNING_SECRET=None):
            pass


async def test_thread_replies_stream_natively_then_take_the_rendered_reply(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    answer = "A **streamed** answer, " + " ".join(f"w{i}" for i in range(60))
    fake_openai.enqueue(
        Scripted(error="rate_limit", retry_after=1.0),
        Scripted(text=answer, chunks=30, chunk_delay=0.08),
    )
    async with running(make_app, slack) as bot:
        mention = slack.mention(ADA, "stream it", channel=GENERAL)
        await slack.deliver_event(bot.url, mention)
        root = str(mention["ts"])
        expected = answer.replace("**", "*")
        await eventually(lambda: section_texts(slack.thread(GENERAL, root)[-1]) == expected)
    replies = [m for m in slack.thread(GENERAL, root) if m.is_bot]
    assert len(replies) == 1
    assert replies[0].streaming == "completed"
    assert len(slack.calls_to("chat.startStream")) == 1
    assert slack.calls_to("chat.appendStream")  # it grew while the model wrote
    assert len(slack.calls_to("chat.stopStream")) == 1
    start = slack.calls_to("chat.startStream")[0].params
    assert (start["recipient_user_id"], start["recipient_team_id"]) == (ADA, slack.team_id)
    assert slack.statuses(GENERAL, root)[:1] == ["is thinking…"]
    assert slack.calls_to("chat.postMessage") == []
    assert slack.rate_limited == 0


async def test_without_native_streaming_threads_grow_by_updates(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(text="first " * 30, chunks=15, chunk_delay=0.05),
        Scripted(text="second " * 30, chunks=15, chunk_delay=0.05),
    )
    with FakeSlack(per_channel_rate=math.inf, streaming=False) as slack:
        async with running(make_app, slack) as bot:
            roots = []
            for text in ("one", "two"):
                mention = slack.mention(ADA, text, channel=GENERAL)
                roots.append(str(mention["ts"]))
                await slack.deliver_event(bot.url, mention)
                word = "first" if text == "one" else "second"
                await eventually(
                    lambda root=roots[-1], word=word: (
                        section_texts(slack.thread(GENERAL, root)[-1]).count(word) == 30
                    )
                )
        start_calls = slack.calls_to("chat.startStream")
        updates = slack.calls_to("chat.update")
    assert len(start_calls) == 1  # tried once, then the process knows
    assert start_calls[0].error == "unknown_method"
    assert len(updates) >= 2
    for root in roots:
        [reply] = [m for m in slack.thread(GENERAL, root) if m.is_bot]
        assert reply.thread_ts == root and reply.streaming is None


async def test_a_long_streamed_thread_reply_continues_in_more_messages(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    prose = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 40 for i in range(50))
    fake_openai.enqueue(Scripted(text=prose, chunks=50, chunk_delay=0.01))
    async with running(make_app, slack) as bot:
        mention = slack.mention(ADA, "write an essay", channel=GENERAL)
        await slack.deliver_event(bot.url, mention)
        root = str(mention["ts"])
        await eventually(lambda: "Paragraph 49:" in section_texts(slack.thread(GENERAL, root)[-1]))
        await asyncio.sleep(0.3)
    replies = [m for m in slack.thread(GENERAL, root) if m.is_bot and not m.deleted]
    everything = "\n".join(section_texts(m) for m in replies)
    assert len(replies) >= 2 and replies[0].streaming == "completed"
    assert [everything.count(f"Paragraph {i}:") for i in range(50)] == [1] * 50
    assert len(prose) > 24_000


async def test_quota_and_usage_slash_commands_for_admins_and_others(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    boss = "U0BOSS"
    async with running(make_app, slack, SWITCHBOARD_ADMINS=f"slack:{boss}") as bot:
        set_status, set_body, _ = await slack.slash_command(
            bot.url, "/quota", f"set <@{BEN}|ben> 0.5 weekly", user_id=boss, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 1)
        await slack.slash_command(
            bot.url, "/quota", "set default 1 daily", user_id=BEN, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 2)
        await slack.slash_command(bot.url, "/quota", "show", user_id=boss, channel_id=GENERAL)
        await eventually(lambda: len(slack.responses) == 3)
        await slack.slash_command(bot.url, "/usage", "", user_id=BEN, channel_id=GENERAL)
        await eventually(lambda: len(slack.responses) == 4)
        budgets = await bot.app.storage.budgets.budgets()
    answers = [r.payload for r in slack.responses]
    assert (set_status, set_body) == (200, "")
    assert answers[0]["text"] == f"Budget set: slack:{BEN}, $0.50 weekly."
    assert answers[1]["text"] == "Only admins can do that."
    assert f"slack:{BEN}: $0.50 weekly" in answers[2]["text"]
    assert "weekly (yours): $0.00 of $0.50 spent" in answers[3]["text"]
    assert all(a["response_type"] == "ephemeral" for a in answers)
    assert [(b.subject, b.limit_micros) for b in budgets] == [(f"slack:{BEN}", 500_000)]


async def test_admins_block_and_allow_users_with_slash_commands(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    boss = "U0BOSS"
    dm = slack.dm_channel(BEN)
    async with running(make_app, slack, SWITCHBOARD_ADMINS=f"slack:{boss}") as bot:
        await slack.slash_command(
            bot.url, "/block", f"<@{ADA}|ada>", user_id=BEN, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 1)
        await slack.slash_command(
            bot.url, "/block", f"<@{BEN}|ben>", user_id=boss, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 2)
        await slack.slash_command(
            bot.url, "/block", "'; DROP TABLE users; --", user_id=boss, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 3)
        await slack.deliver_event(bot.url, slack.dm(BEN, "am I blocked?"))
        await eventually(lambda: any(m.is_bot for m in slack.messages(dm)))
        await slack.slash_command(
            bot.url, "/allow", f"<@{BEN}|ben>", user_id=boss, channel_id=GENERAL
        )
        await eventually(lambda: len(slack.responses) == 4)
        await slack.deliver_event(bot.url, slack.dm(BEN, "and now?"))
        await eventually(replied(slack, dm, "Echo: and now?"))
        rules = await bot.app.store.access_rules()
    answers = [r.payload["text"] for r in slack.responses]
    assert answers[0] == "Only admins can do that."
    assert answers[1] == f"slack:{BEN} is blocked: the bot will not answer them."
    assert answers[2].startswith("Usage: /allow &lt;who&gt;")  # escaped for mrkdwn
    assert answers[3] == f"slack:{BEN} may use the bot now."
    assert all(r.payload["response_type"] == "ephemeral" for r in slack.responses)
    refusal = next(m for m in slack.messages(dm) if m.is_bot)
    assert "only available to approved users" in refusal.text
    assert rules == {f"slack:{BEN}": "allow"}
    assert len(fake_openai.model_requests()) == 1  # the blocked message never reached it
