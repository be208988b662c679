"""Tests for the fake Slack, driven through the real slack-sdk and slack-bolt."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_server import FakeSlack, sign

ROOT = Path(__file__).resolve().parent.parent
TS_RE = re.compile(r"^\d{10}\.\d{6}$")
GENERAL = "C0GENERAL"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A fake Slack without the posting rate limit (tests of the limit build their own)."""
    with FakeSlack(per_channel_rate=math.inf) as server:
        yield server


def client_for(fake: FakeSlack, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
    """The real slack-sdk client pointed at the fake, as an operator would configure it."""
    return AsyncWebClient(token=token or fake.bot_token, base_url=fake.api_url, **kwargs)


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return client_for(fake)


async def api_error(call: Awaitable[Any]) -> SlackApiError:
    """The SlackApiError ``call`` raises."""
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


def error_of(exc: SlackApiError) -> str:
    return str(exc.response["error"])


@dataclass
class Captured:
    """Requests an app on loopback received."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Captured]:
    """A bare HTTP app on the test's loop that records what the fake sends to it."""
    captured = Captured(url="")

    async def handle(request: web.Request) -> web.Response:
        captured.requests.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    captured.url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        yield captured
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- auth


async def test_auth_test_describes_the_bot(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.auth_test()
    assert response["ok"] is True
    assert response["user_id"] == "U0BOT"
    assert response["bot_id"] == "B0BOT"
    assert response["team_id"] == "T0FAKE"
    assert response["url"].startswith(fake.url)
    assert {"team", "user"} <= set(response.data)


async def test_tokens_are_checked_like_slack(fake: FakeSlack) -> None:
    wrong = await api_error(client_for(fake, "xoxb-wrong").auth_test())
    assert error_of(wrong) == "invalid_auth"
    assert wrong.response.status_code == 200
    missing = await api_error(AsyncWebClient(base_url=fake.api_url).auth_test())
    assert error_of(missing) == "not_authed"
    app_token = await api_error(
        client_for(fake, fake.app_token).chat_postMessage(channel=GENERAL, text="x")
    )
    assert error_of(app_token) == "not_allowed_token_type"
    unknown = await api_error(client_for(fake).api_call("chat.shout", json={"text": "x"}))
    assert error_of(unknown) == "unknown_method"
    assert fake.messages(GENERAL) == []
    recorded = fake.calls_to("chat.shout")[0]
    assert recorded.error == "unknown_method"
    assert "Authorization" not in recorded.headers


# --------------------------------------------------------------------------- chat.postMessage


async def test_post_message_returns_unique_increasing_ts(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    stamps = []
    for n in range(5):
        response = await client.chat_postMessage(channel=GENERAL, text=f"hello {n}")
        assert response["channel"] == GENERAL
        assert response["message"]["text"] == f"hello {n}"
        assert response["message"]["bot_id"] == "B0BOT"
        assert response["message"]["user"] == "U0BOT"
        stamps.append(response["ts"])
    assert all(TS_RE.match(ts) for ts in stamps)
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5
    messages = fake.messages(GENERAL)
    assert [m.text for m in messages] == [f"hello {n}" for n in range(5)]
    assert all(m.is_bot and not m.deleted and m.edits == 0 for m in messages)


async def test_thread_replies_are_kept_with_their_parent(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    event = fake.mention("U0ALICE", "what time is it?")
    reply = await client.chat_postMessage(channel=GENERAL, text="noon", thread_ts=event["ts"])
    assert reply["message"]["thread_ts"] == event["ts"]
    assert reply["message"]["parent_user_id"] == "U0ALICE"
    await client.chat_postMessage(channel=GENERAL, text="unrelated")
    thread = fake.thread(GENERAL, event["ts"])
    assert [(m.text, m.is_bot) for m in thread] == [(event["text"], False), ("noon", True)]
    assert thread[1].thread_ts == event["ts"]


async def test_form_encoded_blocks_are_decoded_in_recorded_calls(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    response = await client.api_call(
        "chat.postMessage",
        data={
            "channel": GENERAL,
            "text": "hi",
            "blocks": json.dumps(blocks),
            "mrkdwn": "false",
            "unfurl_links": "false",
        },
    )
    assert response["message"]["blocks"] == blocks
    call = fake.calls_to("chat.postMessage")[0]
    assert call.params["blocks"] == blocks
    assert call.params["mrkdwn"] is False
    assert call.params["unfurl_links"] is False
    assert call.status == 200
    assert "Authorization" not in call.headers
    assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert fake.messages(GENERAL)[0].blocks == blocks


async def test_posting_to_a_user_id_lands_in_the_dm(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    response = await client.chat_postMessage(channel="U0ALICE", text="psst")
    assert response["channel"] == fake.dm_channel("U0ALICE") == "D0ALICE"
    assert [m.text for m in fake.messages("D0ALICE")] == ["psst"]


def section(length: int) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": "x" * length}}


def header(length: int) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": "h" * length}}


def markdown(length: int) -> dict[str, Any]:
    return {"type": "markdown", "text": "m" * length}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"channel": GENERAL}, "no_text"),
        ({"channel": GENERAL, "text": ""}, "no_text"),
        ({"channel": GENERAL, "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": "general", "text": "x"}, "channel_not_found"),
        ({"channel": "#general", "text": "x"}, "channel_not_found"),
        ({"text": "x"}, "channel_not_found"),
        ({"channel": GENERAL, "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": [section(3001)]}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": [header(151)]}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": [{"type": "carousel"}]}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": [markdown(6001), markdown(6000)]}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": [section(0)]}, "invalid_blocks"),
        ({"channel": GENERAL, "blocks": "[not json"}, "invalid_blocks_format"),
    ],
)
async def test_post_message_errors(
    fake: FakeSlack, client: AsyncWebClient, body: dict[str, Any], error: str
) -> None:
    exc = await api_error(client.api_call("chat.postMessage", json=body))
    assert error_of(exc) == error
    assert exc.response.status_code == 200
    assert fake.messages(GENERAL) == []


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "divider"}] * 50,
        [section(3000)],
        [header(150)],
        [markdown(6000), markdown(6000)],
    ],
)
async def test_blocks_at_the_limits_are_accepted(
    fake: FakeSlack, client: AsyncWebClient, blocks: list[dict[str, Any]]
) -> None:
    await client.chat_postMessage(channel=GENERAL, text="fallback", blocks=blocks)
    assert fake.messages(GENERAL)[0].blocks == blocks


async def test_invalid_blocks_name_the_offending_field(client: AsyncWebClient) -> None:
    exc = await api_error(
        client.chat_postMessage(channel=GENERAL, text="x", blocks=[header(1), section(3001)])
    )
    assert error_of(exc) == "invalid_blocks"
    assert any("/blocks/1/text/text" in e for e in exc.response["errors"])


# --------------------------------------------------------------------------- edits, ephemeral


async def test_update_edits_the_bots_message(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [section(10)]
    posted = await client.chat_postMessage(channel=GENERAL, text="draft", blocks=blocks)
    updated = await client.chat_update(channel=GENERAL, ts=posted["ts"], text="final")
    assert updated["ts"] == posted["ts"]
    assert updated["text"] == "final"
    assert updated["message"]["edited"]["user"] == "U0BOT"
    [message] = fake.messages(GENERAL)
    assert (message.text, message.edits, message.blocks) == ("final", 1, blocks)
    await client.chat_update(channel=GENERAL, ts=posted["ts"], text="again", blocks=[])
    assert fake.messages(GENERAL)[0].edits == 2
    assert fake.messages(GENERAL)[0].blocks is None


async def test_update_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.channel_message("U0ALICE", "mine", channel=GENERAL)
    posted = await client.chat_postMessage(channel=GENERAL, text="bot")
    missing = await api_error(client.chat_update(channel=GENERAL, ts="1.000001", text="x"))
    assert error_of(missing) == "message_not_found"
    foreign = await api_error(client.chat_update(channel=GENERAL, ts=event["ts"], text="x"))
    assert error_of(foreign) == "cant_update_message"
    too_long = await api_error(
        client.chat_update(channel=GENERAL, ts=posted["ts"], text="y" * 40_001)
    )
    assert error_of(too_long) == "msg_too_long"
    bad_blocks = await api_error(
        client.chat_update(channel=GENERAL, ts=posted["ts"], text="y", blocks=[header(151)])
    )
    assert error_of(bad_blocks) == "invalid_blocks"
    assert [m.text for m in fake.messages(GENERAL)] == ["mine", "bot"]


async def test_delete_flags_the_message(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.channel_message("U0ALICE", "mine", channel=GENERAL)
    posted = await client.chat_postMessage(channel=GENERAL, text="oops")
    deleted = await client.chat_delete(channel=GENERAL, ts=posted["ts"])
    assert deleted["ts"] == posted["ts"]
    assert fake.messages(GENERAL)[1].deleted is True
    again = await api_error(client.chat_delete(channel=GENERAL, ts=posted["ts"]))
    assert error_of(again) == "message_not_found"
    foreign = await api_error(client.chat_delete(channel=GENERAL, ts=event["ts"]))
    assert error_of(foreign) == "cant_delete_message"


async def test_ephemeral_messages_are_kept_apart(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(
        channel=GENERAL, user="U0ALICE", text="only you", thread_ts="1700000000.000100"
    )
    assert TS_RE.match(response["message_ts"])
    [message] = fake.ephemeral(GENERAL, "U0ALICE")
    assert (message.text, message.ephemeral_to, message.thread_ts) == (
        "only you",
        "U0ALICE",
        "1700000000.000100",
    )
    assert fake.ephemeral(GENERAL, "U0BOB") == []
    assert fake.messages(GENERAL) == []
    no_user = await api_error(client.api_call("chat.postEphemeral", json={"channel": GENERAL}))
    assert error_of(no_user) == "user_not_found"


# --------------------------------------------------------------------------- limits and failures


async def test_per_channel_rate_limit_answers_429_with_retry_after() -> None:
    with FakeSlack(per_channel_rate=0.5, per_channel_burst=2) as fake:
        client = client_for(fake)
        first = await client.chat_postMessage(channel=GENERAL, text="1")
        await client.chat_postMessage(channel=GENERAL, text="2")
        limited = await api_error(client.chat_postMessage(channel=GENERAL, text="3"))
        assert limited.response.status_code == 429
        assert error_of(limited) == "ratelimited"
        assert int(limited.response.headers["Retry-After"]) >= 1
        update = await api_error(client.chat_update(channel=GENERAL, ts=first["ts"], text="x"))
        assert update.response.status_code == 429
        await client.chat_postMessage(channel="C0OTHER", text="another channel is fine")
        assert fake.rate_limited == 2
        assert fake.rate_limited_by_method == {"chat.postMessage": 1, "chat.update": 1}
        assert [m.text for m in fake.messages(GENERAL)] == ["1", "2"]
        assert fake.calls_to("chat.postMessage")[2].status == 429


async def test_retry_handler_honours_retry_after(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", retry_after=1)
    client = client_for(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    response = await client.chat_postMessage(channel=GENERAL, text="patient")
    assert time.monotonic() - started >= 1.0
    assert response["ok"] is True
    assert fake.rate_limited == 1
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert [m.text for m in fake.messages(GENERAL)] == ["patient"]


async def test_fail_next_injects_slack_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", "internal_error", times=2)
    for _ in range(2):
        exc = await api_error(client.chat_postMessage(channel=GENERAL, text="x"))
        assert (exc.response.status_code, error_of(exc)) == (200, "internal_error")
    await client.chat_postMessage(channel=GENERAL, text="x")
    fake.fail_next("auth.test", "service_unavailable", status=503)
    exc = await api_error(client.auth_test())
    assert exc.response.status_code == 503
    assert fake.rate_limited == 0
    assert len(fake.messages(GENERAL)) == 1


# --------------------------------------------------------------------------- streaming


async def test_stream_start_append_stop(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.dm("U0ALICE", "tell me a story")
    channel = event["channel"]
    started = await client.chat_startStream(
        channel=channel, thread_ts=event["ts"], markdown_text="Once"
    )
    assert started["channel"] == channel
    assert TS_RE.match(started["ts"])
    assert fake.messages(channel)[1].streaming == "in_progress"
    await client.chat_appendStream(channel=channel, ts=started["ts"], markdown_text=" upon")
    stopped = await client.chat_stopStream(
        channel=channel, ts=started["ts"], markdown_text=" a time.", blocks=[section(5)]
    )
    assert stopped["message"]["text"] == "Once upon a time."
    reply = fake.messages(channel)[1]
    assert (reply.text, reply.streaming, reply.thread_ts) == (
        "Once upon a time.",
        "completed",
        event["ts"],
    )
    assert reply.blocks == [section(5)]
    after_stop = [
        await api_error(
            client.chat_appendStream(channel=channel, ts=started["ts"], markdown_text="more")
        ),
        await api_error(client.chat_stopStream(channel=channel, ts=started["ts"])),
    ]
    assert [error_of(e) for e in after_stop] == ["message_not_in_streaming_state"] * 2
    plain = await client.chat_postMessage(channel=channel, text="plain")
    not_stream = await api_error(
        client.chat_appendStream(channel=channel, ts=plain["ts"], markdown_text="x")
    )
    assert error_of(not_stream) == "message_not_in_streaming_state"


async def test_sdk_chat_stream_helper_sends_chunks(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.mention("U0ALICE", "stream please")
    streamer = await client.chat_stream(
        channel=GENERAL,
        thread_ts=event["ts"],
        recipient_team_id=fake.team_id,
        recipient_user_id="U0ALICE",
        buffer_size=8,
    )
    for word in ["alpha ", "beta ", "gamma ", "delta"]:
        await streamer.append(markdown_text=word)
    await streamer.stop()
    [reply] = [m for m in fake.thread(GENERAL, event["ts"]) if m.is_bot]
    assert reply.text == "alpha beta gamma delta"
    assert reply.streaming == "completed"
    assert fake.calls_to("chat.appendStream")[0].params["chunks"][0]["type"] == "markdown_text"


async def test_stream_argument_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.dm("U0ALICE", "hi")
    channel = event["channel"]
    no_thread = await api_error(
        client.api_call("chat.startStream", json={"channel": channel, "markdown_text": "x"})
    )
    assert error_of(no_thread) == "invalid_arguments"
    no_recipient = await api_error(
        client.chat_startStream(channel=GENERAL, thread_ts=event["ts"], markdown_text="x")
    )
    assert error_of(no_recipient) == "invalid_arguments"
    too_long = await api_error(
        client.chat_startStream(channel=channel, thread_ts=event["ts"], markdown_text="x" * 12_001)
    )
    assert error_of(too_long) == "msg_too_long"
    started = await client.chat_startStream(
        channel=channel, thread_ts=event["ts"], markdown_text="x" * 12_000
    )
    over_total = await api_error(
        client.chat_appendStream(channel=channel, ts=started["ts"], markdown_text="y")
    )
    assert error_of(over_total) == "msg_too_long"
    assert len(fake.messages(channel)[1].text) == 12_000


async def test_streams_expire(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.dm("U0ALICE", "hi")
    started = await client.chat_startStream(channel=event["channel"], thread_ts=event["ts"])
    fake.stream_ttl = 0.0
    exc = await api_error(
        client.chat_appendStream(channel=event["channel"], ts=started["ts"], markdown_text="x")
    )
    assert error_of(exc) == "message_not_in_streaming_state"
    assert fake.messages(event["channel"])[1].streaming == "completed"


async def test_streaming_disabled_answers_unknown_method() -> None:
    with FakeSlack(streaming=False) as fake:
        client = client_for(fake)
        event = fake.dm("U0ALICE", "hi")
        channel = event["channel"]
        errors = [
            await api_error(
                client.chat_startStream(channel=channel, thread_ts=event["ts"], markdown_text="x")
            ),
            await api_error(
                client.chat_appendStream(channel=channel, ts=event["ts"], markdown_text="x")
            ),
            await api_error(client.chat_stopStream(channel=channel, ts=event["ts"])),
        ]
        assert [error_of(e) for e in errors] == ["unknown_method"] * 3
        posted = await client.chat_postMessage(channel=channel, text="…", thread_ts=event["ts"])
        await client.chat_update(channel=channel, ts=posted["ts"], text="fallback answer")
        assert fake.messages(channel)[1].text == "fallback answer"
        assert fake.messages(channel)[1].streaming is None


async def test_stream_calls_count_against_the_channel_rate() -> None:
    with FakeSlack(per_channel_rate=0.1, per_channel_burst=2) as fake:
        client = client_for(fake)
        event = fake.dm("U0ALICE", "hi")
        started = await client.chat_startStream(channel=event["channel"], thread_ts=event["ts"])
        await client.chat_appendStream(
            channel=event["channel"], ts=started["ts"], markdown_text="a"
        )
        exc = await api_error(
            client.chat_appendStream(channel=event["channel"], ts=started["ts"], markdown_text="b")
        )
        assert exc.response.status_code == 429
        assert fake.rate_limited_by_method["chat.appendStream"] == 1
        assert fake.messages(event["channel"])[1].text == "a"


# --------------------------------------------------------------------------- assistant, users


async def test_assistant_status_history(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.dm("U0ALICE", "hi")
    for status in ("is thinking…", "is searching…", ""):
        await client.assistant_threads_setStatus(
            channel_id=event["channel"], thread_ts=event["ts"], status=status
        )
    assert fake.statuses(event["channel"], event["ts"]) == ["is thinking…", "is searching…", ""]
    assert fake.statuses(event["channel"], "1.000001") == []
    bad = await api_error(
        client.assistant_threads_setStatus(channel_id="nope", thread_ts=event["ts"], status="x")
    )
    assert error_of(bad) == "channel_not_found"


async def test_users_info(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U0ALICE", "alice", "Ally")
    response = await client.users_info(user="U0ALICE")
    user = response["user"]
    assert (user["id"], user["name"], user["is_bot"], user["team_id"]) == (
        "U0ALICE",
        "alice",
        False,
        "T0FAKE",
    )
    assert user["profile"]["display_name"] == "Ally"
    assert isinstance(user["real_name"], str)
    bot = await client.users_info(user="U0BOT")
    assert bot["user"]["is_bot"] is True
    missing = await api_error(client.users_info(user="U0NOBODY"))
    assert error_of(missing) == "user_not_found"
    fake.dm("U0CAROL", "hello")
    assert (await client.users_info(user="U0CAROL"))["user"]["id"] == "U0CAROL"


# --------------------------------------------------------------------------- files


async def test_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    event = fake.mention("U0ALICE", "draw me a chart")
    response = await client.files_upload_v2(
        content=b"\x89PNG fake image bytes",
        filename="chart.png",
        title="Chart",
        channel=GENERAL,
        thread_ts=event["ts"],
        initial_comment="here you go",
        alt_txt="a chart",
    )
    uploaded = response["file"]
    assert uploaded["name"] == "chart.png"
    assert uploaded["title"] == "Chart"
    assert uploaded["mimetype"] == "image/png"
    assert uploaded["size"] == len(b"\x89PNG fake image bytes")
    [record] = fake.uploads
    assert record.content == b"\x89PNG fake image bytes"
    assert (record.channel, record.thread_ts, record.title) == (GENERAL, event["ts"], "Chart")
    assert record.initial_comment == "here you go"
    share = fake.thread(GENERAL, event["ts"])[-1]
    assert share.text == "here you go"
    assert share.files[0]["id"] == uploaded["id"]
    info = await client.files_info(file=uploaded["id"])
    assert info["file"]["id"] == uploaded["id"]
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {fake.bot_token}"}
        async with session.get(uploaded["url_private_download"], headers=headers) as download:
            assert download.status == 200
            assert await download.read() == b"\x89PNG fake image bytes"


async def test_upload_flow_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    empty = await api_error(client.files_getUploadURLExternal(filename="a.txt", length=0))
    assert error_of(empty) == "invalid_arguments"
    unknown = await api_error(client.files_completeUploadExternal(files=[{"id": "F0NOPE"}]))
    assert error_of(unknown) == "file_not_found"
    ticket = await client.files_getUploadURLExternal(filename="a.txt", length=10)
    assert ticket["upload_url"].startswith(fake.url)
    not_uploaded = await api_error(
        client.files_completeUploadExternal(files=[{"id": ticket["file_id"], "title": "A"}])
    )
    assert error_of(not_uploaded) == "invalid_arguments"
    async with aiohttp.ClientSession() as session:
        async with session.post(ticket["upload_url"], data=b"abc") as posted:
            assert (posted.status, await posted.text()) == (200, "OK - 3")
        async with session.post(f"{fake.url}/upload/F0UNKNOWN", data=b"abc") as posted:
            assert posted.status == 404
    mismatch = await api_error(
        client.files_completeUploadExternal(files=[{"id": ticket["file_id"], "title": "A"}])
    )
    assert error_of(mismatch) == "invalid_arguments"
    bad_json = await api_error(
        client.api_call("files.completeUploadExternal", params={"files": "[nope"})
    )
    assert error_of(bad_json) == "invalid_arguments"
    assert fake.uploads == []


async def test_hosted_files_need_the_bot_token(fake: FakeSlack, client: AsyncWebClient) -> None:
    hosted = fake.add_file("notes.txt", b"secret notes", "text/plain")
    assert hosted["url_private_download"].startswith(fake.url)
    info = await client.files_info(file=hosted["id"])
    assert info["file"]["size"] == len(b"secret notes")
    async with aiohttp.ClientSession() as session:
        async with session.get(hosted["url_private_download"]) as anonymous:
            assert anonymous.status == 200
            assert anonymous.content_type == "text/html"
            assert b"secret notes" not in await anonymous.read()
        async with session.get(
            hosted["url_private"], headers={"Authorization": "Bearer xoxb-wrong"}
        ) as wrong:
            assert wrong.content_type == "text/html"
        async with session.get(
            hosted["url_private_download"],
            headers={"Authorization": f"Bearer {fake.bot_token}"},
        ) as authorised:
            assert authorised.content_type == "text/plain"
            assert await authorised.read() == b"secret notes"
    missing = await api_error(client.files_info(file="F0MISSING"))
    assert error_of(missing) == "file_not_found"


# --------------------------------------------------------------------------- response_url


async def test_slash_command_is_form_encoded_like_slack(
    fake: FakeSlack, receiver: Captured
) -> None:
    status, body, elapsed = await fake.slash_command(
        receiver.url,
        "/ask",
        "what is 2+2",
        user_id="U0ALICE",
        user_name="alice",
        channel_id=GENERAL,
        channel_name="general",
    )
    assert (status, body) == (200, "ok")
    assert elapsed >= 0
    [(headers, raw)] = receiver.requests
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    verifier = SignatureVerifier(fake.signing_secret)
    assert verifier.is_valid(
        raw.decode(), headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    form = dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
    assert list(form) == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert (form["command"], form["text"], form["user_id"]) == ("/ask", "what is 2+2", "U0ALICE")
    assert form["response_url"].startswith(f"{fake.url}/response/")


async def test_response_url_accepts_five_posts_then_expires(
    fake: FakeSlack, receiver: Captured
) -> None:
    await fake.slash_command(receiver.url, "/ask", "hi", user_id="U0ALICE", channel_id=GENERAL)
    form = dict(urllib.parse.parse_qsl(receiver.requests[0][1].decode()))
    webhook = AsyncWebhookClient(form["response_url"])
    first = await webhook.send(text="thinking…")
    assert (first.status_code, json.loads(first.body)) == (200, {"ok": True})
    shown = await webhook.send(text="4", response_type="in_channel")
    assert shown.status_code == 200
    for n in range(3):
        assert (await webhook.send(text=f"extra {n}")).status_code == 200
    expired = await webhook.send(text="too late")
    assert expired.status_code == 404
    assert json.loads(expired.body)["error"] == "expired_url"
    assert [p.payload["text"] for p in fake.responses] == [
        "thinking…",
        "4",
        "extra 0",
        "extra 1",
        "extra 2",
    ]
    assert [m.text for m in fake.messages(GENERAL)] == ["4"]
    ephemeral = fake.ephemeral(GENERAL, "U0ALICE")
    assert [m.text for m in ephemeral] == ["thinking…", "extra 0", "extra 1", "extra 2"]


async def test_response_url_expires_with_time(receiver: Captured) -> None:
    with FakeSlack(response_url_ttl=0.0) as fake:
        url = fake.new_response_url(GENERAL, "U0ALICE")
        response = await AsyncWebhookClient(url).send(text="late")
        assert response.status_code == 404
        assert fake.responses == []


async def test_block_action_and_replace_original(
    fake: FakeSlack, client: AsyncWebClient, receiver: Captured
) -> None:
    button = {
        "type": "actions",
        "block_id": "choices",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": "yes",
            }
        ],
    }
    posted = await client.chat_postMessage(channel=GENERAL, text="Approve?", blocks=[button])
    status, _, _ = await fake.block_action(
        receiver.url,
        user_id="U0ALICE",
        channel_id=GENERAL,
        message_ts=posted["ts"],
        action_id="approve",
        value="yes",
    )
    assert status == 200
    [(headers, raw)] = receiver.requests
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = dict(urllib.parse.parse_qsl(raw.decode()))
    payload = json.loads(form["payload"])
    assert payload["type"] == "block_actions"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": GENERAL,
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == posted["ts"]
    [action] = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "approve",
        "choices",
        "yes",
        "button",
    )
    assert payload["user"]["id"] == "U0ALICE"
    webhook = AsyncWebhookClient(payload["response_url"])
    assert (await webhook.send(text="Approved ✅", replace_original=True)).status_code == 200
    message = fake.messages(GENERAL)[0]
    assert (message.text, message.edits, message.blocks) == ("Approved ✅", 1, None)
    assert (await webhook.send_dict({"delete_original": True})).status_code == 200
    assert fake.messages(GENERAL)[0].deleted is True


# --------------------------------------------------------------------------- events


def test_sign_agrees_with_slack_sdk() -> None:
    body = b'{"type":"event_callback"}'
    now = int(time.time())
    signature = sign("s3cret", now, body)
    assert signature.startswith("v0=")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body.decode(), str(now), signature)
    assert verifier.generate_signature(timestamp=str(now), body=body.decode()) == signature
    assert not SignatureVerifier("other").is_valid(body.decode(), str(now), signature)
    stale = now - 600
    assert not verifier.is_valid(body.decode(), str(stale), sign("s3cret", stale, body))


async def test_deliver_event_envelope_and_headers(fake: FakeSlack, receiver: Captured) -> None:
    event = fake.mention("U0ALICE", "hello there")
    await fake.deliver_event(receiver.url, event)
    await fake.deliver_event(receiver.url, event, retry_num=1)
    await fake.deliver_event(receiver.url, event, secret="wrong", timestamp=1)
    (first_headers, first), (retry_headers, retry), (bad_headers, bad) = receiver.requests
    envelope = json.loads(first)
    assert envelope["type"] == "event_callback"
    assert envelope["event"] == event
    assert envelope["team_id"] == "T0FAKE"
    assert envelope["api_app_id"] == fake.api_app_id
    assert envelope["token"] == fake.verification_token
    assert envelope["event_id"].startswith("Ev")
    assert isinstance(envelope["event_time"], int)
    assert envelope["authorizations"] == [
        {
            "enterprise_id": None,
            "team_id": "T0FAKE",
            "user_id": "U0BOT",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ]
    assert envelope["is_ext_shared_channel"] is False
    assert envelope["event_context"].startswith("4-")
    verifier = SignatureVerifier(fake.signing_secret)
    assert verifier.is_valid(
        first.decode(),
        first_headers["X-Slack-Request-Timestamp"],
        first_headers["X-Slack-Signature"],
    )
    assert "X-Slack-Retry-Num" not in first_headers
    assert json.loads(retry)["event_id"] == envelope["event_id"]
    assert (retry_headers["X-Slack-Retry-Num"], retry_headers["X-Slack-Retry-Reason"]) == (
        "1",
        "http_timeout",
    )
    assert bad_headers["X-Slack-Request-Timestamp"] == "1"
    assert not verifier.is_valid(
        bad.decode(), bad_headers["X-Slack-Request-Timestamp"], bad_headers["X-Slack-Signature"]
    )


async def test_event_builders_match_slack_shapes(fake: FakeSlack) -> None:
    mention = fake.mention("U0ALICE", "hi")
    assert mention["type"] == "app_mention"
    assert mention["text"] == "<@U0BOT> hi"
    assert "channel_type" not in mention
    assert mention["blocks"][0]["elements"][0]["elements"][0] == {
        "type": "user",
        "user_id": "U0BOT",
    }
    assert mention["event_ts"] == mention["ts"]
    assert mention["team"] == "T0FAKE"
    dm = fake.dm("U0ALICE", "private")
    assert (dm["type"], dm["channel_type"], dm["channel"]) == ("message", "im", "D0ALICE")
    assert "client_msg_id" in dm
    reply = fake.channel_message("U0BOB", "in thread", channel=GENERAL, thread_ts=mention["ts"])
    assert (reply["channel_type"], reply["thread_ts"], reply["parent_user_id"]) == (
        "channel",
        mention["ts"],
        "U0ALICE",
    )
    own = fake.own_message("from the bot", GENERAL)
    assert (own["user"], own["bot_id"]) == ("U0BOT", "B0BOT")
    legacy = fake.own_message("legacy", GENERAL, legacy=True)
    assert (legacy["subtype"], legacy["bot_id"]) == ("bot_message", "B0BOT")
    assert "user" not in legacy
    changed = fake.message_changed(GENERAL, reply["ts"], "edited text")
    assert changed["subtype"] == "message_changed"
    assert changed["message"]["text"] == "edited text"
    assert changed["previous_message"]["text"] == "in thread"
    assert changed["message"]["edited"]["user"] == "U0BOB"
    join = fake.channel_join("U0CAROL", GENERAL)
    assert (join["subtype"], join["text"]) == ("channel_join", "<@U0CAROL> has joined the channel")
    hosted = fake.add_file("a.pdf", b"%PDF", "application/pdf")
    shared = fake.file_share("U0ALICE", GENERAL, hosted)
    assert (shared["subtype"], shared["files"][0]["id"]) == ("file_share", hosted["id"])
    with_file = fake.dm("U0ALICE", "see attached", files=[hosted])
    assert with_file["subtype"] == "file_share"
    history = fake.messages(GENERAL)
    assert [m.text for m in history][:3] == ["<@U0BOT> hi", "edited text", "from the bot"]
    assert history[1].edits == 1
    assert [m.is_bot for m in history] == [False, False, True, True, False, False]
    assert fake.event_id_for(mention) == fake.event_id_for(dict(mention))
    assert fake.event_id_for(mention) != fake.event_id_for(dm)


async def test_bolt_app_runs_against_the_fake(fake: FakeSlack) -> None:
    bolt = AsyncApp(
        client=client_for(fake), signing_secret=fake.signing_secret, process_before_response=True
    )

    @bolt.event("app_mention")
    async def answer(event: dict[str, Any], say: AsyncSay) -> None:
        await say(text=f"you said: {event['text']}", thread_ts=event["ts"])

    async def endpoint(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        status, body, _ = await fake.url_verification(url, challenge="c-123")
        assert (status, json.loads(body)) == (200, {"challenge": "c-123"})
        event = fake.mention("U0ALICE", "ping")
        status, _, _ = await fake.deliver_event(url, event)
        assert status == 200
        replies = [m for m in fake.thread(GENERAL, event["ts"]) if m.is_bot]
        assert [m.text for m in replies] == ["you said: <@U0BOT> ping"]
        stale, _, _ = await fake.deliver_event(url, event, timestamp=int(time.time()) - 600)
        forged, _, _ = await fake.deliver_event(url, event, secret="not-the-secret")
        assert (stale, forged) == (401, 401)
        assert len(fake.calls_to("chat.postMessage")) == 1
        assert fake.calls_to("auth.test")
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- socket mode


async def test_apps_connections_open_wants_the_app_token(fake: FakeSlack) -> None:
    opened = await client_for(fake).apps_connections_open(app_token=fake.app_token)
    assert re.match(rf"^ws://127\.0\.0\.1:{fake.port}/socket\?ticket=\w+$", opened["url"])
    bot = await api_error(client_for(fake).apps_connections_open(app_token=fake.bot_token))
    assert error_of(bot) == "not_allowed_token_type"
    wrong = await api_error(client_for(fake).apps_connections_open(app_token="xapp-wrong"))
    assert error_of(wrong) == "invalid_auth"


async def test_socket_mode_hello_envelopes_and_acks(fake: FakeSlack) -> None:
    received: list[dict[str, Any]] = []
    requests: list[SocketModeRequest] = []

    async def on_message(client: Any, message: dict[str, Any], raw: str | None) -> None:
        received.append(message)

    async def on_request(client: Any, request: SocketModeRequest) -> None:
        requests.append(request)
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload={"text": "got it"})
        )

    socket_client = SocketModeClient(
        app_token=fake.app_token, web_client=AsyncWebClient(base_url=fake.api_url)
    )
    socket_client.message_listeners.append(on_message)
    socket_client.socket_mode_request_listeners.append(on_request)
    try:
        await socket_client.connect()
        await fake.wait_for_socket_connection()
        event = fake.mention("U0ALICE", "over the socket")
        envelope_id = fake.socket_event(event)
        ack = await fake.wait_for_socket_ack(envelope_id)
        assert ack.payload == {"text": "got it"}
        assert received[0]["type"] == "hello"
        [request] = requests
        assert request.type == "events_api"
        assert request.accepts_response_payload is False
        assert request.payload["event"] == event
        assert request.payload["type"] == "event_callback"
        command = fake.slash_command_payload("/ask", "x", user_id="U0ALICE", channel_id=GENERAL)
        command_id = fake.socket_send("slash_commands", command)
        await fake.wait_for_socket_ack(command_id)
        assert requests[1].type == "slash_commands"
        assert requests[1].accepts_response_payload is True
        assert requests[1].payload["command"] == "/ask"
        assert [a.envelope_id for a in fake.socket_acks] == [envelope_id, command_id]
    finally:
        await socket_client.close()


# --------------------------------------------------------------------------- standalone


async def test_fake_only_routes(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=GENERAL, text="one")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{fake.url}/_fake/event/dm", json={"user": "U0ALICE", "text": "bench"}
        ) as created:
            event = await created.json()
        async with session.get(f"{fake.url}/_fake/stats") as response:
            stats = await response.json()
        async with session.get(f"{fake.url}/_fake/channel/{GENERAL}") as response:
            channel = await response.json()
    assert event["channel"] == "D0ALICE"
    assert stats["calls"] == {"chat.postMessage": 1}
    assert stats["rate_limited"] == 0
    assert stats["messages"] == {GENERAL: 1, "D0ALICE": 1}
    assert [m["text"] for m in channel] == ["one"]


def test_standalone_server_prints_its_url() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.slack_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            prefix, url = process.stdout.readline().strip().split(" ", 1)
            assert prefix == "FAKE_SLACK"
            assert url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(
                f"{url}/api/chat.postMessage",
                data=json.dumps({"channel": GENERAL, "text": "bench"}).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer xoxb-test-token",
                },
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response)["ok"] is True
            with urllib.request.urlopen(f"{url}/_fake/stats", timeout=5) as response:
                stats = json.load(response)
            assert stats["calls"] == {"chat.postMessage": 1}
            assert stats["messages"] == {GENERAL: 1}
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


async def test_sync_sender_works_from_another_thread(fake: FakeSlack, receiver: Captured) -> None:
    event = fake.dm("U0ALICE", "from a thread")
    status, body, _ = await asyncio.to_thread(fake.deliver_event_sync, receiver.url, event)
    assert (status, body) == (200, "ok")
    assert json.loads(receiver.requests[0][1])["event"]["text"] == "from a thread"
