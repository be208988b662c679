"""Upstream failures, classified for people: through the real composition root and the real
openai SDK against the fake OpenAI server, web servers that are not the API, a blocked
account and closed ports. Users get short words; the operator's log names the cause and the
setting to check, without the key."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.bootstrap import App
from core.conversation.events import ReplyFailed
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.errors import (
    AccessDenied,
    ApiKeyRejected,
    EndpointNotFound,
    ModelNotFound,
    UpstreamTimeout,
    UpstreamUnreachable,
    user_message,
)
from tests.conftest import API_KEY, AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.other_servers import OtherServer, closed_port
from tests.fakes.sinks import RecordingSink

KEY = ConversationKey("console", place="ops")
ADA = UserRef("console", "ada", username="ada")
WRONG_KEY = "sk-wrong-0123456789abcdefghij"
MISCONFIGURED = user_message(ApiKeyRejected("x"))


@pytest.fixture
def other() -> Iterator[OtherServer]:
    with OtherServer() as server:
        yield server


async def ask(app: App, text: str = "hello") -> ReplyFailed:
    sink = RecordingSink()
    await app.assistant.answer_message(IncomingMessage(KEY, ADA, text), sink)
    final = sink.final
    assert isinstance(final, ReplyFailed), final
    return final


def failure_log(caplog: pytest.LogCaptureFixture) -> str:
    """The engine's one line about the failed turn."""
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert lines, caplog.text
    return lines[-1]


async def test_a_rejected_key_tells_users_to_ask_an_admin_and_is_not_retried(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(OPENAI_API_KEY=WRONG_KEY) as app:
        failed = await ask(app)
    assert failed.message == MISCONFIGURED
    line = failure_log(caplog)
    assert "rejected the key (401 invalid_api_key: " in line
    assert "OPENAI_API_KEY" in line
    assert len(fake_openai.model_requests()) == 1
    assert WRONG_KEY not in caplog.text and WRONG_KEY[-4:] not in caplog.text


async def test_a_base_url_without_v1_names_the_setting(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    base = fake_openai.base_url.removesuffix("/v1")
    async with make_app(OPENAI_BASE_URL=base) as app:
        failed = await ask(app)
    assert failed.message == MISCONFIGURED
    line = failure_log(caplog)
    assert f"{base}/responses answered 404" in line
    assert "OPENAI_BASE_URL" in line and "/v1" in line


@pytest.mark.parametrize(
    ("kind", "words"), [("page", "answered with a web page"), ("missing", "answered 404")]
)
async def test_a_web_server_instead_of_the_api_names_the_base_url(
    make_app: AppFactory,
    other: OtherServer,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    words: str,
) -> None:
    async with make_app(OPENAI_BASE_URL=other.url(kind)) as app:
        failed = await ask(app)
    assert failed.message == MISCONFIGURED
    line = failure_log(caplog)
    assert words in line and "OPENAI_BASE_URL" in line
    assert EndpointNotFound.__name__ not in failed.message


async def test_a_web_page_instead_of_the_image_api_is_a_misconfiguration(
    make_app: AppFactory, other: OtherServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(OPENAI_BASE_URL=other.url("page")) as app:
        sink = RecordingSink()
        await app.assistant.draw_image(IncomingMessage(KEY, ADA, "a red fox"), sink)
    assert sink.final == ReplyFailed(MISCONFIGURED)
    assert "OPENAI_BASE_URL" in failure_log(caplog)


async def test_a_blocked_region_is_access_denied(
    make_app: AppFactory, other: OtherServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(OPENAI_BASE_URL=other.url("forbidden")) as app:
        failed = await ask(app)
    assert failed.message == user_message(AccessDenied("x"))
    assert "(403 unsupported_country_region_territory: " in failure_log(caplog)


async def test_an_unknown_model_says_to_pick_another(
    make_app: AppFactory,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.withdraw_model("gpt-retired")
    models = tmp_path / "models.toml"
    models.write_text(
        textwrap.dedent(
            """
            [defaults]
            chat = "gpt-retired"

            [models."gpt-retired"]
            title = "Retired"
            api = "chat"
            context_window = 8000
            max_output_tokens = 1000
            prices = { input = "1.00", cached_input = "0.50", output = "2.00" }
            """
        )
    )
    async with make_app(SWITCHBOARD_MODELS_FILE=str(models)) as app:
        failed = await ask(app)
    assert failed.message == user_message(ModelNotFound("x"))
    assert "/model" in failed.message
    line = failure_log(caplog)
    assert "gpt-retired" in line and "SWITCHBOARD_MODELS_FILE" in line
    assert len(fake_openai.model_requests()) == 1


async def test_a_refused_connection_is_not_called_a_timeout(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"
    async with make_app(OPENAI_BASE_URL=base, SWITCHBOARD_OPENAI_MAX_RETRIES=1) as app:
        failed = await ask(app)
    assert failed.message == user_message(UpstreamUnreachable("x"))
    line = failure_log(caplog)
    assert "connection refused" in line and "OPENAI_BASE_URL" in line
    assert "time" not in line.lower()
    retries = [r for r in caplog.records if "retry 1" in r.getMessage()]
    assert "UpstreamUnreachable" in retries[0].getMessage()


async def test_an_unknown_host_is_unreachable(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(
        OPENAI_BASE_URL="http://switchboard-test.invalid/v1", SWITCHBOARD_OPENAI_MAX_RETRIES=0
    ) as app:
        failed = await ask(app)
    assert failed.message == user_message(UpstreamUnreachable("x"))
    assert "cannot resolve the host" in failure_log(caplog)


async def test_a_server_that_never_answers_is_a_timeout(
    make_app: AppFactory, other: OtherServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(
        OPENAI_BASE_URL=other.url("silent"),
        SWITCHBOARD_OPENAI_TIMEOUT_SECONDS=0.3,
        SWITCHBOARD_OPENAI_MAX_RETRIES=0,
    ) as app:
        failed = await ask(app)
    assert failed.message == user_message(UpstreamTimeout("x"))
    assert "SWITCHBOARD_OPENAI_TIMEOUT_SECONDS" in failure_log(caplog)


async def test_rate_limits_after_retries_say_busy(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.enqueue(*[Scripted(error="rate_limit", retry_after=0.01)] * 2)
    async with make_app(SWITCHBOARD_OPENAI_MAX_RETRIES=1) as app:
        failed = await ask(app)
    assert "busy" in failed.message
    assert "Rate limit reached" in failure_log(caplog)


async def test_an_exhausted_account_names_the_cause_for_the_operator(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.enqueue(Scripted(error="insufficient_quota"))
    async with make_app() as app:
        failed = await ask(app)
    assert "out of credit" in failed.message
    assert "insufficient_quota" in failure_log(caplog)


async def test_an_outage_is_reported_with_its_status(
    make_app: AppFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.enqueue(*[Scripted(error="server_error")] * 2)
    async with make_app(SWITCHBOARD_OPENAI_MAX_RETRIES=1) as app:
        failed = await ask(app)
    assert "not answering" in failed.message
    assert "failed with 500" in failure_log(caplog)
    assert API_KEY not in caplog.text


def test_every_class_has_its_own_words() -> None:
    errors = [
        ApiKeyRejected("x"),
        AccessDenied("x"),
        EndpointNotFound("x"),
        ModelNotFound("x"),
        UpstreamUnreachable("x"),
        UpstreamTimeout("x"),
    ]
    words = {type(e).__name__: user_message(e) for e in errors}
    assert all(len(text) < 120 for text in words.values())
    assert len(set(words.values())) == 4  # the three misconfigurations an admin fixes share one
