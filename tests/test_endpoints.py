"""The HTTP endpoints anyone can post to — the Slack events URL and the Telegram webhook —
driven with raw aiohttp requests: unsigned, stale, wrongly signed, garbage, bad JSON with a
valid signature and huge bodies get 400/401/403/413, one log line each and no traceback,
and the endpoint goes on serving real requests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import SIGNATURE_HEADER, TIMESTAMP_HEADER, FakeSlack, sign
from tests.fakes.telegram_server import FakeTelegram
from tests.test_slack import ADA, replied
from tests.test_slack import eventually as slack_eventually
from tests.test_slack import running as running_slack
from tests.test_telegram import USER, eventually, final_text, free_port, telegram
from tests.test_telegram import running as running_telegram

__all__ = ["telegram"]  # the fixture, shared with the channel's own tests

HUGE = os.urandom(3 * 1024 * 1024)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def signed(slack: FakeSlack, body: bytes, *, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(slack.signing_secret, stamp, body)}


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                return response.status
        except aiohttp.ClientError:
            return 0  # the server may close the connection on a body it will not read


async def test_the_slack_endpoint_refuses_what_is_not_signed_or_malformed(
    make_app: AppFactory,
    slack: FakeSlack,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = b"\xff\xfe garbage \x00"
    now = int(time.time())
    bad_json = b'{"type": "event_callback", "event": '
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str], set[int]]] = [
        (garbage, {}, {401}),
        (b"", {}, {401}),
        (garbage, {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: "v0=00"}, {401}),
        (garbage, {TIMESTAMP_HEADER: "not a time", SIGNATURE_HEADER: "v0=00"}, {400}),
        (garbage, {TIMESTAMP_HEADER: "١٢٣", SIGNATURE_HEADER: "v0=00"}, {400}),
        (b"{}", signed(slack, b"{}", stamp=now - 600), {401}),
        (garbage, signed(slack, garbage), {400}),
        (bad_json, {**signed(slack, bad_json), **json_type}, {400}),
        (b"[1, 2]", {**signed(slack, b"[1, 2]"), **json_type}, {400}),
        (b"payload=%7Bnope", signed(slack, b"payload=%7Bnope"), {400}),
        (HUGE, signed(slack, HUGE), {413, 0}),
    ]
    async with running_slack(make_app, slack) as bot:
        caplog.clear()
        statuses = [await post(bot.url, body, headers) for body, headers, _ in cases]
        # Still serving: a real event is answered.
        status, _, _ = await slack.deliver_event(bot.url, slack.dm(ADA, "still there?"))
        assert status == 200
        await slack_eventually(replied(slack, slack.dm_channel(ADA), "Echo: still there?"))
    assert [s in expected for s, (_, _, expected) in zip(statuses, cases, strict=True)] == [
        True
    ] * len(cases), statuses
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    refusals = [r for r in caplog.records if "refused a Slack request" in r.getMessage()]
    assert len(refusals) == len(cases)
    assert fake_openai.model_requests()[0].as_text().count("still there?") >= 1
    assert len(fake_openai.model_requests()) == 1


async def test_the_telegram_webhook_refuses_wrong_secrets_and_malformed_bodies(
    make_app: AppFactory,
    telegram: FakeTelegram,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-hook"
    secret = "s3cret-token"
    good = {"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"}
    update = json.dumps({"update_id": 7, "message": {"text": "no chat, no date"}}).encode()
    cases: list[tuple[bytes, dict[str, str], set[int]]] = [
        (b"{}", {}, {403}),
        (b"{}", {**good, "X-Telegram-Bot-Api-Secret-Token": "wrong"}, {403}),
        (b"\xff\xfe garbage", good, {400}),
        (b'{"update_id": ', good, {400}),
        (b"[1]", good, {400}),
        (b'{"no_update_id": 1}', good, {400}),
        (update, good, {400}),
        (HUGE, good, {413, 0}),
    ]
    async with running_telegram(
        make_app,
        telegram,
        TELEGRAM_WEBHOOK_URL=url,
        TELEGRAM_WEBHOOK_SECRET=secret,
        TELEGRAM_WEBHOOK_PORT=port,
    ):
        caplog.clear()
        statuses = [await post(url, body, headers) for body, headers, _ in cases]
        # Still serving: a real update is answered.
        message = telegram.private_message(USER, "still there?")
        await eventually(final_text(telegram, USER, "Echo: still there?"))
        assert message["update_id"]
    assert [s in expected for s, (_, _, expected) in zip(statuses, cases, strict=True)] == [
        True
    ] * len(cases), statuses
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    refusals = [r for r in caplog.records if "refused a webhook request" in r.getMessage()]
    assert len(refusals) == len(cases)
    assert len(fake_openai.model_requests()) == 1
