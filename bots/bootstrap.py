"""The composition root: builds settings-driven components once and closes them in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine

from core.budgets import BudgetLedger
from core.builtin_tools import builtin_tools
from core.clock import Clock, SystemClock
from core.database import create_engine, upgrade
from core.engine import Engine, EngineOptions
from core.errors import ConfigError
from core.llm import LLMGateway
from core.openai_llm import OpenAIGateway, RetryPolicy
from core.prices import PriceTable, load_prices
from core.registry import Registry, load_registry
from core.settings import Settings
from core.sql_budgets import SqlBudgetLedger
from core.sql_store import SqlConversationStore
from core.tokens import TokenCounters
from core.tools import ToolRegistry, load_tool_modules


@dataclass(frozen=True)
class App:
    """Everything a channel needs, built from one ``Settings``."""

    settings: Settings
    registry: Registry
    engine: Engine
    database: AsyncEngine
    budgets: BudgetLedger
    prices: PriceTable


@asynccontextmanager
async def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    wrap_gateway: Callable[[LLMGateway], LLMGateway] | None = None,
) -> AsyncIterator[App]:
    """Build the application for ``settings``; everything is closed on exit.

    ``wrap_gateway`` decorates the model gateway (tracing, timing in the benchmarks).
    """
    settings.require("OPENAI_API_KEY")
    registry = load_registry(settings.models_file, settings.modes_file)
    prices = load_prices(settings.prices_file)
    clock = clock or SystemClock()
    tools = ToolRegistry(
        [*builtin_tools(clock), *load_tool_modules(settings.tool_modules)],
        timeout=settings.tool_timeout_seconds,
    )
    for mode in registry.modes.values():
        missing = sorted(set(mode.tools) - set(tools.names()))
        if missing:
            raise ConfigError(f"mode {mode.id!r} names unknown tools: {', '.join(missing)}")
    database = create_engine(settings.database_url)
    assert settings.openai_api_key is not None
    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,  # the gateway retries, so insufficient_quota is never retried
        timeout=settings.openai_timeout_seconds,
    )
    try:
        if settings.auto_migrate:
            await upgrade(settings.database_url)
        counters = TokenCounters()
        await asyncio.to_thread(counters.preload, {m.encoding for m in registry.models.values()})
        gateway: LLMGateway = OpenAIGateway(
            client,
            RetryPolicy(
                attempts=settings.openai_max_retries, backoff=settings.openai_backoff_seconds
            ),
        )
        budgets = SqlBudgetLedger(database)
        engine = Engine(
            store=SqlConversationStore(database),
            gateway=wrap_gateway(gateway) if wrap_gateway else gateway,
            registry=registry,
            tools=tools,
            clock=clock,
            counters=counters,
            options=EngineOptions(
                tool_rounds=settings.tool_rounds,
                max_message_chars=settings.max_message_chars,
                context_tokens=settings.context_tokens,
                timezone=settings.zone,
                messages_per_minute=settings.messages_per_minute,
            ),
            budgets=budgets,
        )
        yield App(settings, registry, engine, database, budgets, prices)
    finally:
        await client.close()
        await database.dispose()


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in ``settings``, for the log redaction filter."""
    values = (
        settings.openai_api_key,
        settings.telegram_bot_token,
        settings.telegram_webhook_secret,
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
    )
    return [value.get_secret_value() for value in values if value is not None]
