"""A process loads only what it serves (issue 17, item 3): ``run telegram`` never imports
Slack's libraries, ``run slack`` never imports python-telegram-bot, and neither imports
Pillow, pydub, the realtime client or Alembic (on a migrated database)
until a picture, a voice note, a realtime session or a migration asks for them.

Each test runs the real ``switchboard run …`` as a subprocess against the loopback fakes,
answers a message through it, stops it, and reads the modules it had loaded, written at
exit. A module-level import of any of these libraries anywhere on the way fails it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from core.storage.database import alembic_config, migrate, shipped_head, stamped_revision
from tests.conftest import API_KEY, engine_for
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
# ``switchboard`` itself, with the names of the modules it had loaded written at exit.
RUN = """
import atexit, json, sys
from bots.cli import main
atexit.register(lambda: json.dump(sorted(sys.modules), open(sys.argv[1], "w")))
sys.exit(main(sys.argv[2:]))
"""
ONLY_WHEN_USED = (
    "PIL",  # pictures
    "pillow_heif",
    "pydub",  # voice (imageio-ffmpeg may load at start-up: it finds ffmpeg when PATH has none)
    "websockets",  # realtime sessions
    "openai.resources.realtime",
    "openai.types.realtime",
    "alembic",  # migrations: the database below is already migrated
    "mako",
)
SLACK = ("slack_bolt", "slack_sdk", "bots.slack.channel")
TELEGRAM = ("telegram", "tornado", "bots.telegram.channel")


@pytest.fixture
def env(tmp_path: Path, fake_openai: FakeOpenAI) -> dict[str, str]:
    """A migrated database and the fake OpenAI; migrated by its own process, so that the
    process under test starts as it usually does, on a database already at the head."""
    values = {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "SWITCHBOARD_USER_MESSAGES_PER_MINUTE": "0",
    }
    subprocess.run(
        [SWITCHBOARD, "db", "upgrade"], env=values, cwd=tmp_path, check=True, capture_output=True
    )
    return values


async def loaded_while(
    env: dict[str, str], tmp_path: Path, channel: str, work: Callable[[], object]
) -> set[str]:
    """The modules ``switchboard run <channel>`` had loaded after ``work`` (a coroutine
    function: it waits for the process to serve, and talks to it) and a clean stop."""
    modules = tmp_path / "modules.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN,
        str(modules),
        "run",
        channel,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        result = work()
        assert asyncio.iscoroutine(result)
        await asyncio.wait_for(result, 60)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, errors.decode()
    return set(json.loads(modules.read_text()))


def imported(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that are in ``modules``, as packages or as their submodules."""
    return [n for n in names if any(m == n or m.startswith(f"{n}.") for m in modules)]


async def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_run_telegram_loads_no_slack_and_no_media_library(
    env: dict[str, str], tmp_path: Path
) -> None:
    with FakeTelegram() as telegram:
        env |= {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
            "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
        }

        async def talk() -> None:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(1001, "hello")
            await until(lambda: any(m.text == "Echo: hello" for m in telegram.chat(1001)))

        modules = await loaded_while(env, tmp_path, "telegram", talk)

    assert "bots.telegram.channel" in modules and "openai" in modules  # what it serves
    assert imported(modules, SLACK) == []
    assert imported(modules, ONLY_WHEN_USED) == []
    assert imported(modules, ("aiohttp.web",)) == []  # polling: no webhook, no ops port


@pytest.mark.slow
async def test_run_slack_loads_no_telegram_and_no_media_library(
    env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with FakeSlack() as slack:
        env |= {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
            "SLACK_API_URL": slack.api_url,
            "SLACK_PORT": str(port),
        }
        user = "U0ADA"
        dm = slack.dm_channel(user)

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        def answered() -> bool:
            return any(m.is_bot and "Echo: hello" in m.text for m in slack.messages(dm))

        async def talk() -> None:
            await until(listening)
            url = f"http://127.0.0.1:{port}/slack/events"
            status, _, _ = await slack.deliver_event(url, slack.dm(user, "hello"))
            assert status == 200
            await until(answered)

        modules = await loaded_while(env, tmp_path, "slack", talk)

    assert "bots.slack.channel" in modules and "openai" in modules
    assert imported(modules, TELEGRAM) == []
    assert imported(modules, ONLY_WHEN_USED) == []


def test_the_head_start_up_reads_from_the_migration_files_is_alembics() -> None:
    """Start-up skips Alembic when ``alembic_version`` holds this revision: it must be the
    head Alembic itself would upgrade to."""
    alembic = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert shipped_head() == alembic.get_current_head() is not None


async def test_start_up_migrates_a_new_database_and_only_reads_a_current_ones_revision(
    database_url: str,
) -> None:
    async with engine_for(database_url) as engine:
        assert await stamped_revision(engine) is None  # a new database: no table yet

        await migrate(engine, database_url)
        assert await stamped_revision(engine) == shipped_head()

        await migrate(engine, database_url)  # at the head: the revision is read, nothing runs
        assert await stamped_revision(engine) == shipped_head()
