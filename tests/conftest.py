"""Shared fixtures: the fake OpenAI server, databases (SQLite always, PostgreSQL when
``TEST_DATABASE_URL`` is set) and an engine built by the real composition root."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.bootstrap import App, bootstrap
from core.money.budgets import BudgetLedger
from core.money.sql_ledger import SqlBudgetLedger, budget_ledger
from core.settings import Settings, load_settings
from core.storage.database import create_engine, upgrade
from tests.fakes.memory_budgets import InMemoryBudgetLedger
from tests.fakes.openai_server import FakeOpenAI

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _offline_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real credentials or tiktoken downloads can leak into a test."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "SWITCHBOARD_", "TELEGRAM_", "SLACK_")) or name in (
            "DATABASE_URL",
        ):
            monkeypatch.delenv(name)
    # python-telegram-bot's future time-period API (timedeltas), as the CLI opts into.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server on loopback."""
    with FakeOpenAI(api_key=API_KEY) as fake:
        yield fake


def _postgres_admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


async def _admin_execute(statement: str) -> None:
    """Run one statement on the PostgreSQL database named by ``TEST_DATABASE_URL``."""
    admin = make_url(_postgres_admin_url() or "")
    connection = await asyncpg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        password=admin.password,
        database=admin.database,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'switchboard.db'}"
        return
    if _postgres_admin_url() is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (CI sets it)")
    name = f"sb_test_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        admin = make_url(_postgres_admin_url() or "")
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'switchboard.db'}"


@asynccontextmanager
async def engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on ``url`` (one "process" on the database), disposed on exit."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


SettingsFactory = Callable[..., Settings]


# --- budget ledgers: the in-memory fake and the SQL ones, each as two handles ------------


@pytest.fixture
def ledger_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def ledgers(ledger_kind: str, database_url: str) -> AsyncIterator[list[BudgetLedger]]:
    """Two handles on one ledger: for SQL kinds, two engines (like two processes)."""
    if ledger_kind == "memory":
        memory = InMemoryBudgetLedger()
        yield [memory, memory]
        return
    await upgrade(database_url)
    async with AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(engine_for(database_url)) for _ in range(2)]
        if ledger_kind == "sqlite-portable":
            yield [SqlBudgetLedger(engine) for engine in engines]
        else:
            yield [budget_ledger(engine) for engine in engines]


every_ledger = pytest.mark.parametrize(
    ("ledger_kind", "database_url"),
    [
        ("memory", "sqlite"),
        ("sqlite", "sqlite"),
        ("sqlite-portable", "sqlite"),
        ("postgresql", "postgresql"),
    ],
    indirect=True,
    ids=["memory", "sqlite", "sqlite-portable", "postgresql"],
)


@pytest.fixture
def make_settings(fake_openai: FakeOpenAI, sqlite_url: str) -> SettingsFactory:
    """Settings pointing at the fake OpenAI server and a test database; keywords override."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "DATABASE_URL": sqlite_url,
            "SWITCHBOARD_OPENAI_BACKOFF_SECONDS": 0.01,
            "SWITCHBOARD_USER_MESSAGES_PER_MINUTE": 0,  # tests send many; one test sets it
        }
        values.update(overrides)
        return load_settings(None, **values)

    return build


AppFactory = Callable[..., AbstractAsyncContextManager[App]]


@pytest.fixture
def make_app(make_settings: SettingsFactory) -> AppFactory:
    """``async with make_app(**settings) as app``: the real composition root on the fakes."""

    def build(**overrides: object) -> AbstractAsyncContextManager[App]:
        return bootstrap(make_settings(**overrides))

    return build
