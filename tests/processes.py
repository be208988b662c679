"""Run a real ``switchboard`` subprocess against the loopback fakes: the environment it
starts with, a Telegram bot started on it, and waiting for what it does."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.test_console import SWITCHBOARD


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 45.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def process_env(fake_openai: FakeOpenAI, database_url: str, **more: str) -> dict[str, str]:
    """The environment of a process pointed at the fake OpenAI and ``database_url``, with
    none of the OpenAI or Switchboard settings of the shell that runs the tests."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SWITCHBOARD_"))},
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": database_url,
        "SWITCHBOARD_OPENAI_BACKOFF_SECONDS": "0.01",
        **more,
    }


async def start_bot(
    env: dict[str, str], cwd: Path, telegram: FakeTelegram
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "run",
        "telegram",
        env={
            **env,
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
            "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
        },
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def kill_mid_turn(
    env: dict[str, str], cwd: Path, telegram: FakeTelegram, fake_openai: FakeOpenAI, user: int
) -> asyncio.subprocess.Process:
    """Start a bot, send it a private message from ``user`` whose answer hangs, and kill
    the process with SIGKILL once the model was asked; returns the dead process."""
    fake_openai.enqueue(Scripted(text="half an answer that never ends", hang=True))
    process = await start_bot(env, cwd, telegram)
    try:
        await until(lambda: bool(telegram.calls_to("getUpdates")))
        telegram.private_message(user, "What is the capital of France?")
        await until(lambda: bool(fake_openai.model_requests()))
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    return process
