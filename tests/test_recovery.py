"""Nothing lost when the process dies: a real ``switchboard run telegram`` is killed with
SIGKILL mid-turn, and the next process answers what it left (against the fake Bot API and
the fake OpenAI, on a file database both processes share)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.processes import kill_mid_turn, process_env, start_bot, until

pytestmark = pytest.mark.slow

USER = 1001


def open_turns(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM turns WHERE delivered_at IS NULL AND failed_at IS NULL"
        ).fetchone()
    return int(row[0])


@pytest.fixture
def env(fake_openai: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return process_env(fake_openai, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")


async def test_a_message_whose_process_was_killed_is_answered_after_the_restart(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    with FakeTelegram() as telegram:
        await kill_mid_turn(env, tmp_path, telegram, fake_openai, USER)
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
