"""Upstream faults through the real composition root and the real openai SDK against the fake
OpenAI server: a stream cut before any text is retried (after text it is not: the user keeps
what was shown), a hung API is answered with a friendly line within the total bound, a
``retry-after`` that is not a number is ignored, and a misconfiguration tells the user an
admin was told — and the admins once per cause per hour, through the outbound port."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from bots.bootstrap import App
from core.conversation.admin_notices import AdminNotices
from core.conversation.events import ReplyFailed, ReplyFinished
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.errors import ApiKeyRejected, EndpointNotFound, UpstreamTimeout, user_message
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.sinks import RecordingSink
from tests.fakes.telegram_server import FakeTelegram
from tests.test_telegram import eventually, running, telegram

__all__ = ["telegram"]  # the fixture, shared with the channel's own tests

KEY = ConversationKey("console", place="ops")
ADA = UserRef("console", "ada", username="ada")
WRONG_KEY = "sk-wrong-0123456789abcdefghij"
ADMIN = 4242
USER = 1001


async def ask(app: App, text: str = "hello") -> ReplyFinished | ReplyFailed:
    sink = RecordingSink()
    await app.assistant.answer_message(IncomingMessage(KEY, ADA, text), sink)
    final = sink.events[-1]
    assert isinstance(final, ReplyFinished | ReplyFailed), sink.events
    return final


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_a_stream_cut_before_any_text_is_retried(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    fake_openai.enqueue(Scripted(text="lost", cut_after=0), Scripted(text="the whole answer"))
    async with make_app() as app:
        model = next(m.id for m in app.registry.models.values() if m.api == api)
        await app.choices.set_model(KEY, model)
        final = await ask(app)
    assert final == ReplyFinished("the whole answer")
    requests = fake_openai.model_requests()
    assert len(requests) == 2
    assert all(
        r.path.endswith("/responses" if api == "responses" else "/chat/completions")
        for r in requests
    )


async def test_a_stream_cut_after_text_keeps_the_text_and_is_not_retried(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="one two three four", chunks=4, cut_after=2))
    async with make_app() as app:
        final = await ask(app)
    assert isinstance(final, ReplyFailed)
    assert final.partial_text and "one two three four".startswith(final.partial_text)
    assert final.partial_text != "one two three four"
    assert len(fake_openai.model_requests()) == 1


async def test_a_hung_upstream_gets_a_friendly_line_within_the_total_bound(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.enqueue(*[Scripted(text="never", hang=True) for _ in range(5)])
    async with make_app(SWITCHBOARD_OPENAI_TOTAL_SECONDS=1.5) as app:
        started = time.monotonic()
        final = await ask(app)
        took = time.monotonic() - started
    assert isinstance(final, ReplyFailed)
    assert final.message == user_message(UpstreamTimeout("x"))
    assert took < 3.0
    assert "SWITCHBOARD_OPENAI_TOTAL_SECONDS" in caplog.text


async def test_a_retry_after_that_is_not_a_number_is_ignored(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(error="rate_limit", retry_after_raw="nan"),
        Scripted(error="rate_limit", retry_after_raw="inf"),
        Scripted(error="rate_limit", retry_after_raw="-5"),
        Scripted(text="after three odd hints"),
    )
    async with make_app() as app:
        started = time.monotonic()
        final = await ask(app)
    assert final == ReplyFinished("after three odd hints")
    assert time.monotonic() - started < 5.0  # the backoff, not an infinite wait
    assert len(fake_openai.model_requests()) == 4


class StepClock:
    def __init__(self) -> None:
        self.time = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.time


async def test_admins_are_told_once_per_cause_per_hour() -> None:
    told: list[str] = []

    async def tell(text: str) -> int:
        told.append(text)
        return 1

    clock = StepClock()
    notices = AdminNotices(tell, clock)
    key = ApiKeyRejected("the API rejected the key (401) — check OPENAI_API_KEY")
    await notices.misconfigured(key)
    clock.time += timedelta(minutes=59)
    await notices.misconfigured(key)
    await notices.misconfigured(EndpointNotFound("404 — check OPENAI_BASE_URL"))
    clock.time += timedelta(minutes=1)
    await notices.misconfigured(key)
    assert [t.split("(")[1].split(")")[0] for t in told] == [
        "ApiKeyRejected",
        "EndpointNotFound",
        "ApiKeyRejected",
    ]


async def test_a_rejected_key_tells_the_user_and_one_telegram_admin_once(
    make_app: AppFactory,
    fake_openai: FakeOpenAI,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(
        make_app,
        telegram,
        OPENAI_API_KEY=WRONG_KEY,
        SWITCHBOARD_ADMINS=f"telegram:{ADMIN}",
    ):
        for n in range(3):
            telegram.private_message(USER, f"hello {n}")
            await eventually(lambda n=n: len(telegram.chat(USER)) == n + 1)  # type: ignore[misc]
        await asyncio.sleep(0.3)
    words = user_message(ApiKeyRejected("x"))
    assert [m.text for m in telegram.chat(USER)] == [f"⚠️ {words}"] * 3
    assert "an admin has been told" in words
    [notice] = telegram.chat(ADMIN)
    assert "ApiKeyRejected" in notice.text and "OPENAI_API_KEY" in notice.text
    assert WRONG_KEY not in notice.text and WRONG_KEY[-4:] not in notice.text
    assert WRONG_KEY not in caplog.text and WRONG_KEY[-4:] not in caplog.text
