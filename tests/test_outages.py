"""The database goes away while a real ``switchboard run telegram`` works, against the fake
Bot API and the fake OpenAI: a private PostgreSQL stopped with ``pg_ctl stop -m immediate``
mid-reply or as a message arrives, and a SQLite file locked by another process. Nothing
the user saw, nothing paid for and no message is lost; the ledger stays exact to the
micro-dollar."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.money.budgets import Budget, Payer, Scope
from core.money.periods import Period
from core.money.sql_ledger import budget_ledger
from core.storage.database import SQLITE_BUSY_TIMEOUT_MS, upgrade
from core.storage.file_spool import FileSpool
from tests.conftest import engine_for
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.telegram_server import FakeTelegram
from tests.private_postgres import PrivatePostgres, find_initdb
from tests.processes import process_env, start_bot, until
from tests.test_reservation_leases import database_rows

pytestmark = pytest.mark.slow

USER = 1001
LIMIT = 2_000_000
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France, on the Seine."
COUNTER = (
    "SELECT spent_micros, reserved_micros FROM budget_counters "
    f"WHERE scope = 'user' AND subject = 'telegram:{USER}'"
)


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    if find_initdb() is None:
        pytest.skip("initdb is not installed (PostgreSQL's server binaries)")
    async with PrivatePostgres() as server:
        yield server


def bot_env(
    fake_openai: FakeOpenAI, database_url: str, tmp_path: Path, **more: str
) -> dict[str, str]:
    return process_env(
        fake_openai, database_url, SWITCHBOARD_SPOOL_DIR=str(tmp_path / "spool"), **more
    )


async def with_budget(database_url: str) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as engine:
        await budget_ledger(engine).set_budget(Budget(Scope.DEFAULT, "", Period.DAILY, LIMIT))


async def left_micros(database_url: str) -> int:
    async with engine_for(database_url) as engine:
        [status] = await budget_ledger(engine).status(
            Payer(f"telegram:{USER}", f"telegram::{USER}:"), datetime.now(UTC), ZoneInfo("UTC")
        )
    return status.left_micros


def shown(telegram: FakeTelegram) -> list[str]:
    return [m.text or "" for m in telegram.chat(USER)]


async def stopped(bot: asyncio.subprocess.Process) -> str:
    bot.send_signal(signal.SIGTERM)
    _, errors = await asyncio.wait_for(bot.communicate(), 30)
    print(errors.decode(errors="replace"))  # shown if the test fails
    return errors.decode(errors="replace")


async def assert_answer_stored_once(database_url: str) -> int:
    """The reply, its usage row and the ledger agree; returns what the turn cost."""
    replies = await database_rows(
        database_url, "SELECT text FROM messages WHERE role = 'assistant' ORDER BY id"
    )
    assert replies == [(ANSWER,)]
    usage = await database_rows(database_url, "SELECT kind, cost_micros FROM usage")
    assert len(usage) == 1 and usage[0][0] == "chat"
    cost = int(str(usage[0][1]))
    assert cost > 0
    assert await database_rows(database_url, COUNTER) == [(cost, 0)]
    assert await database_rows(database_url, "SELECT * FROM budget_holds") == []
    assert await left_micros(database_url) == LIMIT - cost
    turns = await database_rows(
        database_url, "SELECT delivered_at IS NOT NULL, failed_at IS NULL FROM turns"
    )
    assert turns == [(True, True)]
    return cost


async def test_a_reply_finished_while_postgresql_is_stopped_is_written_when_it_is_back(
    private_postgres: PrivatePostgres, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = private_postgres.url
    await with_budget(url)
    env = bot_env(fake_openai, url, tmp_path, SWITCHBOARD_STORE_RETRY_SECONDS="1")
    fake_openai.enqueue(Scripted(text=ANSWER, chunks=8, chunk_delay=0.4))
    with FakeTelegram() as telegram:
        bot = await start_bot(env, tmp_path, telegram)
        try:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, QUESTION)
            await until(lambda: any(text.strip() for text in shown(telegram)))  # streaming
            await private_postgres.stop("immediate")  # the database dies mid-reply
            await until(lambda: ANSWER in shown(telegram))  # the user sees the whole answer
            spool = FileSpool(tmp_path / "spool")

            async def spooled() -> bool:
                return len(await spool.pending()) == 3

            await until(spooled)
            writes = [write for _, write in await spool.pending()]
            [reply] = [w for w in writes if w.message is not None]
            [settle] = [w for w in writes if w.settles is not None]
            assert reply.message is not None and reply.message.text == ANSWER
            assert [u.cost_micros for u in reply.usage] == [settle.cost]
            assert [w.closes_turn for w in writes if w.closes_turn] == [1]
            await private_postgres.start()

            async def written() -> bool:
                return not await spool.pending()

            await until(written)  # the scheduler's recovery round replays the spool
            cost = await assert_answer_stored_once(url)
            assert settle.cost == cost
            # The next turn's context holds the answer the database did not see at first.
            fake_openai.enqueue(Scripted(text="It is on the Seine."))
            telegram.private_message(USER, "Which river?")
            await until(lambda: "It is on the Seine." in shown(telegram))
        finally:
            errors = await stopped(bot)
    assert bot.returncode == 0, errors
    last = fake_openai.model_requests()[-1]
    assert ANSWER in str(last.body) and QUESTION in str(last.body)
    assert shown(telegram).count(ANSWER) == 1
    assert not any("Traceback" in text or "went wrong" in text for text in shown(telegram))


async def test_a_message_sent_while_postgresql_is_down_is_answered_once_it_is_back(
    private_postgres: PrivatePostgres, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = private_postgres.url
    await with_budget(url)
    env = bot_env(fake_openai, url, tmp_path, SWITCHBOARD_STORE_RETRY_SECONDS="20")
    fake_openai.enqueue(Scripted(text=ANSWER))
    with FakeTelegram() as telegram:
        bot = await start_bot(env, tmp_path, telegram)
        try:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            await private_postgres.stop("immediate")
            telegram.private_message(USER, QUESTION)
            await asyncio.sleep(3)
            assert not fake_openai.model_requests()  # waiting for the database
            await private_postgres.start()
            await until(lambda: ANSWER in shown(telegram))
            await assert_answer_stored_once(url)
            questions = await database_rows(url, "SELECT text FROM messages WHERE role = 'user'")
            assert questions == [(QUESTION,)]
        finally:
            errors = await stopped(bot)
    assert bot.returncode == 0, errors
    assert shown(telegram) == [ANSWER]


async def test_a_message_sent_while_postgresql_stays_down_is_refused_clearly(
    private_postgres: PrivatePostgres, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = private_postgres.url
    await with_budget(url)
    env = bot_env(fake_openai, url, tmp_path, SWITCHBOARD_STORE_RETRY_SECONDS="1")
    with FakeTelegram() as telegram:
        bot = await start_bot(env, tmp_path, telegram)
        try:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            await private_postgres.stop("immediate")
            telegram.private_message(USER, QUESTION)
            await until(lambda: bool(shown(telegram)))
            told = shown(telegram)
            await private_postgres.start()
            fake_openai.enqueue(Scripted(text=ANSWER))
            telegram.private_message(USER, QUESTION)  # sent again, as asked
            await until(lambda: ANSWER in shown(telegram))
            await assert_answer_stored_once(url)
        finally:
            errors = await stopped(bot)
    assert bot.returncode == 0, errors
    assert told == [
        "⚠️ I can't reach my database right now, so I couldn't take that message. "
        "Please send it again in a minute."
    ]
    # The log names the cause in one line, with no traceback (the outage is not a bug).
    refused = [line for line in errors.splitlines() if "could not record a telegram" in line]
    assert len(refused) == 1, errors
    assert "could not record a telegram message: " in refused[0] and "ERROR" in refused[0]
    assert "Traceback" not in errors, errors


async def test_stopping_the_server_never_signals_a_pid_read_from_a_stale_pid_file(
    private_postgres: PrivatePostgres,
) -> None:
    """A server that died leaves its ``postmaster.pid``, and the system may give that pid to
    another process: stopping the server then signals nobody (that process lives on) and
    the stale file is removed; the server starts again."""
    await private_postgres.stop("immediate")
    assert not private_postgres.pid_file.exists()
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        data = private_postgres.pid_file.parent
        private_postgres.pid_file.write_text(f"{stranger.pid}\n{data}\n")
        await private_postgres.stop()
        await asyncio.sleep(0.2)
        assert stranger.returncode is None  # not signalled
        assert not private_postgres.pid_file.exists()
        await private_postgres.start()
        assert await database_rows(private_postgres.url, "SELECT 1") == [(1,)]
    finally:
        stranger.kill()
        await stranger.wait()


HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


async def test_a_reply_finished_while_sqlite_is_locked_by_another_process_is_kept(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    database = tmp_path / "bot.db"
    url = f"sqlite+aiosqlite:///{database}"
    await with_budget(url)
    busy = SQLITE_BUSY_TIMEOUT_MS / 1000
    env = bot_env(fake_openai, url, tmp_path, SWITCHBOARD_STORE_RETRY_SECONDS="1")
    fake_openai.enqueue(Scripted(text=ANSWER, chunks=8, chunk_delay=0.4))
    with FakeTelegram() as telegram:
        bot = await start_bot(env, tmp_path, telegram)
        locker: asyncio.subprocess.Process | None = None
        try:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, QUESTION)
            await until(lambda: any(text.strip() for text in shown(telegram)))
            # Another process holds the database for longer than the busy timeout.
            locker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                HOLD_LOCK,
                str(database),
                str(busy + 4),
                stdout=asyncio.subprocess.PIPE,
            )
            assert locker.stdout is not None
            assert await locker.stdout.readline() == b"locked\n"
            await until(lambda: ANSWER in shown(telegram), within=busy + 30)
            assert await asyncio.wait_for(locker.wait(), 60) == 0

            async def written() -> bool:
                return not await FileSpool(tmp_path / "spool").pending() and bool(
                    await database_rows(url, "SELECT 1 FROM usage")
                )

            await until(written)
            await until(lambda: open_turns(database) == 0)  # closed, directly or from the spool
            await assert_answer_stored_once(url)
        finally:
            if locker is not None and locker.returncode is None:
                locker.kill()
                await locker.wait()
            errors = await stopped(bot)
    assert bot.returncode == 0, errors
    assert "settle is spooled" in errors  # the lock outlasted the busy timeout
    assert shown(telegram).count(ANSWER) == 1
    assert not any("Traceback" in text or "went wrong" in text for text in shown(telegram))


def open_turns(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM turns WHERE delivered_at IS NULL AND failed_at IS NULL"
        ).fetchone()
    return int(row[0])
