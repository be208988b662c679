"""No unrecorded spending: PostgreSQL goes away (the connection really cut, through a TCP
proxy in front of the test server) just as a reply finishes; the user still gets the answer,
the reply and its usage row wait in the local spool, and reach the database — once — when
it is back. The file spool itself round-trips every field."""

from __future__ import annotations

import asyncio
import secrets
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bots.bootstrap import App, bootstrap
from core.conversation.events import ReplyFinished
from core.conversation.messages import ConversationKey, IncomingMessage, NewMessage, Role, UserRef
from core.conversation.pipeline import Delivery
from core.conversation.spool import DurableWrites, SpooledWrite
from core.conversation.store import UsageRecord
from core.media.ports import PreparedImage
from core.storage.database import SQLITE_BUSY_TIMEOUT_MS
from core.storage.file_spool import FileSpool
from tests.conftest import SettingsFactory, _admin_execute, _postgres_admin_url, engine_for
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.sinks import RecordingSink
from tests.fakes.tcp_proxy import TcpProxy

KEY = ConversationKey("console", place="ada")
ADA = UserRef("console", "ada", username="ada")


async def test_the_file_spool_keeps_every_field(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path / "spool")
    picture = PreparedImage(b"\x89PNG...", "image/png", 2, 3)
    message = NewMessage(
        Role.ASSISTANT, "the answer", 7, meta={"model": "m"}, images=(picture,), turn_id=5
    )
    usage = UsageRecord(1, 2, "chat", "m", 10, 2, 7, cost_micros=42, prices={"input": 1})
    writes = [
        SpooledWrite(2, message, (usage,)),
        SpooledWrite(None, None, (usage,)),
        SpooledWrite(None, None, closes_turn=5, failure="over budget"),
    ]
    for write in writes:
        await spool.keep(write)
    pending = await spool.pending()
    assert [write for _, write in pending] == writes
    await spool.remove(pending[0][0])
    assert len(await spool.pending()) == 2
    assert not list((tmp_path / "spool").glob(".*.tmp"))  # written whole, then renamed


@pytest.mark.slow
async def test_a_reply_finished_while_postgresql_is_away_is_stored_when_it_returns(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (CI sets it)")
    name = f"sb_spool_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    fake_openai.enqueue(Scripted(text="Paris is the capital.", chunks=6, chunk_delay=0.3))
    sink = RecordingSink()
    settings = make_settings(
        DATABASE_URL=through_proxy,
        SWITCHBOARD_SPOOL_DIR=str(tmp_path / "spool"),
        SWITCHBOARD_STORE_RETRY_SECONDS=1,
    )
    try:
        async with bootstrap(settings) as app:
            turn = asyncio.create_task(
                app.pipeline.handle(
                    Delivery(IncomingMessage(KEY, ADA, "capital of France?"), lambda _: sink)
                )
            )
            await sink.first_text.wait()
            await proxy.cut()  # the database goes away mid-reply
            await asyncio.wait_for(turn, 30)
            spooled = list((tmp_path / "spool").glob("*.json"))
            await proxy.restore()
            taken = await app.recovery.run_once()  # writes the spool first
            taken_again = await app.recovery.run_once()
        database = url.render_as_string(hide_password=False)
        async with engine_for(database) as engine, engine.connect() as connection:
            replies = (
                await connection.execute(
                    text("SELECT text, turn_id FROM messages WHERE role = 'assistant'")
                )
            ).all()
            usage = (await connection.execute(text("SELECT cost_micros FROM usage"))).all()
            turns = (
                await connection.execute(text("SELECT delivered_at IS NOT NULL FROM turns"))
            ).all()
    finally:
        await proxy.cut()
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert sink.final == ReplyFinished("Paris is the capital.")  # the user saw the answer
    assert len(spooled) == 2  # the reply with its usage, and the turn's end
    assert taken == taken_again == 0  # the turn's end was replayed: nothing to take over
    assert [row.text for row in replies] == ["Paris is the capital."]  # stored once
    assert len(usage) == 1 and usage[0].cost_micros > 0
    assert turns == [(True,)]  # delivered: it is not answered again
    assert not list((tmp_path / "spool").glob("*.json"))


HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


class Outage:
    """Takes the database away from a first app: on PostgreSQL its connection is cut (a
    TCP proxy in front of the server); on SQLite another process holds the file locked for
    longer than the busy timeout."""

    def __init__(self, url: str) -> None:
        self._parsed = make_url(url)
        self._proxy: TcpProxy | None = None
        self._locker: asyncio.subprocess.Process | None = None
        self.url = url
        if self._parsed.get_backend_name() == "postgresql":
            self._proxy = TcpProxy(self._parsed.host or "127.0.0.1", self._parsed.port or 5432)

    async def __aenter__(self) -> Outage:
        if self._proxy is not None:
            await self._proxy.restore()
            self.url = self._parsed.set(host="127.0.0.1", port=self._proxy.port).render_as_string(
                hide_password=False
            )
        return self

    async def begin(self) -> None:
        if self._proxy is not None:
            await self._proxy.cut()
            return
        self._locker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLD_LOCK,
            str(self._parsed.database),
            str(SQLITE_BUSY_TIMEOUT_MS / 1000 + 3),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._locker.stdout is not None
        assert await self._locker.stdout.readline() == b"locked\n"

    async def __aexit__(self, *_: object) -> None:
        if self._proxy is not None:
            await self._proxy.cut()
        if self._locker is not None:
            assert await asyncio.wait_for(self._locker.wait(), 60) == 0


def durable_writes(app: App, folder: Path) -> DurableWrites:
    """The end-of-turn writes as the app builds them, on its database and ``folder``."""
    storage = app.storage
    return DurableWrites(
        storage.store, storage.journal, FileSpool(folder), retry_seconds=1, ledger=storage.budgets
    )


@pytest.mark.slow
async def test_usage_of_no_message_replayed_after_a_crash_is_stored_once(
    make_settings: SettingsFactory, database_url: str, tmp_path: Path
) -> None:
    """A spoken reply's usage row is spooled while the database is away; once it is back a
    new app writes the spool, then "crashes" before forgetting the entry (the file is still
    there), so the next app replays it again: one row, the ledger to the micro-dollar."""
    folder = tmp_path / "spool"
    spoken = UsageRecord(
        None, None, "speech", "tts-1", units=1234, unit="characters", cost_micros=18_510
    )
    outage = Outage(database_url)
    # The app's URL is known once the outage is set up (its proxy's port).
    async with outage, bootstrap(make_settings(DATABASE_URL=outage.url)) as app:
        await outage.begin()
        await durable_writes(app, folder).record_usage([spoken])
    entries = list(folder.glob("*.json"))
    assert len(entries) == 1  # spooled, with its key
    kept = entries[0].read_bytes()
    settings = make_settings(DATABASE_URL=database_url)
    async with bootstrap(settings) as app:
        first = await durable_writes(app, folder).replay()
    assert not entries[0].exists()
    entries[0].write_bytes(kept)  # the crash: written, but the entry not yet forgotten
    async with bootstrap(settings) as app:
        second = await durable_writes(app, folder).replay()
        spent = await app.store.spending(datetime.now(UTC) - timedelta(days=1))
    async with engine_for(database_url) as engine, engine.connect() as connection:
        rows = (await connection.execute(text("SELECT cost_micros, write_key FROM usage"))).all()
    assert (first, second) == (1, 1)  # the second replay wrote it again: no new row
    assert len(rows) == 1 and rows[0].cost_micros == 18_510 and rows[0].write_key
    assert spent[0].cost_micros == 18_510 and spent[0].calls == 1
    assert not list(folder.glob("*.json"))


async def test_a_reply_s_usage_written_again_is_charged_once(
    make_settings: SettingsFactory, database_url: str
) -> None:
    """A reply with its usage written a second time (a replay whose turn check cannot
    apply): the usage row, keyed, is stored once, on every store's path."""
    async with bootstrap(make_settings(DATABASE_URL=database_url)) as app:
        conversation = await app.store.active_conversation(KEY)
        charged = replace(
            UsageRecord(None, conversation.id, "chat", "gpt-4o-mini", 10, 0, 5, cost_micros=7),
            write_key="k" * 32,
        )
        for _ in range(2):
            await app.store.add_message(
                conversation.id, NewMessage(Role.ASSISTANT, "hi", 1), [charged]
            )
        await app.store.record_usage([charged])
        usage = await app.store.usage(conversation.id)
    assert [record.cost_micros for record in usage] == [7]
