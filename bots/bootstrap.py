"""The composition root: builds settings-driven components once and closes them in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from openai import AsyncOpenAI, DefaultAioHttpClient
from sqlalchemy.ext.asyncio import AsyncEngine

from core.access.policy import AccessPolicy, kept_fresh
from core.clock import Clock, SystemClock
from core.conversation.engine import ENGINE_TOOLS, Engine, EngineOptions
from core.conversation.tokens import TokenCounters
from core.errors import ConfigError
from core.media.ffmpeg_audio import FfmpegAudio, find_ffmpeg
from core.media.openai_media import OpenAIImages, OpenAISpeech, OpenAITranscriber
from core.media.pillow_images import PillowPictures
from core.media.ports import SpeechSynthesizer
from core.media.realtime_speech import RealtimeSpeech
from core.media.steps import MediaKit, MediaOptions, MediaSteps
from core.models.llm import LLMGateway
from core.models.openai_gateway import OpenAIGateway, RetryPolicy
from core.models.openai_realtime import OpenAIRealtime
from core.models.realtime import RealtimeVoice
from core.models.registry import Registry, SpeechModelSpec, load_registry
from core.money.budgets import BudgetLedger
from core.money.prices import PriceTable, load_prices
from core.money.sql_ledger import budget_ledger
from core.settings import Settings
from core.storage.database import create_engine, upgrade
from core.storage.sql_store import conversation_store
from core.tools.builtin import builtin_tools
from core.tools.toolbox import ToolRegistry, load_tool_modules

_Spec = TypeVar("_Spec")


@dataclass(frozen=True)
class App:
    """Everything a channel needs, built from one ``Settings``."""

    settings: Settings
    registry: Registry
    engine: Engine
    database: AsyncEngine
    budgets: BudgetLedger
    prices: PriceTable
    access: AccessPolicy


@asynccontextmanager
async def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    wrap_gateway: Callable[[LLMGateway], LLMGateway] | None = None,
    wrap_media: Callable[[MediaKit], MediaKit] | None = None,
) -> AsyncIterator[App]:
    """Build the application for ``settings``; everything is closed on exit.

    ``wrap_gateway`` and ``wrap_media`` decorate the model gateway and the media ports
    (tracing, timing in the benchmarks).
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
        missing = sorted(set(mode.tools) - set(tools.names()) - ENGINE_TOOLS)
        if missing:
            raise ConfigError(f"mode {mode.id!r} names unknown tools: {', '.join(missing)}")
    media_options = media_options_of(settings, registry, prices)
    ffmpeg = find_ffmpeg(settings.ffmpeg)
    database = create_engine(settings.database_url)
    assert settings.openai_api_key is not None
    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,  # the gateway retries, so insufficient_quota is never retried
        timeout=settings.openai_timeout_seconds,
        http_client=DefaultAioHttpClient(),
    )
    try:
        if settings.auto_migrate:
            await upgrade(settings.database_url)
        counters = TokenCounters()
        await asyncio.to_thread(counters.preload, {m.encoding for m in registry.models.values()})
        retry = RetryPolicy(
            attempts=settings.openai_max_retries, backoff=settings.openai_backoff_seconds
        )
        gateway: LLMGateway = OpenAIGateway(client, retry)
        budgets = budget_ledger(database)
        realtime = OpenAIRealtime(client, timeout_seconds=settings.openai_timeout_seconds)
        kit = MediaKit(
            pictures=PillowPictures(),
            converter=FfmpegAudio(
                ffmpeg, max_upload_bytes=media_options.transcription.max_upload_bytes
            ),
            transcriber=OpenAITranscriber(client, retry),
            speech=speech_synthesizer(media_options.speech, client, retry, realtime),
            images=OpenAIImages(
                client,
                retry,
                ask_for_b64=frozenset(
                    name for name, spec in registry.media.images.items() if spec.ask_for_b64
                ),
            ),
            realtime=realtime,
        )
        media = MediaSteps(
            wrap_media(kit) if wrap_media else kit,
            media_options,
            prices,
            clock=clock,
            timezone=settings.zone,
            budgets=budgets,
        )
        store = conversation_store(database)
        access = AccessPolicy(settings.allowed_users, settings.admins)
        engine = Engine(
            store=store,
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
            media=media,
            access=access,
        )
        async with kept_fresh(access, store):
            yield App(settings, registry, engine, database, budgets, prices, access)
    finally:
        await client.close()
        await database.dispose()


def media_options_of(settings: Settings, registry: Registry, prices: PriceTable) -> MediaOptions:
    """The media models and choices of ``settings``, checked against the registry and the
    price table so that a bad value stops start-up instead of a user's request."""
    media = registry.media
    image = _known(media.image, settings.image_model, "SWITCHBOARD_IMAGE_MODEL")
    transcription = _known(
        media.transcriber, settings.transcription_model, "SWITCHBOARD_TRANSCRIPTION_MODEL"
    )
    speech = _known(media.speaker, settings.speech_model, "SWITCHBOARD_SPEECH_MODEL")
    size = settings.image_size or image.size
    quality = settings.image_quality or image.quality
    voice = settings.speech_voice or speech.voices[0]
    choices = (
        ("SWITCHBOARD_IMAGE_SIZE", size, image.sizes),
        ("SWITCHBOARD_IMAGE_QUALITY", quality, image.qualities),
        ("SWITCHBOARD_SPEECH_VOICE", voice, speech.voices),
    )
    for variable, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{variable}={value!r} is not one of: {', '.join(allowed)}")
    prices.image_cost(image.id, size, quality)
    prices.transcription_cost(transcription.id, 60)
    if not speech.realtime:
        prices.speech_cost(speech.id, 1)  # realtime models carry their prices in the registry
    return MediaOptions(
        image=image,
        image_size=size,
        image_quality=quality,
        transcription=transcription,
        speech=speech,
        voice=voice,
        speed=settings.speech_speed,
        max_picture_bytes=settings.max_file_mb * 1024 * 1024,
    )


def speech_synthesizer(
    speech: SpeechModelSpec, client: AsyncOpenAI, retry: RetryPolicy, realtime: RealtimeVoice
) -> SpeechSynthesizer:
    """The speech port for the configured speech model: a realtime session per chunk when
    its registry entry says ``api = "realtime"``, else the speech endpoint."""
    if speech.realtime:
        return RealtimeSpeech(realtime, max_input_chars=speech.max_input_chars)
    return OpenAISpeech(client, retry, max_input_chars=speech.max_input_chars)


def _known(pick: Callable[[str | None], _Spec], name: str | None, variable: str) -> _Spec:
    try:
        return pick(name)
    except ConfigError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


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


_Result = TypeVar("_Result")


def run_loop(main: Coroutine[Any, Any, _Result]) -> _Result:
    """Run ``main`` on the event loop Switchboard serves on: uvloop where it is installed
    (Linux and macOS; it takes about a tenth off each turn's CPU), asyncio's own elsewhere."""
    try:
        import uvloop
    except ImportError:  # Windows: no uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
