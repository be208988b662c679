"""Creating the async engine (SQLite tuned for concurrent use, or PostgreSQL) and applying
Alembic migrations.

Alembic is imported only when a migration runs: a start-up on a schema that is already at
the shipped head (the usual case) asks ``alembic_version`` in one query instead (``migrate``),
sparing every process Alembic's machinery (about 6 MB resident and a tenth of a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_, greenlet_spawn
from sqlalchemy.util.queue import Empty, Full, QueueCommon

from core.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 32_768
PING_AFTER_IDLE_SECONDS = 2.0
"""A pooled PostgreSQL connection unused for this long is pinged before it is used again."""
MIGRATION_LOCK = 0x5377_6974_6368_6264
"""The PostgreSQL advisory lock key that migrations hold while they run ("Switchbd")."""


def database_url(url: str) -> URL:
    """``url`` parsed and checked: a supported backend with an async driver and, for a SQLite
    file, an existing folder (else SQLite says only "unable to open database file")."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "aiosqlite":
            raise ConfigError("DATABASE_URL: use the async driver, sqlite+aiosqlite:///…")
        folder = Path(parsed.database).expanduser().parent if parsed.database else None
        if folder is not None and parsed.database != ":memory:" and not folder.is_dir():
            raise ConfigError(
                f"the folder of the SQLite database does not exist ({folder}) — "
                "create it, or point DATABASE_URL elsewhere"
            )
    elif backend == "postgresql":
        if driver not in ("asyncpg", "psycopg"):
            raise ConfigError("DATABASE_URL: use an async driver, postgresql+asyncpg://…")
    else:
        raise ConfigError("DATABASE_URL: only SQLite and PostgreSQL are supported")
    return parsed


def broken_query(error: BaseException) -> bool:
    """Whether a database error is SQLite's generic ``SQLITE_ERROR`` (no such table, bad
    SQL): a bug or a missing migration, not an outage to wait out — SQLite raises both as
    ``OperationalError``, with a busy or locked database, a disk I/O error, and so on."""
    cause = getattr(error, "orig", None) or error
    return getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_ERROR


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        # One connection: SQLite has a single writer anyway, and connections taking turns
        # through its busy handler (which sleeps) is far slower than queueing in the pool.
        # Every checkout ends its own transaction (closing a Connection rolls back any left
        # open), so the pool's extra rollback on return would only cost a thread hand-off.
        options = {"pool_size": 1, "max_overflow": 0, "pool_reset_on_return": None, **options}
        options.setdefault("poolclass", FirstComeQueuePool)
        engine = create_async_engine(parsed, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("poolclass", FirstComeQueuePool)
    engine = create_async_engine(parsed, **options)
    _ping_when_idle(engine.sync_engine, PING_AFTER_IDLE_SECONDS)
    return engine


_Item = TypeVar("_Item")


class _FirstComeQueue(QueueCommon[_Item]):
    """The pool's idle connections, handed out first come, first served.

    SQLAlchemy's asyncio queue lets any caller take a connection that is free at that
    moment, even while others wait: a returned connection wakes the longest waiter, but a
    task that asks again before the waiter runs (a turn's next statement, right after its
    last) takes it, and the waiter goes to the back of the line. With SQLite's single
    connection a turn then waits behind every turn that arrived after it. Here a returned
    connection goes straight to the longest waiter, and a caller takes a free one only
    when nobody waits."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[_Item] = deque()
        self._waiters: deque[asyncio.Future[_Item]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: _Item) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: _Item, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # the pool returns connections without waiting

    def get_nowait(self) -> _Item:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _Item:
        if self._items or not block:
            return self.get_nowait()
        return await_(self._wait(within=timeout))

    async def _wait(self, *, within: float | None) -> _Item:
        waiter: asyncio.Future[_Item] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(within):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over just as the wait ended
            if isinstance(exc, TimeoutError):
                raise Empty() from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class FirstComeQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, with connections handed out in the order they were asked
    for (``_FirstComeQueue``)."""

    _queue_class: type[QueueCommon[ConnectionPoolEntry]] = _FirstComeQueue
    _sqla_logger_namespace = "sqlalchemy.pool.impl.FirstComeQueuePool"
    """Its log lines go where SQLAlchemy's own pools' go (quiet below WARNING)."""


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that sat in the pool ``idle``
    seconds or more: one whose server went away (restarted, or a proxy dropped it) is
    replaced before use. A connection taken again at once is not pinged — a ping costs
    three round trips (``BEGIN``, ``;``, ``ROLLBACK``), on every checkout of a turn's five
    or so — and if its server dies in that moment, the statement fails as a disconnect:
    the pool drops every connection older than that, and the store reports it as the
    database being unavailable, as for a server that is down."""
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection did not answer a ping") from exc
        if not alive:
            raise DisconnectionError("the pooled connection did not answer a ping")


async def ping(engine: AsyncEngine) -> None:
    """Run a trivial query; raises what the driver raises when the database cannot answer."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def alembic_config(url: str) -> Config:
    """Alembic configuration for the shipped ``migrations`` package and ``url``."""
    from alembic.config import Config

    database_url(url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def check(url: str) -> None:
    """Raise ``AutogenerateDiffsDetected`` if the models differ from the migrated schema."""
    from alembic import command

    command.check(alembic_config(url))


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; Alembic runs in a worker thread with its own loop."""
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def migrate(engine: AsyncEngine, url: str) -> None:
    """Bring the database of ``engine`` (at ``url``) to the shipped head: nothing but one
    query when it is there already, else Alembic's ``upgrade``."""
    head = shipped_head()
    if head is None or await stamped_revision(engine) != head:
        await upgrade(url)


async def stamped_revision(engine: AsyncEngine) -> str | None:
    """The revision in ``alembic_version``, or None when there is none to read (a new
    database; an unreachable one, whose error ``upgrade`` then raises and explains)."""
    try:
        async with engine.connect() as connection:
            # Asked first rather than letting the query fail on a new database, which
            # PostgreSQL would log as an ERROR.
            if not await connection.run_sync(_has_version_table):
                return None
            rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def _has_version_table(connection: Connection) -> bool:
    return inspect(connection).has_table("alembic_version")


_REVISION = re.compile(r"^revision(?:: str)? = [\"']([^\"']+)[\"']$", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision(?:: str \| None)? = (?:None|[\"']([^\"']+)[\"'])$", re.MULTILINE
)


def shipped_head() -> str | None:
    """The newest revision of the shipped migrations, read from the ``revision`` and
    ``down_revision`` lines of their files; None (so: ask Alembic) for anything but one
    plain line of history."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in resources.files("migrations").joinpath("versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("_"):
            continue
        source = script.read_text(encoding="utf-8")
        revision, parent = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(parent) != 1:
            return None  # a merge, a branch label or a layout this reading does not know
        revisions.add(revision[0])
        if parent[0]:
            parents.add(parent[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


_T = TypeVar("_T")


async def in_sqlite_connection(engine: AsyncEngine, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``work`` on the pooled SQLite connection, in the aiosqlite thread that owns it.

    One hop instead of a round trip per statement, cursor, fetch and commit: with the
    single pooled connection, the time it is held is what limits how many turns a second
    the hot paths (the budget ledger, the store's appends) sustain under load. aiosqlite has
    no public call for this; ``_execute`` queues a function to its thread, as SQLAlchemy's
    own aiosqlite adapter does to set isolation levels. The connection is taken from the
    pool as a raw connection: a ``Connection`` around it (its events and transaction
    bookkeeping, unused here) cost more CPU than the hop itself.
    """
    pooled = await engine.raw_connection()
    try:
        raw: Any = pooled.driver_connection
        result: _T = await raw._execute(work, raw._conn)
        return result
    finally:
        # Returned to the pool as ``AsyncConnection.close`` does (in a greenlet, in case
        # the pool has to close it).
        await greenlet_spawn(pooled.close)


@contextlib.contextmanager
def sqlite_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Commit what the block wrote, or roll it back if the block raised."""
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
