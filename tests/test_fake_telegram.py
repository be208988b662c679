"""Tests for the fake Telegram Bot API server, driven through the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import MessageEntityType
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from tests.fakes.telegram_server import (
    SECRET_HEADER,
    FakeTelegram,
    RecordedFile,
    parse_html,
)

ROOT = Path(__file__).resolve().parent.parent
NOT_MODIFIED = (
    "Message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns whenever it hands out a time period as an int; opt in to timedelta."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """A fake server running for the duration of one test."""
    with FakeTelegram() as server:
        yield server


def bot_for(fake: FakeTelegram, token: str | None = None) -> telegram.Bot:
    """The real PTB bot pointed at the fake, as an operator would configure it."""
    return telegram.Bot(
        token or fake.token,
        base_url=f"{fake.url}/bot",
        base_file_url=f"{fake.url}/file/bot",
    )


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    """An initialised PTB bot talking to ``fake``."""
    async with bot_for(fake) as client:
        yield client


def png(width: int, height: int) -> bytes:
    """A valid, tiny grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ogg(seconds: int) -> bytes:
    """Two Ogg pages whose last granule position says ``seconds`` of 48 kHz Opus."""

    def page(granule: int, sequence: int, payload: bytes) -> bytes:
        header = b"OggS\x00\x00" + struct.pack("<qIII", granule, 1, sequence, 0)
        return header + bytes([1, len(payload)]) + payload

    return page(0, 0, b"OpusHead\x01\x01") + page(seconds * 48_000, 1, b"\x00" * 20)


@asynccontextmanager
async def webhook_receiver(secret: str) -> AsyncIterator[tuple[str, asyncio.Queue[object]]]:
    """A tiny webhook endpoint that checks the secret header (403 otherwise)."""
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get(SECRET_HEADER) != secret:
            return web.Response(status=403)
        await received.put(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``check()`` is true (polling every 20 ms)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- basics


async def test_get_me_describes_the_bot(fake: FakeTelegram, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert me.id == fake.bot_id == 123456
    assert me.is_bot
    assert me.username == "switchboard_test_bot"
    assert [c.method for c in fake.calls] == ["getMe", "getMe"]  # initialize() + ours


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with bot_for(fake, token="999:WRONG-token"):
            pass


async def test_raw_http_shapes_json_form_and_unknown_methods(fake: FakeTelegram) -> None:
    base = f"{fake.url}/bot{fake.token}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/sendMessage", json={"chat_id": 5, "text": "j"}) as r:
            body = await r.json()
            assert r.status == 200
            assert body["ok"] is True
            assert body["result"]["text"] == "j"
        async with session.post(f"{base}/SENDMESSAGE", data={"chat_id": "5", "text": "f"}) as r:
            assert (await r.json())["result"]["message_id"] == 2
        async with session.get(f"{base}/getMe") as r:
            assert (await r.json())["result"]["username"] == fake.bot_username
        async with session.post(f"{base}/noSuchMethod") as r:
            assert r.status == 404
            assert await r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with session.post(f"{fake.url}/bot1:other/getMe") as r:
            assert r.status == 401
            assert await r.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
    assert [m.text for m in fake.chat(5)] == ["j", "f"]
    assert fake.calls_to("sendMessage")[1].params == {"chat_id": 5, "text": "f"}


# --------------------------------------------------------------------------- polling


async def test_get_updates_confirms_with_offset(fake: FakeTelegram, bot: telegram.Bot) -> None:
    first = fake.private_message(42, "one")["update_id"]
    second = fake.private_message(42, "two")["update_id"]
    assert second == first + 1

    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [first, second]
    assert updates[0].effective_message is not None
    assert updates[0].effective_message.text == "one"

    again = await bot.get_updates(offset=second, timeout=0)
    assert [u.update_id for u in again] == [second]  # the first one is now confirmed
    assert await bot.get_updates(offset=second + 1, timeout=0) == ()
    assert fake.pending_updates() == []


async def test_get_updates_negative_offset_and_explicit_ids(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    assert fake.push_update({"update_id": 500, "message": private_message_dict(1, 1)}) == 500
    latest = fake.private_message(1, "latest")["update_id"]
    assert latest == 501
    updates = await bot.get_updates(offset=-1, timeout=0)
    assert [u.update_id for u in updates] == [latest]


def private_message_dict(chat_id: int, message_id: int) -> dict[str, object]:
    """A minimal user message as Telegram sends it."""
    return {
        "message_id": message_id,
        "date": 1_700_000_000,
        "chat": {"id": chat_id, "type": "private", "first_name": "A"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "A"},
        "text": "raw",
    }


async def test_allowed_updates_filters_and_persists(fake: FakeTelegram, bot: telegram.Bot) -> None:
    reaction = {
        "message_reaction": {
            "chat": {"id": 3, "type": "private", "first_name": "A"},
            "message_id": 1,
            "date": 1_700_000_000,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        }
    }
    fake.push_update(reaction)  # opt-in type: dropped by default
    fake.private_message(3, "hello")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["hello"]
    assert len(updates) == 1

    fake.push_update(reaction)
    fake.private_message(3, "ignored")
    updates = await bot.get_updates(
        offset=updates[-1].update_id + 1, timeout=0, allowed_updates=["message_reaction"]
    )
    assert [u.message_reaction is not None for u in updates] == [True]
    fake.private_message(3, "still ignored")
    later = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert later == ()  # allowed_updates is remembered between calls


async def test_long_poll_wakes_when_an_update_arrives(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=20))
    await asyncio.sleep(0.2)
    assert not poll.done()
    started = time.monotonic()
    fake.private_message(9, "wake up")
    updates = await asyncio.wait_for(poll, timeout=5)
    assert time.monotonic() - started < 2
    assert [u.effective_message.text for u in updates if u.effective_message] == ["wake up"]


async def test_a_second_poller_terminates_the_first(fake: FakeTelegram, bot: telegram.Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=20))
    await asyncio.sleep(0.2)
    async with bot_for(fake) as other:
        assert await other.get_updates(timeout=0) == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await asyncio.wait_for(poll, timeout=5)


async def test_stop_ends_a_pending_long_poll() -> None:
    fake = FakeTelegram().start()
    try:
        async with bot_for(fake) as client:
            poll = asyncio.create_task(client.get_updates(timeout=30))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.to_thread(fake.stop)
            assert time.monotonic() - started < 3
            assert await asyncio.wait_for(poll, timeout=5) == ()
    finally:
        fake.stop()


def test_push_update_is_thread_safe(fake: FakeTelegram) -> None:
    def push_many() -> None:
        for _ in range(50):
            fake.private_message(1, "x")

    threads = [threading.Thread(target=push_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [u["update_id"] for u in fake.pending_updates()]
    assert sorted(set(ids)) == ids == list(range(1, 201))
    message_ids = {u["message"]["message_id"] for u in fake.pending_updates()}
    assert len(message_ids) == 200


# --------------------------------------------------------------------------- webhook


async def test_webhook_conflict_delivery_and_secret(fake: FakeTelegram, bot: telegram.Bot) -> None:
    async with webhook_receiver("s3cret") as (url, received):
        assert await bot.set_webhook(url, secret_token="s3cret")
        with pytest.raises(Conflict) as conflict:
            await bot.get_updates(timeout=0)
        assert conflict.value.message.startswith(
            "Conflict: can't use getUpdates method while webhook is active"
        )

        update = fake.private_message(7, "via webhook")
        delivered = await asyncio.wait_for(received.get(), timeout=5)
        assert delivered == update
        await eventually(lambda: fake.pending_updates() == [])

        assert await fake.deliver_webhook_async(update) == 200
        assert await fake.deliver_webhook_async(update, secret="wrong") == 403
        assert await fake.deliver_webhook_async(update, secret=None) == 403
        with pytest.raises(RuntimeError, match="deliver_webhook_async"):
            fake.deliver_webhook(update)  # would block the loop the receiver runs on
        assert await asyncio.to_thread(fake.deliver_webhook, update) == 200
        assert received.qsize() == 2

        info = await bot.get_webhook_info()
        assert info.url == url
        assert info.pending_update_count == 0

        assert await bot.delete_webhook()
        fake.private_message(7, "polling again")
        updates = await bot.get_updates(timeout=0)
        assert [u.effective_message.text for u in updates if u.effective_message] == [
            "polling again"
        ]


async def test_webhook_rejection_keeps_updates_pending(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    async with webhook_receiver("right") as (url, received):
        await bot.set_webhook(url, secret_token="wrong")
        fake.private_message(8, "retry me")
        info = await bot.get_webhook_info()
        for _ in range(100):
            if info.last_error_message:
                break
            await asyncio.sleep(0.02)
            info = await bot.get_webhook_info()
        assert received.empty()
        assert info.last_error_message == "Wrong response from the webhook: 403 Forbidden"
        assert info.pending_update_count == 1

        await bot.set_webhook(url, secret_token="right")  # fixed: the retry gets through
        delivered = await asyncio.wait_for(received.get(), timeout=5)
        assert isinstance(delivered, dict)
        assert delivered["message"]["text"] == "retry me"


async def test_set_webhook_drop_pending_updates(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.private_message(1, "old")
    await bot.delete_webhook(drop_pending_updates=True)
    assert fake.pending_updates() == []


# --------------------------------------------------------------------------- messages


async def test_send_edit_delete_and_chat_state(fake: FakeTelegram, bot: telegram.Bot) -> None:
    incoming = fake.private_message(77, "question")["message"]["message_id"]
    sent = await bot.send_message(77, "<b>Thinking</b>", parse_mode="HTML")
    assert sent.message_id == incoming + 1
    assert sent.from_user is not None
    assert sent.from_user.id == fake.bot_id
    assert sent.text == "Thinking"
    assert sent.entities[0].type == MessageEntityType.BOLD

    edited = await bot.edit_message_text(
        "Done &amp; dusted", 77, sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, telegram.Message)
    assert edited.edit_date is not None
    reply = await bot.send_message(77, "second", reply_to_message_id=incoming)
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "question"

    state = fake.chat(77)
    assert [(m.message_id, m.text, m.edits) for m in state] == [
        (sent.message_id, "Done & dusted", 1),
        (reply.message_id, "second", 0),
    ]
    assert state[0].html == "Done &amp; dusted"
    assert state[0].parse_mode == "HTML"
    assert state[0].kind == "text"
    assert state[1].reply_to_message_id == incoming

    assert await bot.delete_message(77, sent.message_id)
    assert [m.message_id for m in fake.chat(77)] == [reply.message_id]
    with pytest.raises(BadRequest, match=r"^Message to edit not found$"):
        await bot.edit_message_text("again", 77, sent.message_id)
    with pytest.raises(BadRequest, match=r"^Message to delete not found$"):
        await bot.delete_message(77, sent.message_id)
    with pytest.raises(BadRequest, match=r"^Message to be replied not found$"):
        await bot.send_message(77, "x", reply_to_message_id=9999)
    with pytest.raises(BadRequest, match=r"^Message can't be edited$"):
        await bot.edit_message_text("mine now", 77, incoming)


async def test_edit_not_modified(fake: FakeTelegram, bot: telegram.Bot) -> None:
    sent = await bot.send_message(5, "<i>same</i>", parse_mode="HTML")
    with pytest.raises(BadRequest) as exc:
        await bot.edit_message_text("<em>same</em>", 5, sent.message_id, parse_mode="HTML")
    assert exc.value.message == NOT_MODIFIED
    await bot.edit_message_text("same", 5, sent.message_id)  # entities differ: modified
    assert fake.chat(5)[0].entities == []


async def test_edit_without_markup_removes_the_keyboard(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop")]])
    sent = await bot.send_message(5, "streaming", reply_markup=keyboard)
    assert fake.chat(5)[0].reply_markup == keyboard.to_dict()
    await bot.edit_message_text("final", 5, sent.message_id)
    assert fake.chat(5)[0].reply_markup is None


async def test_text_limits(fake: FakeTelegram, bot: telegram.Bot) -> None:
    await bot.send_message(1, "x" * 4096)
    await bot.send_message(1, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(1, "x" * 4097)
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(1, "😀" * 2049)  # 2049 characters, 4098 UTF-16 units
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(1, "")
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(1, "<b> </b>", parse_mode="HTML")
    with pytest.raises(
        BadRequest, match=r"^Parse_mode markdownv2 is not implemented by faketelegram$"
    ):
        await bot.send_message(1, "*x*", parse_mode="MarkdownV2")
    assert len(fake.chat(1)) == 2


@pytest.mark.parametrize(
    ("markup", "text", "entities"),
    [
        ("<b>bold</b> <i>it</i>", "bold it", [("bold", 0, 4), ("italic", 5, 2)]),
        (
            "<strong>a</strong><em>b</em><u>c</u><ins>d</ins><s>e</s><strike>f</strike><del>g</del>",
            "abcdefg",
            [
                ("bold", 0, 1),
                ("italic", 1, 1),
                ("underline", 2, 1),
                ("underline", 3, 1),
                ("strikethrough", 4, 1),
                ("strikethrough", 5, 1),
                ("strikethrough", 6, 1),
            ],
        ),
        (
            '<span class="tg-spoiler">x</span><tg-spoiler>y</tg-spoiler>',
            "xy",
            [("spoiler", 0, 1), ("spoiler", 1, 1)],
        ),
        ("<b>nested <i>both</i></b>", "nested both", [("bold", 0, 11), ("italic", 7, 4)]),
        ("😀<b>x</b>", "😀x", [("bold", 2, 1)]),
        ("<b>short close</>", "short close", [("bold", 0, 11)]),
        ("<blockquote expandable>q</blockquote>", "q", [("expandable_blockquote", 0, 1)]),
        ("<blockquote>q</blockquote>", "q", [("blockquote", 0, 1)]),
        ("<code>a &lt; b</code>", "a < b", [("code", 0, 5)]),
        (
            "1 &lt; 2 &amp;&amp; 3 &gt; 2 &quot;q&quot; &#128512;&#x1F600; a > b",
            '1 < 2 && 3 > 2 "q" 😀😀 a > b',
            [],
        ),
    ],
)
async def test_html_accepted(
    bot: telegram.Bot, markup: str, text: str, entities: list[tuple[str, int, int]]
) -> None:
    sent = await bot.send_message(1, markup, parse_mode="HTML")
    assert sent.text == text
    assert [(e.type, e.offset, e.length) for e in sent.entities] == entities


async def test_html_links_and_code_languages(bot: telegram.Bot) -> None:
    sent = await bot.send_message(
        1,
        '<a href="https://example.com/?a=1&amp;b=2">link</a> <a href=example.org>bare</a>\n'
        '<pre><code class="language-python">print(1)</code></pre>',
        parse_mode="HTML",
    )
    links = [e.url for e in sent.entities if e.type == MessageEntityType.TEXT_LINK]
    assert links == ["https://example.com/?a=1&b=2", "http://example.org/"]
    pre = [e for e in sent.entities if e.type == MessageEntityType.PRE]
    assert [(p.language, sent.parse_entity(p)) for p in pre] == [("python", "print(1)")]
    assert not [e for e in sent.entities if e.type == MessageEntityType.CODE]


@pytest.mark.parametrize(
    ("markup", "message"),
    [
        ("<p>x</p>", 'unsupported start tag "p" at byte offset 0'),
        ("a < b", 'unsupported start tag "" at byte offset 2'),
        ("😀<b>x</i>", 'unmatched end tag at byte offset 8, expected "</b>", found "</i>"'),
        ("<b>x", 'can\'t find end tag corresponding to start tag "b"'),
        ("x</b>", "unexpected end tag at byte offset 1"),
        ("<b", "unclosed start tag at byte offset 0"),
        ("<b>x</b", "unclosed end tag at byte offset 4"),
        ('<span class="x">s</span>', 'tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<b =x>y</b>", 'empty attribute name in the tag "b" at byte offset 0'),
        ("<a href=a,b>y</a>", "unexpected end of name token at byte offset 8"),
        ("Tom & Jerry", 'unsupported html entity or bare "&" at byte offset 4'),
        ("&nbsp;", 'unsupported html entity or bare "&" at byte offset 0'),
    ],
)
async def test_html_rejected(
    fake: FakeTelegram, bot: telegram.Bot, markup: str, message: str
) -> None:
    with pytest.raises(BadRequest) as exc:
        await bot.send_message(1, markup, parse_mode="HTML")
    # PTB strips "Bad Request: " and capitalize()s the rest, lower-casing Telegram's words.
    assert exc.value.message == f"Can't parse entities: {message}"
    assert fake.chat(1) == []


def test_parse_html_keeps_tdlib_wording_and_lenient_ampersand() -> None:
    with pytest.raises(ValueError, match=r'^Unsupported start tag "p" at byte offset 3$'):
        parse_html("ab <p>")
    assert parse_html("Tom & Jerry &nbsp;", strict=False) == ("Tom & Jerry &nbsp;", [])


async def test_lenient_fake_keeps_a_bare_ampersand() -> None:
    with FakeTelegram(strict_html_entities=False) as fake:
        async with bot_for(fake) as client:
            sent = await client.send_message(1, "<b>Tom</b> & Jerry", parse_mode="HTML")
            assert sent.text == "Tom & Jerry"


# --------------------------------------------------------------------------- flood control


async def test_flood_control_blocks_one_private_chat_only() -> None:
    with FakeTelegram(private_rate=0.1, private_burst=2) as fake:
        async with bot_for(fake) as client:
            first = await client.send_message(1, "a")
            await client.send_message(1, "b")
            with pytest.raises(RetryAfter) as exc:
                await client.send_message(1, "c")
            assert exc.value.retry_after == timedelta(seconds=10)
            with pytest.raises(RetryAfter) as during:
                await client.edit_message_text("a2", 1, first.message_id)
            assert during.value.retry_after == timedelta(seconds=10)  # rounded up

            assert await client.send_chat_action(1, "typing")  # not counted
            await client.send_message(2, "another chat is fine")
            assert fake.rate_limited == [("sendMessage", 1), ("editMessageText", 1)]
            assert [m.text for m in fake.chat(1)] == ["a", "b"]
            raw = fake.calls_to("sendMessage")[2]
            assert raw.params == {"chat_id": 1, "text": "c"}


async def test_flood_control_block_lasts_retry_after() -> None:
    with FakeTelegram(private_rate=20, private_burst=1) as fake:
        async with bot_for(fake) as client:
            await client.send_message(1, "a")
            with pytest.raises(RetryAfter) as exc:
                await client.send_message(1, "b")
            assert exc.value.retry_after == timedelta(seconds=1)
            await asyncio.sleep(0.3)  # the bucket has refilled, but the block stands
            with pytest.raises(RetryAfter):
                await client.send_message(1, "c")
            await asyncio.sleep(0.8)
            await client.send_message(1, "d")
            assert [m.text for m in fake.chat(1)] == ["a", "d"]


async def test_group_and_global_limits() -> None:
    with FakeTelegram(group_per_minute=6, group_burst=1, global_per_second=3) as fake:
        async with bot_for(fake) as client:
            await client.send_message(-100123, "group")
            with pytest.raises(RetryAfter) as group:
                await client.send_message(-100123, "too soon")
            assert group.value.retry_after == timedelta(seconds=10)  # 6 a minute
            await client.send_message(10, "one")
            await client.send_message(11, "two")
            with pytest.raises(RetryAfter) as overall:
                await client.send_message(12, "three")
            assert overall.value.retry_after == timedelta(seconds=1)
            assert fake.rate_limited == [("sendMessage", -100123), ("sendMessage", 12)]


async def test_message_draft_private_only_and_counted_like_an_edit() -> None:
    with FakeTelegram(private_rate=0.1, private_burst=1) as fake:
        async with bot_for(fake) as client:
            assert await client.send_message_draft(4, 1, "<b>partial</b>", parse_mode="HTML")
            with pytest.raises(RetryAfter):
                await client.send_message(4, "final")
            with pytest.raises(BadRequest, match=r"^Textdraft_peer_invalid$"):
                await client.send_message_draft(-100555, 1, "no drafts in groups")
            assert fake.calls_to("sendMessageDraft")[0].params["text"] == "<b>partial</b>"
            assert fake.chat(4) == []


# --------------------------------------------------------------------------- files


async def test_get_file_and_download(fake: FakeTelegram, bot: telegram.Bot) -> None:
    file_id = fake.add_file(b"hello bytes")
    remote = await bot.get_file(file_id)
    assert remote.file_size == 11
    assert remote.file_path is not None
    assert remote.file_path.startswith(f"{fake.url}/file/bot{fake.token}/")
    assert bytes(await remote.download_as_bytearray()) == b"hello bytes"

    big = fake.add_file(b"x", file_size=20 * 1024 * 1024 + 1)
    with pytest.raises(BadRequest, match=r"^File is too big$"):
        await bot.get_file(big)
    with pytest.raises(BadRequest, match=r"^Wrong file_id"):
        await bot.get_file("nope")


async def test_incoming_photo_and_voice_helpers(fake: FakeTelegram, bot: telegram.Bot) -> None:
    image = png(300, 200)
    fake.photo_message(6, image, caption="what is this?")
    fake.voice_message(6, ogg(4))
    photo_update, voice_update = await bot.get_updates(timeout=0)
    assert photo_update.message is not None
    largest = photo_update.message.photo[-1]
    assert (largest.width, largest.height) == (300, 200)
    assert photo_update.message.caption == "what is this?"
    downloaded = await (await bot.get_file(largest.file_id)).download_as_bytearray()
    assert bytes(downloaded) == image
    assert voice_update.message is not None
    assert voice_update.message.voice is not None
    assert voice_update.message.voice.duration == timedelta(seconds=4)


async def test_multipart_uploads_are_recorded(fake: FakeTelegram, bot: telegram.Bot) -> None:
    image = png(3, 2)
    photo = await bot.send_photo(
        8, image, caption="<b>Look</b>", parse_mode="HTML", filename="pic.png"
    )
    assert (photo.photo[-1].width, photo.photo[-1].height) == (3, 2)
    assert photo.caption == "Look"
    voice = await bot.send_voice(8, ogg(3), filename="reply.ogg")
    assert voice.voice is not None
    assert voice.voice.duration == timedelta(seconds=3)
    document = await bot.send_document(8, b"raw bytes")
    assert document.document is not None

    sent_photo = fake.calls_to("sendPhoto")[0].params
    assert sent_photo["photo"] == RecordedFile("pic.png", "image/png", image)
    assert sent_photo["caption"] == "<b>Look</b>"
    assert fake.calls_to("sendVoice")[0].params["voice"].filename == "reply.ogg"
    # PTB names nameless bytes after their (default) MIME type.
    assert fake.calls_to("sendDocument")[0].params["document"].filename == (
        "application.octet-stream"
    )
    state = fake.chat(8)
    assert [(m.kind, m.text, m.file_name) for m in state] == [
        ("photo", "Look", "pic.png"),
        ("voice", "", "reply.ogg"),
        ("document", "", "application.octet-stream"),
    ]
    assert state[0].entities == [{"type": "bold", "offset": 0, "length": 4}]
    again = await bot.get_file(photo.photo[-1].file_id)
    assert bytes(await again.download_as_bytearray()) == image
    resent = await bot.send_photo(9, photo.photo[-1].file_id)
    assert resent.photo[-1].file_id == photo.photo[-1].file_id


async def test_upload_errors(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"^Image_process_failed$"):
        await bot.send_photo(1, b"not an image", filename="x.png")
    with pytest.raises(BadRequest, match=r"^Message caption is too long$"):
        await bot.send_photo(1, png(1, 1), caption="c" * 1025)
    with pytest.raises(BadRequest, match=r"^Failed to get http url content$"):
        await bot.send_photo(1, "https://example.com/cat.png")
    with pytest.raises(BadRequest, match=r"^Wrong file identifier/http url specified$"):
        await bot.send_voice(1, "unknown-file-id")


# --------------------------------------------------------------------------- commands, buttons


async def test_set_my_commands_round_trip(fake: FakeTelegram, bot: telegram.Bot) -> None:
    commands = [BotCommand("start", "Start talking"), BotCommand("reset", "New conversation")]
    assert await bot.set_my_commands(commands)
    assert await bot.set_my_commands(
        [BotCommand("quota", "Budgets")], scope=telegram.BotCommandScopeChat(chat_id=1)
    )
    assert await bot.get_my_commands() == tuple(commands)
    scoped = await bot.get_my_commands(scope=telegram.BotCommandScopeChat(chat_id=1))
    assert [c.command for c in scoped] == ["quota"]
    with pytest.raises(BadRequest, match=r"^Bot_command_invalid$"):
        await bot.set_my_commands([BotCommand("Bad Command", "spaces are not allowed")])
    assert fake.calls_to("setMyCommands")[0].params["commands"] == [
        {"command": "start", "description": "Start talking"},
        {"command": "reset", "description": "New conversation"},
    ]


async def test_callback_queries_and_keyboards(fake: FakeTelegram, bot: telegram.Bot) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="yes")]])
    sent = await bot.send_message(3, "Continue?", reply_markup=keyboard)
    assert sent.reply_markup == keyboard

    fake.callback_query(3, sent.message_id, "yes", user_id=3)
    (update,) = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query is not None
    assert query.data == "yes"
    assert query.message is not None
    assert query.message.message_id == sent.message_id
    assert await bot.answer_callback_query(query.id, text="OK")
    assert fake.answered_callback_queries() == [query.id]
    with pytest.raises(BadRequest, match=r"^Query is too old"):
        await bot.answer_callback_query(query.id)

    done = InlineKeyboardMarkup([[InlineKeyboardButton("Done", callback_data="done")]])
    await bot.edit_message_reply_markup(3, sent.message_id, reply_markup=done)
    with pytest.raises(BadRequest) as exc:
        await bot.edit_message_reply_markup(3, sent.message_id, reply_markup=done)
    assert exc.value.message == NOT_MODIFIED
    assert fake.chat(3)[0].reply_markup == done.to_dict()
    assert fake.chat(3)[0].edits == 1

    too_long = InlineKeyboardButton("x", callback_data="d" * 65)
    with pytest.raises(BadRequest, match=r"^Button_data_invalid$"):
        await bot.send_message(3, "x", reply_markup=InlineKeyboardMarkup([[too_long]]))


async def test_group_topic_mentions_and_replies(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.group_message(-100777, "hello", user_id=11, thread_id=42, mention=True)
    (first,) = await bot.get_updates(timeout=0)
    message = first.message
    assert message is not None
    assert message.chat.type == "supergroup"
    assert message.chat.is_forum
    assert message.is_topic_message
    assert message.message_thread_id == 42
    assert message.text == "@switchboard_test_bot hello"
    assert list(message.parse_entities([MessageEntityType.MENTION]).values()) == [
        "@switchboard_test_bot"
    ]
    # As in Telegram, a topic message "replies" to the topic's creation message.
    assert message.reply_to_message is not None
    assert message.reply_to_message.forum_topic_created is not None

    answer = await bot.send_message(-100777, "hi", message_thread_id=42)
    assert answer.is_topic_message
    fake.group_message(-100777, "thanks", user_id=11, thread_id=42, reply_to_bot=True)
    fake.group_message(-100777, "/ask@switchboard_test_bot why?", user_id=12)
    reply, command = await bot.get_updates(offset=first.update_id + 1, timeout=0)
    assert reply.message is not None
    assert reply.message.reply_to_message is not None
    assert reply.message.reply_to_message.message_id == answer.message_id
    assert reply.message.reply_to_message.from_user == answer.from_user
    assert command.message is not None
    assert list(command.message.parse_entities([MessageEntityType.BOT_COMMAND]).values()) == [
        "/ask@switchboard_test_bot"
    ]
    assert fake.chat(-100777)[0].thread_id == 42


def test_updates_parse_as_ptb_objects(fake: FakeTelegram) -> None:
    raw = fake.private_message(5, "/start now", username="alice")
    update = Update.de_json(raw, None)
    assert update.effective_user is not None
    assert update.effective_user.username == "alice"
    assert update.effective_chat is not None
    assert update.effective_chat.type == "private"
    assert update.message is not None
    assert update.message.entities[0].type == MessageEntityType.BOT_COMMAND


# --------------------------------------------------------------------------- injected errors


async def test_fail_next(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    with pytest.raises(Forbidden, match=r"^Forbidden: bot was blocked by the user$"):
        await bot.send_message(1, "one")
    with pytest.raises(RetryAfter) as exc:
        await bot.send_message(1, "two")
    assert exc.value.retry_after == timedelta(seconds=7)
    await bot.send_message(1, "three")
    assert [m.text for m in fake.chat(1)] == ["three"]
    assert fake.rate_limited == [("sendMessage", 1)]


# --------------------------------------------------------------------------- standalone


def test_standalone_server_prints_its_url() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.telegram_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            prefix, url = process.stdout.readline().strip().split(" ", 1)
            assert prefix == "FAKE_TELEGRAM"
            assert url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(
                f"{url}/_fake/private_message",
                data=json.dumps({"chat_id": 5, "text": "bench"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response)["message"]["text"] == "bench"
            burst = urllib.request.Request(
                f"{url}/_fake/private_messages",
                data=json.dumps(
                    [{"chat_id": 6, "text": "one"}, {"chat_id": 7, "text": "two"}]
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(burst, timeout=5) as response:
                assert len(json.load(response)["update_ids"]) == 2
            with urllib.request.urlopen(f"{url}/bot123456:TEST-token/getUpdates", timeout=5) as r:
                body = json.load(r)
            assert [u["message"]["text"] for u in body["result"]] == ["bench", "one", "two"]
            # Counting calls, and waiting (here in vain, for a short while) for more of them.
            started = time.monotonic()
            waited = f"{url}/_fake/calls?method=sendMessage&at_least=1&timeout=0.3"
            with urllib.request.urlopen(waited, timeout=5) as response:
                assert json.load(response) == {"getUpdates": 1}
            assert time.monotonic() - started >= 0.3
            sent = urllib.request.Request(
                f"{url}/bot123456:TEST-token/sendMessage",
                data=json.dumps({"chat_id": 6, "text": "hi"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(sent, timeout=5).close()
            with urllib.request.urlopen(waited, timeout=5) as response:
                assert json.load(response) == {"getUpdates": 1, "sendMessage": 1}
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


# --------------------------------------------------------------------------- PTB Application


def build_application(fake: FakeTelegram) -> Application[Any, Any, Any, Any, Any, Any]:
    """A PTB application configured the way an operator points it at a Bot API server."""

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(f"echo: {update.message.text}")

    application = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo))
    return application


async def test_ptb_application_polls_and_replies(fake: FakeTelegram) -> None:
    application = build_application(fake)
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=timedelta(seconds=1))
        fake.private_message(5, "hi")
        await eventually(lambda: [m.text for m in fake.chat(5)] == ["echo: hi"])
        await application.updater.stop()
        await application.stop()
    assert fake.pending_updates() == []  # PTB confirmed the update on its way out
    assert fake.calls_to("deleteWebhook")
