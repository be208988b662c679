"""The operations server with a real HTTP client: liveness, readiness that follows the
database and the channels, and Prometheus metrics that move with real turns (the real
core and Telegram channel against the fake OpenAI and Telegram servers)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import make_url

from bots.ops import OpsServer
from bots.pacing import FloodControl, FloodLimits
from bots.slack.retry import retry_handlers
from bots.telegram.channel import TelegramChannel
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.errors import ConfigError
from core.metrics_prometheus import PrometheusMetrics
from core.storage.database import create_engine
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.sinks import RecordingSink
from tests.fakes.slack_server import FakeSlack
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.telegram_server import FakeTelegram
from tests.test_telegram import USER, eventually, final_text

KEY = ConversationKey("telegram", place=str(USER))
# Metrics are kept when the operations server is configured (``SWITCHBOARD_HTTP_PORT``);
# the tests below serve them on a server of their own (port 0), so this port stays unused.
SERVED = {"SWITCHBOARD_HTTP_PORT": 9464}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def serving(server: OpsServer) -> AsyncIterator[str]:
    async with server:
        yield f"http://127.0.0.1:{server.port}"


async def get(url: str, method: str = "GET") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, await response.text()


async def scrape(base: str) -> Samples:
    status, text = await get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Channel:
    def __init__(self, connected: bool) -> None:
        self.connected = connected


async def test_health_unknown_paths_wrong_methods_and_failing_routes(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a route")

    database = create_engine(sqlite_url)
    server = OpsServer(
        port=0,
        host="127.0.0.1",
        database=database,
        registry=PrometheusMetrics().registry,
        routes=[web.post("/openai/webhooks", broken)],
    )
    try:
        async with serving(server) as base:
            assert await get(f"{base}/healthz") == (200, "ok\n")
            assert (await get(f"{base}/nothing-here"))[0] == 404
            assert (await get(f"{base}/healthz", "POST"))[0] == 405
            assert (await get(f"{base}/metrics", "DELETE"))[0] == 405
            with caplog.at_level(logging.INFO):
                assert await get(f"{base}/openai/webhooks", "POST") == (500, "internal error\n")
            status, _ = await get(f"{base}/readyz")
            assert status == 200
    finally:
        await database.dispose()
    assert "a bug in a route" in caplog.text
    assert "Traceback" not in caplog.text


async def test_port_in_use_is_one_clear_error(sqlite_url: str) -> None:
    database = create_engine(sqlite_url)
    registry = PrometheusMetrics().registry
    try:
        async with OpsServer(port=0, host="127.0.0.1", database=database, registry=registry) as a:
            taken = OpsServer(port=a.port, host="127.0.0.1", database=database, registry=registry)
            with pytest.raises(ConfigError, match=f"SWITCHBOARD_HTTP_PORT={a.port}"):
                await taken.__aenter__()
    finally:
        await database.dispose()


async def test_readiness_needs_every_started_channel_connected(sqlite_url: str) -> None:
    database = create_engine(sqlite_url)
    slack = Channel(connected=False)
    server = OpsServer(
        port=0,
        host="127.0.0.1",
        database=database,
        registry=PrometheusMetrics().registry,
        channels={"telegram": Channel(connected=True), "slack": slack},
    )
    try:
        async with serving(server) as base:
            status, body = await get(f"{base}/readyz")
            assert status == 503
            assert "slack: not connected" in body and "telegram" not in body.split("problems")[1]
            slack.connected = True
            assert (await get(f"{base}/readyz"))[0] == 200
    finally:
        await database.dispose()


async def test_readiness_follows_a_sqlite_database_that_cannot_be_opened(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()  # create_engine refuses a missing folder at start-up
    database = create_engine(f"sqlite+aiosqlite:///{folder / 'switchboard.db'}")
    folder.rmdir()  # gone before the first connection: SQLite cannot create the file
    server = OpsServer(
        port=0, host="127.0.0.1", database=database, registry=PrometheusMetrics().registry
    )
    try:
        async with serving(server) as base:
            status, body = await get(f"{base}/readyz")
            assert status == 503
            assert "database: unreachable (OperationalError)" in body
            assert str(tmp_path) not in body
            folder.mkdir()
            assert (await get(f"{base}/readyz"))[0] == 200
    finally:
        await database.dispose()


async def test_readiness_follows_a_postgresql_database_that_goes_away_and_back() -> None:
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (CI sets it)")
    url = make_url(admin)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    database = create_engine(through)
    server = OpsServer(
        port=0,
        host="127.0.0.1",
        database=database,
        registry=PrometheusMetrics().registry,
        ready_timeout=2.0,
    )
    try:
        async with serving(server) as base:
            assert (await get(f"{base}/readyz"))[0] == 200
            await proxy.cut()
            status, body = await get(f"{base}/readyz")
            assert status == 503
            assert "database: unreachable" in body
            await proxy.restore()
            assert (await get(f"{base}/readyz"))[0] == 200
    finally:
        await proxy.cut()
        await database.dispose()


async def test_metrics_move_with_real_telegram_turns(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    with FakeTelegram() as telegram:
        async with make_app(
            **SERVED,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_BASE_URL=f"{telegram.url}/bot",
            TELEGRAM_BASE_FILE_URL=f"{telegram.url}/file/bot",
            SWITCHBOARD_OPENAI_MAX_RETRIES=0,
        ) as app:
            channel = TelegramChannel(
                app.pipeline, app.outbox, app.settings, shutdown_grace=1.0, metrics=app.metrics
            )
            server = OpsServer(
                port=0,
                host="127.0.0.1",
                database=app.storage.database,
                registry=app.metrics.registry,
                channels={"telegram": channel},
            )
            async with serving(server) as base:
                status, body = await get(f"{base}/readyz")
                assert status == 503 and "telegram: not connected" in body
                before = await scrape(base)
                assert value(before, "switchboard_turns_in_flight") == 0
                assert value(before, "switchboard_open_jobs") == 0

                stop = asyncio.Event()
                task = asyncio.create_task(channel.run(stop))
                try:
                    await eventually(lambda: channel.connected or task.done())
                    assert (await get(f"{base}/readyz"))[0] == 200

                    telegram.fail_next(
                        "sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1
                    )
                    fake_openai.enqueue(Scripted(text="four", usage=(120, 20, 7)))
                    telegram.private_message(USER, "what is 2+2?")
                    await eventually(final_text(telegram, USER, "four"))
                    fake_openai.enqueue(Scripted(error="server_error"))
                    telegram.private_message(USER, "and now?")
                    await eventually(lambda: len(telegram.chat(USER)) == 2)
                    await eventually(lambda: not app.turns.is_busy(KEY))
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 20)
                assert (await get(f"{base}/readyz"))[0] == 503  # stopped: not connected

                after = await scrape(base)
    model = app.registry.default_model
    turns = "switchboard_turns_total"
    assert value(after, turns, channel="telegram", outcome="answered") == 1
    assert value(after, turns, channel="telegram", outcome="failed") == 1
    assert value(after, "switchboard_turn_seconds_count", channel="telegram") == 2
    assert value(after, "switchboard_first_text_seconds_count", channel="telegram") == 1
    assert value(after, "switchboard_tokens_total", model=model, kind="input") == 120
    assert value(after, "switchboard_tokens_total", model=model, kind="cached_input") == 20
    assert value(after, "switchboard_tokens_total", model=model, kind="output") == 7
    assert value(after, "switchboard_cost_usd_total", model=model) > 0
    assert value(after, "switchboard_upstream_errors_total", kind="upstream_unavailable") == 1
    assert value(after, "switchboard_platform_throttled_total", platform="telegram") == 1
    assert value(after, "switchboard_turns_in_flight") == 0
    assert value(after, "switchboard_open_jobs") == 0
    assert value(after, "process_resident_memory_bytes") > 0


async def test_slack_429s_are_counted_whether_or_not_they_name_a_channel() -> None:
    metrics = PrometheusMetrics()
    flood = FloodControl(
        FloodLimits(chat_per_second=math.inf, overall_per_second=1000),
        on_throttled=lambda: metrics.platform_throttled("slack"),
    )
    with FakeSlack(per_channel_rate=math.inf) as slack:
        client = AsyncWebClient(
            token=slack.bot_token, base_url=slack.api_url, retry_handlers=retry_handlers(flood)
        )
        slack.fail_next("chat.postMessage", retry_after=0)
        slack.fail_next("auth.test", retry_after=0)
        await client.chat_postMessage(channel="C0GENERAL", text="hello")
        await client.auth_test()
    counted = metrics.registry.get_sample_value(
        "switchboard_platform_throttled_total", {"platform": "slack"}
    )
    assert counted == 2


async def test_a_turn_is_in_flight_until_it_ends_and_a_cancelled_one_counts_as_such(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="token " * 200, chunks=200, chunk_delay=0.02))
    console = ConversationKey("console", place="ada")
    async with make_app(**SERVED) as app:
        registry = app.metrics.registry
        sink = RecordingSink()
        turn = asyncio.create_task(
            app.assistant.answer_message(
                IncomingMessage(console, UserRef("console", "ada"), "a long story"), sink
            )
        )
        await sink.first_text.wait()
        assert registry.get_sample_value("switchboard_turns_in_flight") == 1
        assert app.turns.cancel(console)
        await turn
    assert registry.get_sample_value("switchboard_turns_in_flight") == 0
    assert (
        registry.get_sample_value(
            "switchboard_turns_total", {"channel": "console", "outcome": "cancelled"}
        )
        == 1
    )
