"""The Telegram channel end to end: real python-telegram-bot against the fake Bot API, the
real engine against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from telegram import Bot

from bots.bootstrap import App
from bots.pacing import FloodControl, FloodLimits
from bots.telegram.channel import TelegramChannel
from bots.telegram.reply import ChatPlace, TelegramReply
from bots.telegram.typing import TypingIndicators
from core.conversation.events import ReplyFinished, TextDelta, ToolStarted
from core.conversation.messages import ConversationKey
from core.errors import ConfigError
from tests.conftest import API_KEY, AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram, SentMessage

USER = 1001
GROUP = -1001234567890
UNPACED = FloodLimits(
    chat_per_second=math.inf, group_per_minute=math.inf, overall_per_second=math.inf
)


@pytest.fixture
def telegram() -> AsyncIterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


async def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def texts(messages: list[SentMessage]) -> list[str]:
    return [m.text for m in messages]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def running(
    make_app: AppFactory, telegram: FakeTelegram, **settings: object
) -> AsyncIterator[App]:
    values: dict[str, object] = {
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
        "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
        **settings,
    }
    async with make_app(**values) as app:
        channel = TelegramChannel(app.pipeline, app.outbox, app.settings, shutdown_grace=1.0)
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        webhook = "TELEGRAM_WEBHOOK_URL" in settings
        await eventually(
            lambda: (
                bool(telegram.calls_to("setWebhook" if webhook else "getUpdates")) or task.done()
            )
        )
        if task.done():
            task.result()
        try:
            yield app
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def final_text(telegram: FakeTelegram, chat: int, expected: str) -> Callable[[], bool]:
    return lambda: bool(telegram.chat(chat)) and telegram.chat(chat)[-1].text == expected


async def test_private_chat_is_answered_with_a_streamed_reply(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    answer = "Here is a **bold** answer with `code` that streams in many small pieces."
    # The model is slow to start (a retried 429), so the typing indicator shows meanwhile.
    fake_openai.enqueue(
        Scripted(error="rate_limit", retry_after=1.0),
        Scripted(text=answer, chunks=20, chunk_delay=0.15),
    )
    async with running(make_app, telegram):
        telegram.private_message(USER, "hello")
        visible = "Here is a bold answer with code that streams in many small pieces."
        await eventually(final_text(telegram, USER, visible))
    [message] = telegram.chat(USER)
    assert message.edits >= 1  # it grew in place
    assert message.parse_mode == "HTML"
    assert "<b>bold</b>" in (message.html or "") and "<code>code</code>" in (message.html or "")
    assert telegram.rate_limited == []
    assert telegram.calls_to("sendChatAction")  # typing was shown
    commands = telegram.calls_to("setMyCommands")[0].params["commands"]
    assert {c["command"] for c in commands} >= {"start", "help", "reset", "cancel", "mode"}


async def test_groups_answer_only_mentions_replies_and_commands(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.group_message(GROUP, "just chatting among humans", user_id=7)
        telegram.group_message(GROUP, "what is 2+2?", user_id=7, mention=True)
        await eventually(final_text(telegram, GROUP, "Echo: what is 2+2?"))
        telegram.group_message(GROUP, "and 3+3?", user_id=8, reply_to_bot=True)
        await eventually(final_text(telegram, GROUP, "Echo: and 3+3?"))
        telegram.group_message(GROUP, "/help", user_id=8)
        await eventually(lambda: "/reset" in telegram.chat(GROUP)[-1].text)
    sent = [r.body for r in fake_openai.model_requests()]
    assert len(sent) == 2
    assert "just chatting" not in str(sent)
    assert "@switchboard_test_bot" not in str(sent)  # the mention is not part of the question
    first = telegram.chat(GROUP)[0]
    assert first.reply_to_message_id is not None  # answers in groups reply to the asker


async def test_forum_topics_are_separate_conversations(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.group_message(GROUP, "topic one question", user_id=7, thread_id=11, mention=True)
        await eventually(final_text(telegram, GROUP, "Echo: topic one question"))
        telegram.group_message(GROUP, "topic two question", user_id=7, thread_id=22, mention=True)
        await eventually(final_text(telegram, GROUP, "Echo: topic two question"))
    replies = telegram.chat(GROUP)
    assert [m.thread_id for m in replies] == [11, 22]
    second_request = str(fake_openai.model_requests()[1].body)
    assert "topic one" not in second_request


async def test_long_replies_are_split_into_valid_messages(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    paragraphs = [f"Paragraph {n}: " + "lorem ipsum dolor sit amet " * 30 for n in range(12)]
    code = "```python\n" + "\n".join(f"value_{n} = {n} * 2" for n in range(250)) + "\n```"
    answer = "\n\n".join([*paragraphs[:6], code, *paragraphs[6:]])
    fake_openai.enqueue(Scripted(text=answer, chunks=5))
    async with running(make_app, telegram):
        telegram.private_message(USER, "write a lot")
        await eventually(lambda: any("Paragraph 11" in m.text for m in telegram.chat(USER)))
        await asyncio.sleep(0.5)
    messages = telegram.chat(USER)
    assert len(messages) >= 3
    assert all(len(m.text.encode("utf-16-le")) // 2 <= 4096 for m in messages)
    joined = "".join(m.text for m in messages)
    for n in range(12):
        assert joined.count(f"Paragraph {n}:") == 1
    assert joined.count("value_249 = 249 * 2") == 1
    code_parts = [m for m in messages if "value_" in m.text]
    assert all('<code class="language-python">' in (m.html or "") for m in code_parts)


async def test_hostile_markdown_still_renders(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    hostile = "**unbalanced <script>alert(1)</script> & more\n```python\nprint('<b>')\n````\n``"
    fake_openai.enqueue(Scripted(text=hostile))
    async with running(make_app, telegram):
        telegram.private_message(USER, "<i>break</i> your formatting")
        await eventually(lambda: "alert(1)" in "".join(texts(telegram.chat(USER))))
        await asyncio.sleep(0.3)
    shown = "".join(texts(telegram.chat(USER)))
    assert "<script>alert(1)</script>" in shown  # shown as text, never as markup
    assert "print('<b>')" in shown
    assert telegram.chat(USER)[-1].parse_mode == "HTML"


async def test_a_429_mid_stream_delays_only_that_chat(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    slow = Scripted(text="stream " * 40, chunks=40, chunk_delay=0.05)
    fake_openai.enqueue(slow, Scripted(text="quick answer"))
    async with running(make_app, telegram):
        telegram.fail_next(
            "editMessageText", 429, "Too Many Requests: retry after 2", retry_after=2
        )
        telegram.private_message(USER, "long one")
        await eventually(lambda: bool(telegram.chat(USER)))
        telegram.private_message(2002, "short one")
        await eventually(
            final_text(telegram, 2002, "Echo: short one")
            and final_text(telegram, 2002, "quick answer")
        )
        assert telegram.chat(USER)[-1].text != ("stream " * 40).strip()  # still waiting
        await eventually(final_text(telegram, USER, ("stream " * 40).strip()))
    assert [m for m, _ in telegram.rate_limited] == ["editMessageText"]


async def test_commands_and_inline_keyboards(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram) as app:
        telegram.private_message(USER, "/mode")
        await eventually(lambda: "Current mode" in "".join(texts(telegram.chat(USER))))
        menu = telegram.chat(USER)[-1]
        buttons = [b for row in (menu.reply_markup or {})["inline_keyboard"] for b in row]
        coder = next(b for b in buttons if b["callback_data"] == "/mode coder")
        telegram.callback_query(USER, menu.message_id, coder["callback_data"], user_id=USER)
        await eventually(lambda: telegram.chat(USER)[-1].text == "Mode set to Code helper.")
        telegram.private_message(USER, "/model gpt-4o")
        await eventually(lambda: telegram.chat(USER)[-1].text == "Model set to GPT-4o.")
        mode, model = await app.choices.current(ConversationKey("telegram", place=str(USER)))
        assert (mode.id, model.id) == ("coder", "gpt-4o")
        telegram.private_message(USER, "/reset")
        await eventually(lambda: "new conversation" in telegram.chat(USER)[-1].text)
        telegram.private_message(USER, "/frobnicate")
        await eventually(lambda: "I don't know /frobnicate" in telegram.chat(USER)[-1].text)
    assert telegram.answered_callback_queries()


async def test_cancel_stops_a_reply_in_progress(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="word " * 400, chunks=400, chunk_delay=0.02))
    async with running(make_app, telegram):
        telegram.private_message(USER, "tell me everything")
        await eventually(lambda: bool(telegram.chat(USER)))
        telegram.private_message(USER, "/cancel")
        await eventually(lambda: "(stopped)" in "".join(texts(telegram.chat(USER))))
    shown = "".join(texts(telegram.chat(USER)))
    assert shown.count("word") < 400
    assert "Stopped. What was written so far is kept." in shown


async def test_allow_list_refuses_others_once_and_never_calls_the_model(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram, SWITCHBOARD_ALLOWED_USERS=f"telegram:{USER}"):
        telegram.private_message(3003, "let me in")
        telegram.private_message(3003, "please?")
        telegram.private_message(USER, "hello")
        await eventually(final_text(telegram, USER, "Echo: hello"))
        await eventually(lambda: bool(telegram.chat(3003)))
        await asyncio.sleep(0.3)
    [refusal] = telegram.chat(3003)
    assert "only available to approved users" in refusal.text and "3003" in refusal.text
    assert len(fake_openai.model_requests()) == 1


async def test_ignored_and_malformed_updates_do_not_break_the_bot(
    make_app: AppFactory,
    telegram: FakeTelegram,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with running(make_app, telegram):
        sent = telegram.private_message(USER, "original")
        await eventually(final_text(telegram, USER, "Echo: original"))
        edited = dict(sent["message"], text="edited", edit_date=sent["message"]["date"] + 5)
        telegram.push_update({"edited_message": edited})
        telegram.push_update(
            {
                "channel_post": {
                    "message_id": 1,
                    "date": 0,
                    "text": "news",
                    "chat": {"id": -1009, "type": "channel"},
                }
            }
        )
        bad = telegram.push_update({"message": {"message_id": "oops", "chat": "not a chat"}})
        telegram.push_update({"some_future_update_type": {"x": 1}})
        telegram.private_message(USER, "still alive?")
        await eventually(final_text(telegram, USER, "Echo: still alive?"))
    assert len(fake_openai.model_requests()) == 2
    skipped = [r.getMessage() for r in caplog.records if "malformed Telegram update" in r.msg]
    assert len(skipped) == 1 and skipped[0].endswith(f"(id {bad})")
    # One line for the skipped update: no record of the whole batch, users' text included.
    assert not [r for r in caplog.records if "still alive?" in r.getMessage()]


async def test_upstream_failures_reach_the_chat_as_a_friendly_line(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(error="insufficient_quota"))
    async with running(make_app, telegram):
        telegram.private_message(USER, "hello")
        await eventually(
            lambda: bool(telegram.chat(USER)) and "credit" in telegram.chat(USER)[-1].text
        )
    shown = "".join(texts(telegram.chat(USER)))
    assert "Traceback" not in shown and telegram.token not in shown and API_KEY not in shown


async def test_webhook_mode_checks_the_secret_and_answers_each_update_once(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    async with running(
        make_app,
        telegram,
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram-hook",
        TELEGRAM_WEBHOOK_SECRET="s3cret-token",
        TELEGRAM_WEBHOOK_PORT=port,
    ):
        registered = telegram.calls_to("setWebhook")[-1].params
        assert registered["secret_token"] == "s3cret-token"
        update = telegram.private_message(USER, "via webhook")
        await eventually(final_text(telegram, USER, "Echo: via webhook"))
        assert await telegram.deliver_webhook_async(update) == 200  # redelivered
        assert await telegram.deliver_webhook_async(update, secret="wrong") == 403
        assert await telegram.deliver_webhook_async(update, secret=None) == 403
        await asyncio.sleep(0.5)
    assert len(fake_openai.model_requests()) == 1
    assert texts(telegram.chat(USER)) == ["Echo: via webhook"]


async def test_plain_text_fallback_when_telegram_rejects_the_html(
    telegram: FakeTelegram,
) -> None:
    telegram.fail_next(
        "sendMessage", 400, 'Bad Request: can\'t parse entities: unsupported start tag "x"'
    )
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    async with bot:
        reply = TelegramReply(bot, ChatPlace(USER, group=False), FloodControl())
        await reply.emit(ReplyFinished("Some **bold** words and [a link](https://example.com)."))
    [message] = telegram.chat(USER)
    assert message.parse_mode is None
    assert message.text == "Some bold words and a link (https://example.com)."


def test_a_webhook_needs_a_secret(make_settings: Callable[..., object]) -> None:
    settings = make_settings(
        TELEGRAM_BOT_TOKEN="1:x", TELEGRAM_WEBHOOK_URL="https://bot.example.com/hook"
    )
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        TelegramChannel(None, None, settings)  # type: ignore[arg-type]


async def test_message_not_modified_is_not_an_error(telegram: FakeTelegram) -> None:
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    async with bot:
        shown = await bot.send_message(USER, "menu")
        reply = TelegramReply(bot, ChatPlace(USER, group=False), FloodControl())
        reply.adopt(shown.message_id)
        telegram.fail_next(
            "editMessageText",
            400,
            "Bad Request: message is not modified: specified new message content and reply "
            "markup are exactly the same as a current content and reply markup of the message",
        )
        await reply.show("menu")  # Telegram says nothing changed: that is success
        await reply.show("menu")  # and it is remembered: no second call
    assert len(telegram.calls_to("editMessageText")) == 1


async def test_a_deleted_message_is_continued_in_a_new_one(telegram: FakeTelegram) -> None:
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    async with bot:
        reply = TelegramReply(bot, ChatPlace(USER, group=False), FloodControl(UNPACED))
        await reply.emit(TextDelta("Partial answer"))
        await eventually(lambda: bool(telegram.chat(USER)))
        await bot.delete_message(USER, telegram.chat(USER)[0].message_id)
        await reply.emit(ReplyFinished("Partial answer, now complete."))
    assert texts(telegram.chat(USER)) == ["Partial answer, now complete."]


async def test_stopped_note_and_tool_names_stay_valid_at_the_limit(
    telegram: FakeTelegram,
) -> None:
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    near_limit = "x" * 4094
    async with bot:
        reply = TelegramReply(bot, ChatPlace(USER, group=False), FloodControl(UNPACED))
        await reply.emit(TextDelta(near_limit))
        await reply.emit(ToolStarted("c1", "<evil>&tool", "{}"))
        await eventually(lambda: "<evil>&tool" in "".join(texts(telegram.chat(USER))))
        await reply.emit(ReplyFinished(near_limit, cancelled=True))
    shown = texts(telegram.chat(USER))
    assert "".join(shown) == near_limit + "(stopped)"
    assert all(len(text) <= 4096 for text in shown)
    assert telegram.rate_limited == []


async def test_shutdown_stops_replies_in_flight_and_keeps_their_text(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="endless " * 500, chunks=500, chunk_delay=0.05))
    async with running(make_app, telegram):
        telegram.private_message(USER, "talk forever")
        await eventually(lambda: bool(telegram.chat(USER)))
    # Leaving the block stopped the channel (grace 1 s): the reply was cut and delivered.
    shown = "".join(texts(telegram.chat(USER)))
    assert "(stopped)" in shown and 0 < shown.count("endless") < 500
    async with make_app() as restarted:
        store = restarted.store
        conversation = await store.active_conversation(ConversationKey("telegram", place=str(USER)))
        [reply, _] = await store.recent_messages(conversation.id, limit=2)
    assert reply.text.count("endless") == shown.count("endless")


async def test_replies_waiting_in_one_chat_share_one_typing_indicator(
    telegram: FakeTelegram,
) -> None:
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    async with bot:
        typing = TypingIndicators(bot, after=0.0, every=0.2)
        typing.waiting((USER, None))
        typing.waiting((USER, None))
        typing.waiting((2002, None))
        await asyncio.sleep(0.3)
        typing.done((USER, None))  # one reply in USER's chat still waits
        typing.done((2002, None))
        await asyncio.sleep(0.3)
        typing.done((USER, None))
        await asyncio.sleep(0.3)
    per_chat = [c.params["chat_id"] for c in telegram.calls_to("sendChatAction")]
    # About every 0.2 s while waiting: 2002 for 0.3 s, USER for 0.6 s with one loop, started
    # over when the first reply showed (two loops would have sent about six).
    assert 1 <= per_chat.count(2002) <= 3
    assert 2 <= per_chat.count(USER) <= 5


async def test_the_indicator_is_shown_again_soon_after_a_reply_clears_it(
    telegram: FakeTelegram,
) -> None:
    """A bot message clears the indicator in Telegram's clients: a reply still waiting in
    that chat gets it back after ``after``, not at the loop's next ``every``."""
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    async with bot:
        typing = TypingIndicators(bot, after=0.1, every=30.0)
        typing.waiting((USER, None))
        typing.waiting((USER, None))
        await asyncio.sleep(0.3)
        assert len(telegram.calls_to("sendChatAction")) == 1
        typing.done((USER, None))  # the first reply shows; the second still waits
        await asyncio.sleep(0.3)
        assert len(telegram.calls_to("sendChatAction")) == 2
        typing.done((USER, None))
        await asyncio.sleep(0.3)
    assert len(telegram.calls_to("sendChatAction")) == 2


async def test_admins_manage_budgets_from_the_chat_and_others_are_refused(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    admin, member = 5005, 6006
    async with running(make_app, telegram, SWITCHBOARD_ADMINS=f"telegram:{admin}") as app:
        telegram.private_message(member, "hello", username="member")
        await eventually(final_text(telegram, member, "Echo: hello"))
        telegram.private_message(admin, "/quota set @member $0.000001 daily")
        await eventually(lambda: "Budget set" in last(telegram, admin))
        telegram.private_message(member, "/quota set default 100 daily")
        await eventually(lambda: len(telegram.chat(member)) == 2)
        telegram.private_message(member, "this is refused")  # budgets are hard limits
        await eventually(lambda: "not enough for this message" in last(telegram, member))
        telegram.private_message(member, "/usage")
        await eventually(lambda: "Your usage" in last(telegram, member))
        telegram.private_message(admin, "/quota set @member lots daily")
        await eventually(lambda: "/quota set <who>" in last(telegram, admin))
        telegram.private_message(admin, "/usage all")
        await eventually(lambda: "Top users" in last(telegram, admin))
        budgets = await app.storage.budgets.budgets()
    member_chat = texts(telegram.chat(member))
    assert telegram.chat(admin)[0].text == (
        f"Budget set: @member (telegram:{member}), $0.000001 daily."
    )
    assert member_chat[1] == "Only admins can do that."
    assert member_chat[2].startswith(
        "⚠️ Your daily budget of $0.000001 has $0.000001 left, not enough for this message; "
        "it resets at 00:00 UTC"
    )
    assert "daily (yours): $" in member_chat[3]
    assert f"(telegram:{member}): $0.0000" in telegram.chat(admin)[-1].text
    assert [(b.subject, b.limit_micros) for b in budgets] == [(f"telegram:{member}", 1)]
    assert len(fake_openai.model_requests()) == 1  # the refused message made no call


def last(telegram: FakeTelegram, chat: int) -> str:
    shown = telegram.chat(chat)
    return shown[-1].text if shown else ""


async def test_admins_block_and_allow_users_from_the_chat(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    admin, member = 5005, 6006
    async with running(make_app, telegram, SWITCHBOARD_ADMINS=f"telegram:{admin}"):
        telegram.private_message(member, "hello", username="member")
        await eventually(final_text(telegram, member, "Echo: hello"))
        telegram.private_message(admin, "/block @member")
        await eventually(lambda: "is blocked" in last(telegram, admin))
        telegram.private_message(member, "am I still here?")
        await eventually(lambda: "only available to approved users" in last(telegram, member))
        telegram.private_message(admin, f"/allow {member}")
        await eventually(lambda: "may use the bot now" in last(telegram, admin))
        telegram.private_message(member, "back again")
        await eventually(final_text(telegram, member, "Echo: back again"))
    assert len(fake_openai.model_requests()) == 2  # the blocked message never reached it
    assert telegram.chat(admin)[0].text == (
        f"@member (telegram:{member}) is blocked: the bot will not answer them."
    )
