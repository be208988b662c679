"""The aiohttp transport under python-telegram-bot: real ``Bot`` calls against the fake Bot
API (forms, uploads, downloads, errors), and timeouts and network failures from loopback
servers that misbehave."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from telegram import Bot, InputFile
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from bots.telegram.transport import AiohttpRequest, TolerantUpdatesRequest
from tests.fakes.telegram_server import FakeTelegram
from tests.make_images import png


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@asynccontextmanager
async def bot_on(url: str, token: str, request: AiohttpRequest) -> AsyncIterator[Bot]:
    bot = Bot(
        token,
        base_url=f"{url}/bot",
        base_file_url=f"{url}/file/bot",
        request=request,
        get_updates_request=TolerantUpdatesRequest(),
    )
    async with bot:
        yield bot


@asynccontextmanager
async def unchecked_bot(url: str, request: AiohttpRequest) -> AsyncIterator[Bot]:
    """A bot whose transport is started without the ``getMe`` check of ``Bot.initialize``
    (the servers below cannot answer it)."""
    bot = Bot("123:abc", base_url=f"{url}/bot", request=request)
    await request.initialize()
    try:
        yield bot
    finally:
        await request.shutdown()


@asynccontextmanager
async def loopback_server() -> AsyncIterator[str]:
    """A server on loopback whose every request waits until the test ends."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_calls_send_forms_uploads_and_read_files(telegram: FakeTelegram) -> None:
    async with bot_on(telegram.url, telegram.token, AiohttpRequest()) as bot:
        assert (await bot.get_me()).username == "switchboard_test_bot"
        sent = await bot.send_message(42, "<b>bold</b> &amp; plain", parse_mode="HTML")
        assert sent.text == "bold & plain"
        photo = png(64, 48)
        await bot.send_photo(42, InputFile(photo, filename="p.png"), caption="a picture")
        shown = telegram.chat(42)
        assert [m.kind for m in shown] == ["text", "photo"]
        assert shown[1].text == "a picture"
        file_id = telegram.add_file(b"\x00\x01binary\xff" * 1000)
        file = await bot.get_file(file_id)
        assert bytes(await file.download_as_bytearray()) == b"\x00\x01binary\xff" * 1000


async def test_api_errors_become_python_telegram_bot_errors(telegram: FakeTelegram) -> None:
    telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    async with bot_on(telegram.url, telegram.token, AiohttpRequest()) as bot:
        with pytest.raises(RetryAfter) as limited:
            await bot.send_message(42, "hello")
        assert limited.value.retry_after.total_seconds() == 7
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(42, "x" * 4097)
        await bot.send_message(42, "still fine")
    assert [m.text for m in telegram.chat(42)] == ["still fine"]


async def test_a_server_that_does_not_answer_times_out() -> None:
    async with (
        loopback_server() as url,
        unchecked_bot(url, AiohttpRequest(read_timeout=0.2)) as bot,
    ):
        with pytest.raises(TimedOut):
            await bot.send_message(1, "hello")
        with pytest.raises(TimedOut):
            await bot.send_message(1, "hello", read_timeout=0.1)


async def test_a_refused_connection_is_a_network_error() -> None:
    async with unchecked_bot(f"http://127.0.0.1:{closed_port()}", AiohttpRequest()) as bot:
        with pytest.raises(NetworkError, match=r"aiohttp\.ClientConnectorError") as failed:
            await bot.send_message(1, "hello")
    assert not isinstance(failed.value, TimedOut)
    assert "123:abc" not in str(failed.value)


async def test_an_uninitialised_or_shut_down_transport_refuses_to_send() -> None:
    request = AiohttpRequest()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/botx/getMe", "POST")
    await request.initialize()
    await request.shutdown()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/botx/getMe", "POST")
    await request.initialize()  # it can be started again, as python-telegram-bot may do
    await request.shutdown()


async def test_the_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY applies, as it did with python-telegram-bot's httpx transport."""
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{runner.addresses[0][1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        async with unchecked_bot("http://api.telegram.invalid", AiohttpRequest()) as bot:
            assert await bot.delete_webhook() is True
    finally:
        await runner.cleanup()
    assert seen == ["http://api.telegram.invalid/bot123:abc/deleteWebhook"]


async def test_no_proxy_exempts_a_host(
    monkeypatch: pytest.MonkeyPatch, telegram: FakeTelegram
) -> None:
    """NO_PROXY keeps a host's requests direct, as with python-telegram-bot's httpx
    transport: the Bot API answers, the proxy sees nothing."""
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{runner.addresses[0][1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        async with bot_on(telegram.url, telegram.token, AiohttpRequest()) as bot:
            sent = await bot.send_message(42, "direct")
    finally:
        await runner.cleanup()
    assert seen == []
    assert [m.text for m in telegram.chat(42)] == ["direct"]
    assert sent.text == "direct"
