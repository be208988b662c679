"""Benchmark: recovery after ``kill -9`` with turns in flight (issue 14).

A real ``switchboard run telegram`` process answers 100 private chats at once; the fake
OpenAI holds every answer open, so all 100 turns are in flight when the process is killed
with SIGKILL. A new process is started on the same SQLite database, and we measure the
time from its start until every chat shows its complete answer, and how many were lost.

    python -m bench.recovery [--chats 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import API_KEY, table
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


async def start(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "run",
        "telegram",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def until(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def one_run(chats: int) -> list[object]:
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeTelegram() as telegram,
        FakeOpenAI(api_key=API_KEY) as openai,
    ):
        cwd = Path(folder)
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SWITCHBOARD_"))
            },
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{cwd / 'bot.db'}",
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
            "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
            "SWITCHBOARD_USER_MESSAGES_PER_MINUTE": "0",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }
        openai.enqueue(*[Scripted(text="never finished", hang=True)] * chats)
        first = await start(env, cwd)
        await until(lambda: bool(telegram.calls_to("getUpdates")), 30)
        for chat in range(chats):
            telegram.private_message(1000 + chat, f"question {chat}")
        in_flight = await until(lambda: len(openai.model_requests()) >= chats, 60)
        first.send_signal(signal.SIGKILL)
        await first.wait()

        def answered() -> int:
            return sum(
                any(m.text == f"Echo: question {chat}" for m in telegram.chat(1000 + chat))
                for chat in range(chats)
            )

        started = time.monotonic()
        second = await start(env, cwd)
        done = await until(lambda: answered() == chats, 120)
        elapsed = time.monotonic() - started
        second.send_signal(signal.SIGTERM)
        await second.wait()
        return [chats, "yes" if in_flight else "no", f"{elapsed:.1f}", chats - answered(), done]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [await one_run(args.chats) for _ in range(args.runs)]
    headers = ["turns in flight", "all in flight at kill", "s from restart", "lost", "all answered"]
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
