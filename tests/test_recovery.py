"""Nothing lost when the process dies: a real ``switchboard run telegram`` is killed with
SIGKILL mid-turn, and the next process answers what it left (against the fake Bot API and
the fake OpenAI, on a file database both processes share)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.test_console import SWITCHBOARD

pytestmark = pytest.mark.slow

USER = 1001


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


def open_turns(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM turns WHERE delivered_at IS NULL AND failed_at IS NULL"
        ).fetchone()
    return int(row[0])


@pytest.fixture
def env(fake_openai: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SWITCHBOARD_"))},
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "SWITCHBOARD_OPENAI_BACKOFF_SECONDS": "0.01",
    }


async def test_a_message_whose_process_was_killed_is_answered_after_the_restart(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="half an answer that never ends", hang=True))
    with FakeTelegram() as telegram:
        first = await start_bot(env, tmp_path, telegram)
        try:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "What is the capital of France?")
            await until(lambda: bool(fake_openai.model_requests()))
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        assert open_turns(tmp_path / "bot.db") == 1
        fake_openai.enqueue(Scripted(text="The capital of France is Paris."))
        second = await start_bot(env, tmp_path, telegram)
        try:

            def answered() -> bool:
                return any(m.text == "The capital of France is Paris." for m in telegram.chat(USER))

            await until(answered)
            await until(lambda: open_turns(tmp_path / "bot.db") == 0)
        finally:
            second.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(second.communicate(), 30)
    shown = [m.text for m in telegram.chat(USER)]
    assert any("Sorry for the wait" in text for text in shown)
    assert shown.count("The capital of France is Paris.") == 1
    # The question reached the model twice (once per process), and was stored once.
    questions = [r for r in fake_openai.model_requests() if "capital of France" in str(r.body)]
    assert len(questions) == 2
    assert str(questions[-1].body).count("What is the capital of France?") == 1
    assert second.returncode == 0, errors.decode()
