"""Creating the async engine (SQLite tuned for concurrent use, or PostgreSQL) and applying
Alembic migrations."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.get_driver_name() != "aiosqlite":
            raise ConfigError("DATABASE_URL: use the async driver, sqlite+aiosqlite:///…")
        engine = create_async_engine(parsed, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() not in ("asyncpg", "psycopg"):
            raise ConfigError("DATABASE_URL: use an async driver, postgresql+asyncpg://…")
        return create_async_engine(parsed, pool_pre_ping=True, **options)
    raise ConfigError("DATABASE_URL: only SQLite and PostgreSQL are supported")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def alembic_config(url: str) -> Config:
    """Alembic configuration for the shipped ``migrations`` package and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; Alembic runs in a worker thread with its own loop."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
