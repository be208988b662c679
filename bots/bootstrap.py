"""The composition root: builds settings-driven components once and closes them in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from openai import AsyncOpenAI, DefaultAioHttpClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.console import ConsoleNames
from bots.slack.names import SlackNames
from bots.telegram.names import TelegramNames
from core.access.names import UserDirectory
from core.access.policy import AccessPolicy, kept_fresh
from core.clock import Clock, SystemClock
from core.conversation.admin_notices import AdminNotices
from core.conversation.admission import Admission, AdmittedGateway
from core.conversation.assistant import Assistant, AssistantOptions
from core.conversation.channel import Outbox
from core.conversation.choices import ConversationChoices
from core.conversation.commands import Commands
from core.conversation.context import ContextBuilder
from core.conversation.journal import TurnJournal
from core.conversation.pipeline import InboundPipeline
from core.conversation.ratelimit import MessageRateLimit
from core.conversation.recovery import TurnRecovery
from core.conversation.spool import DurableWrites
from core.conversation.store import ConversationStore
from core.conversation.tokens import TokenCounters
from core.conversation.turns import TurnRunner
from core.errors import ConfigError
from core.jobs.batch_api import BatchAPI
from core.jobs.batches import BatchJobs, BatchOptions
from core.jobs.commands import JobCommands
from core.jobs.file_commands import FileCommandSet
from core.jobs.finetune_api import FineTuningAPI
from core.jobs.finetune_commands import FineTuneCommands
from core.jobs.finetunes import FineTuneJobs, FineTuneOptions
from core.jobs.openai_batches import OpenAIBatches
from core.jobs.openai_finetune import OpenAIFineTuning
from core.jobs.openai_webhooks import OpenAIWebhooks
from core.jobs.polling import WebhookVerifier
from core.jobs.sql_jobs import SqlJobStore
from core.media.demo_media import DemoImages, DemoSpeech, DemoTranscriber
from core.media.ffmpeg_audio import FfmpegAudio, find_ffmpeg
from core.media.openai_media import OpenAIImages, OpenAISpeech, OpenAITranscriber
from core.media.pillow_pictures import PillowPictures
from core.media.ports import ImageGenerator, SpeechSynthesizer, Transcriber
from core.media.steps import MediaKit, MediaOptions, MediaSteps
from core.metrics import Metrics, NullMetrics
from core.models.demo import DemoGateway
from core.models.lifecycle import ModelLifecycle, warnings
from core.models.llm import LLMGateway
from core.models.openai_gateway import OpenAIGateway, RetryPolicy
from core.models.openai_realtime import OpenAIRealtime
from core.models.realtime import RealtimeVoice
from core.models.registry import Registry, load_registry
from core.models.sql_fine_tuned import SqlFineTunedModels
from core.money.budgets import BudgetLedger
from core.money.metering import Meter
from core.money.prices import PriceTable, load_prices
from core.money.sql_ledger import budget_ledger
from core.settings import Settings
from core.storage.database import create_engine, migrate
from core.storage.file_spool import FileSpool
from core.storage.sql_store import conversation_store
from core.tools.builtin import builtin_tools
from core.tools.drawing import drawing_tool
from core.tools.toolbox import ToolRegistry, load_tool_modules

_Spec = TypeVar("_Spec")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Storage:
    """The database and what lives in it: enough for the shell's admin commands, which
    need no API key."""

    settings: Settings
    database: AsyncEngine
    store: ConversationStore
    journal: TurnJournal
    budgets: BudgetLedger
    access: AccessPolicy
    clock: Clock
    names: UserDirectory


@asynccontextmanager
async def open_storage(settings: Settings, *, clock: Clock | None = None) -> AsyncIterator[Storage]:
    """Open the database (migrated unless ``SWITCHBOARD_AUTO_MIGRATE=false``), its store,
    the budget ledger and the access rules; closed on exit."""
    names = user_directory()
    access = AccessPolicy(
        names.principals(settings.allowed_users, "SWITCHBOARD_ALLOWED_USERS"),
        names.principals(settings.admins, "SWITCHBOARD_ADMINS"),
    )
    database = create_engine(settings.database_url)
    try:
        if settings.auto_migrate:
            await migrate(database, settings.database_url)
        store = conversation_store(database)
        async with kept_fresh(access, store):
            yield Storage(
                settings,
                database,
                store,
                store,
                budget_ledger(database),
                access,
                clock or SystemClock(),
                names,
            )
    finally:
        await database.dispose()


def process_owner() -> str:
    """This process's name on the leases it takes (durable turns, later jobs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_gone(owner: str) -> bool:
    """Whether the lease owner ``owner`` (from ``process_owner``) was a process of this
    machine that no longer runs."""
    host, _, rest = owner.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    return False


def user_directory() -> UserDirectory:
    """How every channel names its users (none of it needs the channel's library)."""
    return UserDirectory([TelegramNames(), SlackNames(), ConsoleNames()])


@dataclass(frozen=True)
class App:
    """Everything the channels need, built from one ``Settings``: the inbound pipeline
    they hand events to, the outbox through which the core reaches them, and the pieces
    behind both."""

    settings: Settings
    registry: Registry
    storage: Storage
    prices: PriceTable
    turns: TurnRunner
    choices: ConversationChoices
    assistant: Assistant
    commands: Commands
    pipeline: InboundPipeline
    outbox: Outbox
    metrics: Metrics
    recovery: TurnRecovery
    media: MediaSteps
    batches: BatchJobs
    finetunes: FineTuneJobs

    @property
    def store(self) -> ConversationStore:
        """The conversation store."""
        return self.storage.store

    @property
    def access(self) -> AccessPolicy:
        """Who may use the bot and who administers it."""
        return self.storage.access


@dataclass(frozen=True)
class ModelPorts:
    """What answers the model calls: the LLM gateway and the three media APIs."""

    gateway: LLMGateway
    transcriber: Transcriber
    speech: SpeechSynthesizer
    images: ImageGenerator
    realtime: RealtimeVoice | None = None
    """Realtime voice sessions: speech for realtime models, and ``/voice talk``."""
    batches: BatchAPI | None = None
    """The Batch API (None: batch jobs are not offered, as in demo mode)."""
    fine_tuning: FineTuningAPI | None = None
    """The fine-tuning API (None: /finetune is not offered, as in demo mode)."""
    webhooks: WebhookVerifier | None = None
    """Verifies OpenAI webhook deliveries about batch and fine-tuning jobs (None: none
    are accepted, as in demo mode)."""


Provider = Callable[[Settings, Registry, MediaOptions], AbstractAsyncContextManager[ModelPorts]]


def served_metrics(settings: Settings) -> Metrics:
    """Prometheus metrics when the operations server serves ``/metrics``
    (``SWITCHBOARD_HTTP_PORT`` set); otherwise none, and prometheus-client is never
    imported (issue 17)."""
    if settings.http_port is None:
        return NullMetrics()
    from core.metrics_prometheus import PrometheusMetrics

    return PrometheusMetrics()


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
    provider: Provider
    if settings.demo:
        # The one place demo mode is decided: its registry and prices, and its ports.
        settings = settings.model_copy(update=DEMO_SETTINGS)
        provider = demo_models
    else:
        settings.require("OPENAI_API_KEY")
        provider = openai_models
    registry = load_registry(settings.models_file, settings.modes_file)
    prices = load_prices(settings.prices_file)
    media_options = media_options_of(settings, registry, prices)
    ffmpeg = find_ffmpeg(settings.ffmpeg)
    operator_tools = load_tool_modules(settings.tool_modules)
    async with (
        provider(settings, registry, media_options) as ports,
        open_storage(settings, clock=clock) as storage,
    ):
        clock = storage.clock
        counters = TokenCounters()
        await asyncio.to_thread(counters.preload, {m.encoding for m in registry.models.values()})
        gateway = ports.gateway
        kit = MediaKit(
            pictures=PillowPictures(),
            converter=FfmpegAudio(
                ffmpeg, max_upload_bytes=media_options.transcription.max_upload_bytes
            ),
            transcriber=ports.transcriber,
            speech=ports.speech,
            images=ports.images,
            realtime=ports.realtime,
        )
        owner = process_owner()
        writes = DurableWrites(
            storage.store,
            storage.journal,
            FileSpool(settings.spool_dir),
            retry_seconds=settings.store_retry_seconds,
            ledger=storage.budgets,
        )
        meter = Meter(
            storage.budgets, clock, settings.zone, owner=owner, unsettled=writes.settle_later
        )
        outbox = Outbox(storage.store, storage.access.admins)

        async def retired(old: str, new: str) -> None:
            told = await outbox.tell_admins(
                f"Model `{old}` has been shut down: conversations on it now use `{new}`."
            )
            if not told:
                log.warning("no admin could be told that %s was replaced by %s", old, new)

        lifecycle = ModelLifecycle(clock, on_retired=retired)
        media = MediaSteps(
            wrap_media(kit) if wrap_media else kit, media_options, prices, meter, lifecycle
        )
        tools = ToolRegistry(
            [*builtin_tools(clock), drawing_tool(media), *operator_tools],
            timeout=settings.tool_timeout_seconds,
        )
        for mode in registry.modes.values():
            missing = sorted(set(mode.tools) - set(tools.names()))
            if missing:
                raise ConfigError(f"mode {mode.id!r} names unknown tools: {', '.join(missing)}")
        store = storage.store
        metrics = served_metrics(settings)
        turns = TurnRunner(Admission(settings.turns_working))
        choices = ConversationChoices(
            store, registry, turns, clock, can_speak=True, can_talk=media.can_talk
        )
        assistant = Assistant(
            store=store,
            gateway=AdmittedGateway(wrap_gateway(gateway) if wrap_gateway else gateway),
            choices=choices,
            context=ContextBuilder(store, context_tokens=settings.context_tokens),
            tools=tools,
            meter=meter,
            media=media,
            turns=turns,
            clock=clock,
            counters=counters,
            options=AssistantOptions(
                tool_rounds=settings.tool_rounds, max_message_chars=settings.max_message_chars
            ),
            metrics=metrics,
            lifecycle=lifecycle,
            writes=writes,
            notices=AdminNotices(outbox.tell_admins, clock),
        )
        commands = Commands(
            choices=choices,
            turns=turns,
            store=store,
            ledger=storage.budgets,
            access=storage.access,
            names=storage.names,
            clock=clock,
            timezone=settings.zone,
        )
        job_store = SqlJobStore(storage.database)
        webhook_secret = (
            settings.openai_webhook_secret.get_secret_value()
            if settings.openai_webhook_secret
            else None
        )
        batches = BatchJobs(
            api=ports.batches,
            webhooks=ports.webhooks,
            jobs=job_store,
            store=store,
            choices=choices,
            outbox=outbox,
            ledger=storage.budgets,
            prices=prices,
            count_tokens=lambda encoding: counters.for_encoding(encoding).count,
            clock=clock,
            options=BatchOptions(
                poll_seconds=settings.jobs_poll_seconds,
                output_cap=settings.batch_output_tokens,
                owner=owner,
                timezone=settings.zone,
                webhook_secret=webhook_secret,
                gone=process_gone,
            ),
            metrics=metrics,
        )
        finetunes = FineTuneJobs(
            api=ports.fine_tuning,
            webhooks=ports.webhooks,
            jobs=job_store,
            models=SqlFineTunedModels(storage.database),
            store=store,
            choices=choices,
            outbox=outbox,
            ledger=storage.budgets,
            prices=prices,
            count_tokens=lambda encoding: counters.for_encoding(encoding).count,
            clock=clock,
            options=FineTuneOptions(
                enabled=settings.finetune == "on",
                poll_seconds=settings.jobs_poll_seconds,
                owner=owner,
                timezone=settings.zone,
                webhook_secret=webhook_secret,
            ),
            metrics=metrics,
        )
        # The models fine-tuned before (by any process) are offered from the start.
        await finetunes.offer_stored_models()
        pipeline = InboundPipeline(
            store=store,
            journal=storage.journal,
            writes=writes,
            clock=clock,
            owner=owner,
            access=storage.access,
            rate=MessageRateLimit(settings.messages_per_minute, time.monotonic),
            commands=commands,
            assistant=assistant,
            choices=choices,
            turns=turns,
            jobs=FileCommandSet(JobCommands(batches), FineTuneCommands(finetunes)),
        )
        _warn_of_shutdowns(registry, media_options, clock)
        yield App(
            settings,
            registry,
            storage,
            prices,
            turns,
            choices,
            assistant,
            commands,
            pipeline,
            outbox,
            metrics,
            TurnRecovery(
                storage.journal,
                outbox,
                pipeline,
                clock=clock,
                owner=owner,
                writes=writes,
                gone=process_gone,
                meter=meter,
            ),
            media,
            batches,
            finetunes,
        )


@asynccontextmanager
async def openai_models(
    settings: Settings, registry: Registry, media: MediaOptions
) -> AsyncIterator[ModelPorts]:
    """The OpenAI API (or a compatible server at ``OPENAI_BASE_URL``) behind every port."""
    assert settings.openai_api_key is not None
    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,  # the gateway retries, so insufficient_quota is never retried
        timeout=settings.openai_timeout_seconds,
        http_client=DefaultAioHttpClient(),
    )
    try:
        retry = RetryPolicy(
            attempts=settings.openai_max_retries,
            backoff=settings.openai_backoff_seconds,
            total=settings.openai_total_seconds,
        )
        yield ModelPorts(
            gateway=OpenAIGateway(client, retry),
            transcriber=OpenAITranscriber(client, retry),
            speech=OpenAISpeech(client, retry, max_input_chars=media.speech.max_input_chars),
            realtime=OpenAIRealtime(client, timeout_seconds=settings.openai_timeout_seconds),
            batches=OpenAIBatches(client),
            fine_tuning=OpenAIFineTuning(client),
            webhooks=OpenAIWebhooks(client),
            images=OpenAIImages(
                client,
                retry,
                ask_for_b64=frozenset(
                    name for name, spec in registry.media.images.items() if spec.ask_for_b64
                ),
            ),
        )
    finally:
        await client.close()


DEMO_SETTINGS: dict[str, object] = {
    "models_file": Path(str(resources.files("core.data").joinpath("demo_models.toml"))),
    "prices_file": Path(str(resources.files("core.data").joinpath("demo_prices.toml"))),
    # Choices made for real models do not apply to the stand-ins.
    "image_model": None,
    "image_size": None,
    "image_quality": None,
    "transcription_model": None,
    "speech_model": None,
    "speech_voice": None,
}
"""Demo mode's settings: the shipped demo registry and its zero prices."""


@asynccontextmanager
async def demo_models(
    settings: Settings, registry: Registry, media: MediaOptions
) -> AsyncIterator[ModelPorts]:
    """The stand-ins built into Switchboard behind every port: no key, no network, no cost."""
    yield ModelPorts(
        gateway=DemoGateway(timezone=settings.timezone),
        transcriber=DemoTranscriber(),
        speech=DemoSpeech(),
        images=DemoImages(),
    )


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
        models=media,
    )


def _warn_of_shutdowns(registry: Registry, media: MediaOptions, clock: Clock) -> None:
    """One WARNING per model in use that shuts down within 30 days or already has."""
    chosen = {
        "image": media.image.id,
        "transcription": media.transcription.id,
        "speech": media.speech.id,
    }
    for line in warnings(registry, clock.now().date(), chosen):
        log.warning("%s", line)


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
        settings.openai_webhook_secret,
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
    )
    found = [value.get_secret_value() for value in values if value is not None]
    password = make_url(settings.database_url).password
    return [*found, *([str(password)] if password else [])]


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
