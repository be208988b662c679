"""The conversation engine: answering a message with streaming, tools and persistence.

One reply runs at a time per conversation; different conversations run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from math import ceil
from zoneinfo import ZoneInfo

from core.access.policy import AccessPolicy
from core.clock import Clock
from core.conversation.context import fit_history
from core.conversation.events import (
    ImageReady,
    Notice,
    ReplyFailed,
    ReplyFinished,
    ReplySink,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Transcribed,
    VoiceReady,
)
from core.conversation.history import HistoryCache
from core.conversation.messages import (
    Conversation,
    ConversationKey,
    IncomingMessage,
    NewMessage,
    Role,
    StoredMessage,
)
from core.conversation.ratelimit import MessageRateLimit
from core.conversation.store import ConversationStore, UsageRecord
from core.conversation.tokens import MESSAGE_OVERHEAD, TokenCounter, TokenCounters
from core.conversation.voice_talk import is_talk, talk_by_voice
from core.errors import (
    ContextTooLong,
    SwitchboardError,
    UpstreamUnavailable,
    UserInputError,
    user_message,
)
from core.media.ports import PreparedImage, VoiceNote
from core.media.steps import Charge, MediaSteps, Seen
from core.models.llm import (
    ChatTurn,
    Completion,
    ContextItem,
    LLMGateway,
    LLMRequest,
    TextChunk,
    ToolCall,
    ToolOutput,
    ToolSchema,
    Usage,
)
from core.models.registry import ModelSpec, ModeSpec, Registry
from core.money.budgets import BudgetLedger, Payer, Reservation
from core.money.pricing import price_sheet, token_cost
from core.tools.toolbox import ToolRegistry

log = logging.getLogger(__name__)

HISTORY_PAGE = 64
IMAGE_TOKENS = 800
"""Context tokens counted per picture: about what a high-detail image costs the model."""
MAX_IMAGE_TOKENS = 4_000
"""Input tokens a picture may cost at most (OpenAI's patch-based mini models bill up to about
3,800), so a budget reservation stays an upper bound."""
HISTORY_PICTURE_TURNS = 3
"""How many of the newest turns with pictures show them to the model, this one included
(earlier turns as the small copies history keeps; older ones as text only)."""
DRAW_TOOL = "generate_image"
"""The image tool the engine itself provides, when a mode lists it and images are set up."""
ENGINE_TOOLS = frozenset({DRAW_TOOL})
RESTARTING = "I'm restarting and couldn't answer that. Please send it again in a moment."

_DRAW_SCHEMA = ToolSchema(
    name=DRAW_TOOL,
    description=(
        "Draw a picture and show it to the user. Use only when the user asks for an image, "
        "drawing, illustration or photo to be made."
    ),
    parameters={
        "type": "object",
        "properties": {
            "prompt": {
                "type": "string",
                "description": "A detailed description of the picture to draw.",
            }
        },
        "required": ["prompt"],
        "additionalProperties": False,
    },
    strict=True,
)


@dataclass(frozen=True)
class EngineOptions:
    """Limits the engine applies to every turn."""

    tool_rounds: int = 5
    max_message_chars: int = 32_000
    context_tokens: int | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    messages_per_minute: int = 0


@dataclass
class _Turn:
    """A reply in progress, so that /cancel can find and stop it."""

    task: asyncio.Task[object]
    cancel_requested: bool = False


_TurnBody = Callable[[IncomingMessage, "_TurnState"], Awaitable[None]]


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class _TurnState:
    """One turn's choices and what it produced so far: text shown, usage to record."""

    conversation: Conversation
    user_id: int
    payer: Payer
    model: ModelSpec
    counter: TokenCounter
    sink: ReplySink
    last_message_id: int | None = None
    text: str = ""
    usage: list[UsageRecord] = field(default_factory=list)
    tools_used: list[str] = field(default_factory=list)
    mode: ModeSpec | None = None
    pictures: dict[int, tuple[PreparedImage, ...]] = field(default_factory=dict)
    drawn: list[PreparedImage] = field(default_factory=list)
    spoken: VoiceNote | None = None

    @property
    def charge(self) -> Charge:
        return Charge(self.payer, self.user_id, self.conversation.id)


class Engine:
    """Answers messages: context within the token budget, the tool loop, events, persistence."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        gateway: LLMGateway,
        registry: Registry,
        tools: ToolRegistry,
        clock: Clock,
        counters: TokenCounters | None = None,
        options: EngineOptions | None = None,
        budgets: BudgetLedger | None = None,
        media: MediaSteps | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self._gateway = gateway
        self._tools = tools
        self._clock = clock
        self._counters = counters or TokenCounters()
        self._options = options or EngineOptions()
        self.budgets = budgets
        self.media = media
        self.access = access
        self._rate = MessageRateLimit(self._options.messages_per_minute, time.monotonic)
        self._history_cache = HistoryCache()
        self._slots: dict[ConversationKey, _Slot] = {}
        self._turns: dict[ConversationKey, _Turn] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    async def answer_message(self, message: IncomingMessage, sink: ReplySink) -> None:
        """Answer ``message``, emitting reply events to ``sink``; never raises for bad input
        or upstream failures, which become a ``ReplyFailed`` event."""
        try:
            self._check(message)
            if message.event_id and not await self.first_delivery(
                message.key.channel, message.event_id
            ):
                log.info("dropping redelivered event %s", message.event_id)
                return
        except SwitchboardError as exc:
            await sink.emit(ReplyFailed(user_message(exc)))
            return
        await self._in_slot(message, sink, self._converse)

    async def draw_image(self, message: IncomingMessage, sink: ReplySink) -> None:
        """``/image``: draw what ``message.text`` describes; the picture arrives as an
        ``ImageReady`` event, and the request and picture are kept in the conversation."""
        await self._drawing(message, sink, edit=False)

    async def edit_image(self, message: IncomingMessage, sink: ReplySink) -> None:
        """``/edit``: change the picture attached to ``message`` (else the newest picture in
        the conversation) as ``message.text`` asks."""
        await self._drawing(message, sink, edit=True)

    async def _drawing(self, message: IncomingMessage, sink: ReplySink, *, edit: bool) -> None:
        try:
            self._check(message, need_text=False)
            if self.media is None:
                raise UserInputError("Pictures are not set up on this bot.")
            if message.event_id and not await self.first_delivery(
                message.key.channel, message.event_id
            ):
                return
        except SwitchboardError as exc:
            await sink.emit(ReplyFailed(user_message(exc)))
            return

        async def body(message: IncomingMessage, state: _TurnState) -> None:
            await self._draw(message, state, edit=edit)

        await self._in_slot(message, sink, body)

    async def set_voice(self, key: ConversationKey, on: bool, *, talk: bool = False) -> None:
        """Make replies in ``key`` arrive also as speech (``/voice on``), or not; with
        ``talk``, voice notes are answered voice-to-voice (``/voice talk``)."""
        if on and self.media is None:
            raise UserInputError("Spoken replies are not set up on this bot.")
        if talk and (self.media is None or not self.media.can_talk):
            raise UserInputError("Voice-to-voice talk needs a realtime speech model on this bot.")
        conversation = await self.store.active_conversation(key)
        await self.store.set_voice(conversation.id, on, talk=talk)

    async def voice_enabled(self, key: ConversationKey) -> bool:
        """Whether replies in ``key`` are also spoken."""
        conversation = await self.store.find_active(key)
        return conversation is not None and conversation.voice

    async def voice_talking(self, key: ConversationKey) -> bool:
        """Whether voice notes in ``key`` are answered voice-to-voice."""
        conversation = await self.store.find_active(key)
        return conversation is not None and conversation.voice_talk

    async def _in_slot(
        self,
        message: IncomingMessage,
        sink: ReplySink,
        body: _TurnBody,
    ) -> None:
        slot = self._slots.setdefault(message.key, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                if self._stopping:
                    # Queued behind a reply that shutdown stopped: don't start a new one.
                    await sink.emit(ReplyFailed(RESTARTING))
                    return
                await self._run_turn(message, sink, body)
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[message.key]

    def cancel(self, key: ConversationKey) -> bool:
        """Stop the reply in progress for ``key``; what was generated is kept. True if any."""
        turn = self._turns.get(key)
        if turn is None or turn.cancel_requested:
            return False
        turn.cancel_requested = True
        turn.task.cancel()
        return True

    def cancel_place(self, place: ConversationKey) -> int:
        """Stop the replies in progress in ``place`` and every thread of it; returns how many."""
        return sum(
            self.cancel(key)
            for key in list(self._turns)
            if replace(key, thread="") == replace(place, thread="")
        )

    def cancel_all(self) -> int:
        """Stop every reply in progress, and refuse the messages still waiting for their
        conversation's turn (at shutdown); returns how many replies were stopped."""
        self._stopping = True
        return sum(self.cancel(key) for key in list(self._turns))

    async def first_delivery(self, source: str, event_id: str) -> bool:
        """True the first time an update or event id is seen; False for a redelivery."""
        return await self.store.claim_event(source, event_id)

    async def wait_idle(self) -> None:
        """Wait until no reply is in progress (bound it with ``asyncio.timeout``)."""
        await self._idle.wait()

    async def has_conversation(self, key: ConversationKey) -> bool:
        """Whether ``key`` has an open conversation (a Slack thread the bot takes part in)."""
        return await self.store.find_active(key) is not None

    def now(self) -> datetime:
        """The engine clock's current time."""
        return self._clock.now()

    @property
    def timezone(self) -> ZoneInfo:
        """The time zone budget periods reset in."""
        return self._options.timezone

    def is_busy(self, key: ConversationKey) -> bool:
        """Whether a reply is being generated for ``key``."""
        return key in self._turns

    async def reset_conversation(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key``; the old one stays stored."""
        self.cancel(key)
        return await self.store.start_conversation(key)

    async def set_mode(self, key: ConversationKey, name: str | None) -> ModeSpec:
        """Choose the mode of ``key``'s conversation; raises ``UnknownChoice``."""
        mode = self.registry.mode(name)
        conversation = await self.store.active_conversation(key)
        await self.store.set_mode(conversation.id, mode.id)
        return mode

    async def set_model(self, key: ConversationKey, name: str | None) -> ModelSpec:
        """Choose the model of ``key``'s conversation; raises ``UnknownChoice``."""
        model = self.registry.model(name)
        conversation = await self.store.active_conversation(key)
        await self.store.set_model(conversation.id, model.id)
        return model

    async def current_choices(self, key: ConversationKey) -> tuple[ModeSpec, ModelSpec]:
        """The mode and model that the next reply in ``key`` will use."""
        conversation = await self.store.active_conversation(key)
        mode = self.registry.mode(conversation.mode)
        return mode, self.registry.model(conversation.model or mode.model)

    async def _inherit_choices(self, conversation: Conversation) -> Conversation:
        """A new thread starts with the mode, model and spoken-reply choice made for its
        place (a Slack channel, a Telegram forum's general chat), so ``/mode`` or
        ``/voice on`` there applies to new threads."""
        if conversation.mode is not None or conversation.model is not None or conversation.voice:
            return conversation
        place = await self.store.find_active(replace(conversation.key, thread=""))
        if place is None or (place.mode is None and place.model is None and not place.voice):
            return conversation
        if place.mode is not None:
            await self.store.set_mode(conversation.id, place.mode)
        if place.model is not None:
            await self.store.set_model(conversation.id, place.model)
        if place.voice:
            await self.store.set_voice(conversation.id, True, talk=place.voice_talk)
        return replace(
            conversation,
            mode=place.mode,
            model=place.model,
            voice=place.voice,
            voice_talk=place.voice_talk,
        )

    def _check(self, message: IncomingMessage, *, need_text: bool = True) -> None:
        wait = self._rate.wait_needed(message.sender.principal)
        if wait > 0:
            raise UserInputError(
                f"You're sending messages faster than I can answer. Please wait {ceil(wait)} s."
            )
        if message.attachments and self.media is None:
            raise UserInputError("Pictures and voice messages are not set up on this bot.")
        for attachment in message.attachments:
            if not attachment.is_image and not attachment.is_audio:
                raise UserInputError(
                    f"I can look at pictures and listen to audio, but I can't open "
                    f"{attachment.filename!r}."
                )
        if need_text and not message.text.strip() and not message.attachments:
            raise UserInputError("Send me some text and I will answer it.")
        if len(message.text) > self._options.max_message_chars:
            raise UserInputError(
                f"That message is too long ({len(message.text):,} characters); the limit is "
                f"{self._options.max_message_chars:,}. Please shorten it or send it in parts."
            )

    async def _run_turn(self, message: IncomingMessage, sink: ReplySink, body: _TurnBody) -> None:
        task = asyncio.current_task()
        assert task is not None
        turn = _Turn(task)
        self._turns[message.key] = turn
        self._idle.clear()
        state: _TurnState | None = None
        try:
            user_id = await self.store.ensure_user(message.sender)
            conversation = await self.store.active_conversation(message.key)
            if conversation.last_message_id is None and message.key.thread:
                conversation = await self._inherit_choices(conversation)
            mode = self.registry.mode(conversation.mode)
            model = self.registry.model(conversation.model or mode.model)
            counter = self._counters.for_encoding(model.encoding)
            payer = Payer.of(message.sender, message.key)
            state = _TurnState(conversation, user_id, payer, model, counter, sink)
            state.mode = mode
            await body(message, state)
        except asyncio.CancelledError:
            if not turn.cancel_requested:
                raise
            task.uncancel()
            await self._finish(state, cancelled=True)
            await sink.emit(ReplyFinished(state.text if state else "", cancelled=True))
            return
        except Exception as exc:
            if isinstance(exc, SwitchboardError):
                log.warning("turn in %s failed: %s", message.key, exc)
            else:
                log.exception("turn in %s failed unexpectedly", message.key)
            await self._finish(state, cancelled=False)
            await sink.emit(ReplyFailed(user_message(exc), state.text if state else ""))
            return
        finally:
            self._turns.pop(message.key, None)
            if not self._turns:
                self._idle.set()
        await self._finish(state, cancelled=False)
        await sink.emit(ReplyFinished(state.text))
        if state.spoken is not None:
            await sink.emit(VoiceReady(state.spoken))
        elif state.conversation.voice and state.text.strip() and self.media is not None:
            await self._speak(state)

    async def _converse(self, message: IncomingMessage, state: _TurnState) -> None:
        """A chat turn: hear and see what was attached, store the message, answer it."""
        if self.media is not None and is_talk(message, state.conversation, self.media):
            assert state.mode is not None
            talked = await talk_by_voice(
                message,
                media=self.media,
                store=self.store,
                conversation=state.conversation,
                instructions=state.mode.system_prompt.replace(
                    "{date}", self.now().date().isoformat()
                ),
                author_id=state.user_id,
                counter=state.counter,
                charge=state.charge,
                sink=state.sink,
                usage=state.usage,
            )
            self._history_cache.append(talked.stored, state.conversation.last_message_id)
            state.last_message_id = talked.stored.id
            state.text, state.spoken = talked.answer, talked.note
            return
        text = message.text if message.text.strip() else ""
        usage: list[UsageRecord] = []
        seen = Seen((), ())
        if message.attachments:
            assert self.media is not None  # _check refuses attachments otherwise
            audio = [a for a in message.attachments if a.is_audio and not a.is_image]
            pictures = [a for a in message.attachments if a.is_image]
            if audio:
                try:
                    heard = await self.media.hear(audio, state.charge, usage)
                except BaseException:
                    state.usage.extend(usage)  # calls that returned were paid for
                    raise
                await state.sink.emit(Transcribed(heard))
                text = f"{text.strip()}\n\n{heard}" if text else heard
            if pictures:
                seen = await self.media.see(pictures)
                state.model = self.registry.vision_model(state.model)
                if "vision" not in state.model.capabilities:
                    raise UserInputError("None of this bot's models can look at pictures.")
                state.counter = self._counters.for_encoding(state.model.encoding)
                if not text:
                    text = (
                        f"What is in {'this picture' if len(pictures) == 1 else 'these pictures'}?"
                    )
        if len(text) > self._options.max_message_chars:
            raise UserInputError(
                f"That message is too long ({len(text):,} characters); the limit is "
                f"{self._options.max_message_chars:,}."
            )
        stored = await self.store.add_message(
            state.conversation.id,
            NewMessage(
                Role.USER,
                text,
                state.counter.count(text) + IMAGE_TOKENS * len(seen.kept),
                author_id=state.user_id,
                platform_message_id=message.platform_message_id,
                images=seen.kept,
            ),
            usage,
        )
        self._history_cache.append(stored, state.conversation.last_message_id)
        state.last_message_id = stored.id
        if seen.full:
            state.pictures[stored.id] = seen.full
        assert state.mode is not None
        await self._generate(state.mode, state)

    async def _draw(self, message: IncomingMessage, state: _TurnState, *, edit: bool) -> None:
        """``/image`` and ``/edit``: the prompt and the picture are kept in history."""
        assert self.media is not None
        source: PreparedImage | None = None
        if edit:
            pictures = [a for a in message.attachments if a.is_image]
            if pictures:
                source = await self.media.picture(pictures[0])
            else:
                source = await self.store.latest_image(state.conversation.id)
            if source is None:
                raise UserInputError(
                    "Send the picture to edit with /edit in its caption, or reply to it "
                    "with /edit and what to change."
                )
        picture, kept, record = await self.media.draw(message.text, state.charge, source)
        await state.sink.emit(ImageReady(picture, picture.revised_prompt))
        prompt = message.text.strip()
        request = NewMessage(
            Role.USER,
            f"/{'edit' if edit else 'image'} {prompt}",
            state.counter.count(prompt),
            author_id=state.user_id,
            platform_message_id=message.platform_message_id,
        )
        described = picture.revised_prompt or prompt
        answer = f"(I drew a picture: {described})"
        stored = await self.store.add_message(state.conversation.id, request)
        self._history_cache.append(stored, state.conversation.last_message_id)
        drawn = await asyncio.shield(
            self.store.add_message(
                state.conversation.id,
                NewMessage(
                    Role.ASSISTANT,
                    answer,
                    state.counter.count(answer),
                    meta={"image_model": record.model},
                    images=(kept,),
                ),
                [record],
            )
        )
        self._history_cache.append(drawn, stored.id)

    async def _draw_tool(self, call: ToolCall, state: _TurnState) -> tuple[ToolOutput, bool]:
        """The model asked for a picture: draw it, show it, and tell the model it was shown."""
        assert self.media is not None
        try:
            prompt = json.loads(call.arguments).get("prompt", "")
            if not isinstance(prompt, str):
                raise UserInputError("the prompt must be a string")
            picture, kept, record = await self.media.draw(prompt, state.charge)
        except (ValueError, AttributeError) as exc:
            return ToolOutput(call.call_id, f"error: bad arguments: {exc}"), False
        except SwitchboardError as exc:
            return ToolOutput(call.call_id, f"error: {user_message(exc)}"), False
        state.usage.append(record)
        state.drawn.append(kept)
        await state.sink.emit(ImageReady(picture, picture.revised_prompt))
        shown = picture.revised_prompt or prompt
        return ToolOutput(
            call.call_id, f"The picture was drawn and shown to the user: {shown}"
        ), True

    async def _speak(self, state: _TurnState) -> None:
        """Also say the reply aloud (``/voice on``); a failure here costs only the voice."""
        assert self.media is not None
        usage: list[UsageRecord] = []
        try:
            note = await self.media.speak(state.text, state.charge, usage)
        except SwitchboardError as exc:
            log.warning("speaking the reply in %s failed: %s", state.conversation.key, exc)
            await state.sink.emit(Notice(f"I couldn't say that aloud: {user_message(exc)}"))
            return
        finally:
            # Shielded: what was spoken was paid for, even if the reply is stopped now.
            await asyncio.shield(self.store.record_usage(usage))
        await state.sink.emit(VoiceReady(note))

    async def _generate(self, mode: ModeSpec, state: _TurnState) -> None:
        model = state.model
        instructions = mode.system_prompt.replace("{date}", self._clock.now().date().isoformat())
        tools = self._tools.schemas(mode.tools) if model.supports_tools else []
        if model.supports_tools and self.media is not None and DRAW_TOOL in mode.tools:
            tools.append(_DRAW_SCHEMA)
        budget = self._history_budget(model, state.counter, instructions, tools)
        history, used = await self._history(state, budget)
        items: list[ContextItem] = list(history)
        retried = False
        rounds = 0
        while True:
            offered = tools if rounds < self._options.tool_rounds else []
            request = LLMRequest(model, instructions, items, offered)
            try:
                completion = await self._call(request, state)
            except ContextTooLong:
                if retried or state.text:
                    raise
                retried = True
                # Our count fit the window but the API's did not: keep half of what was sent,
                # and always the newest message.
                newest = state.counter.count(history[-1].text) + MESSAGE_OVERHEAD
                budget = max(used // 2, newest)
                tool_items = items[len(history) :]
                history, used = await self._history(state, budget)
                items = [*history, *tool_items]
                log.info("context too long for %s; retrying within %d tokens", model.id, budget)
                continue
            if not completion.tool_calls:
                return
            rounds += 1
            items.extend(completion.tool_calls)
            for call in completion.tool_calls:
                state.tools_used.append(call.name)
                await state.sink.emit(ToolStarted(call.call_id, call.name, call.arguments))
            results = await asyncio.gather(
                *(self._run_tool(c, state) for c in completion.tool_calls)
            )
            for call, (output, ok) in zip(completion.tool_calls, results, strict=True):
                items.append(output)
                await state.sink.emit(ToolFinished(call.call_id, call.name, ok))

    async def _run_tool(self, call: ToolCall, state: _TurnState) -> tuple[ToolOutput, bool]:
        if call.name == DRAW_TOOL and self.media is not None:
            return await self._draw_tool(call, state)
        return await self._tools.run(call)

    async def _call(self, request: LLMRequest, state: _TurnState) -> Completion:
        reservation: Reservation | None = None
        if self.budgets is not None:
            # Held before the call; over budget, no call is made.
            estimate = token_cost(request.model.prices, _upper_bound(request, state.counter))
            reservation = await self.budgets.reserve(
                state.payer, estimate, self._clock.now(), self._options.timezone
            )
        completion: Completion | None = None
        streamed: list[str] = []
        cost = 0
        try:
            async for event in self._gateway.stream(request):
                if isinstance(event, TextChunk):
                    streamed.append(event.text)
                    state.text += event.text
                    await state.sink.emit(TextDelta(event.text))
                else:
                    completion = event
        finally:
            # Charged even when cut short: what was generated was paid for.
            if completion is not None or streamed:
                reported = completion.usage if completion else None
                usage = reported or _estimate(request, state.counter, "".join(streamed))
                cost = token_cost(request.model.prices, usage)
                state.usage.append(
                    UsageRecord(
                        user_id=state.user_id,
                        conversation_id=state.conversation.id,
                        kind="chat",
                        model=request.model.id,
                        input_tokens=usage.input_tokens,
                        cached_input_tokens=usage.cached_input_tokens,
                        output_tokens=usage.output_tokens,
                        cost_micros=cost,
                        prices=price_sheet(request.model.prices),
                        request_id=completion.request_id if completion else None,
                    )
                )
            if reservation is not None and self.budgets is not None:
                # Shielded: a /cancel arriving now must not leave the estimate held.
                await asyncio.shield(self.budgets.settle(reservation, cost))
        if completion is None:
            raise UpstreamUnavailable("the model stream ended without completing")
        return completion

    async def _finish(self, state: _TurnState | None, *, cancelled: bool) -> None:
        if state is None or (not state.text and not state.usage):
            return
        meta: dict[str, object] = {"model": state.model.id}
        if cancelled:
            meta["cancelled"] = True
        if state.tools_used:
            meta["tools"] = state.tools_used
        reply = NewMessage(
            Role.ASSISTANT,
            state.text,
            state.counter.count(state.text),
            meta=meta,
            images=tuple(state.drawn),
        )
        # Shielded so that a shutdown arriving now cannot lose a reply the user has seen.
        stored = await asyncio.shield(
            self.store.add_message(state.conversation.id, reply, state.usage)
        )
        self._history_cache.append(stored, state.last_message_id)

    def _history_budget(
        self,
        model: ModelSpec,
        counter: TokenCounter,
        instructions: str,
        tools: Sequence[ToolSchema],
    ) -> int:
        window = model.context_window
        if self._options.context_tokens is not None:
            window = min(window, self._options.context_tokens)
        reserve = min(model.max_output_tokens, window // 4)
        fixed = counter.count(instructions) + MESSAGE_OVERHEAD
        fixed += sum(
            counter.count(str(tool.parameters)) + counter.count(tool.description) for tool in tools
        )
        return window - reserve - fixed

    async def _history(self, state: _TurnState, budget: int) -> tuple[list[ChatTurn], int]:
        """Recent turns within ``budget`` and the tokens they use: from the history cache
        when it is current, else paging back through the store only as far as needed."""
        conversation_id = state.conversation.id
        newest_first = self._history_cache.lookup(conversation_id, state.last_message_id, budget)
        if newest_first is None:
            newest_first = []
            before: int | None = None
            used = 0
            complete = False
            while used <= budget:
                page = await self.store.recent_messages(
                    conversation_id, limit=HISTORY_PAGE, before_id=before
                )
                newest_first.extend(page)
                used += sum(m.token_count + MESSAGE_OVERHEAD for m in page)
                if len(page) < HISTORY_PAGE:
                    complete = True
                    break
                before = page[-1].id
            self._history_cache.store(
                conversation_id, newest_first, complete=complete, budget=budget
            )
        turns, used = fit_history(newest_first, budget)
        if not turns:
            raise UserInputError(
                "That message is too long for this model's context. Please shorten it."
            )
        return await self._with_pictures(turns, newest_first, state), used

    async def _with_pictures(
        self, turns: list[ChatTurn], newest_first: Sequence[StoredMessage], state: _TurnState
    ) -> list[ChatTurn]:
        """Show the model the pictures of the newest turns that had any: this turn's at full
        size, the few before as the small copies history keeps; older ones are only text."""
        if "vision" not in state.model.capabilities:
            return turns
        # fit_history keeps the newest messages, so turns[-1 - i] is newest_first[i].
        chosen = [
            (len(turns) - 1 - i, m)
            for i, m in enumerate(newest_first[: len(turns)])
            if m.image_count and m.role == Role.USER
        ][:HISTORY_PICTURE_TURNS]
        if not chosen:
            return turns
        wanted = [m.id for _, m in chosen if m.id not in state.pictures]
        stored = await self.store.message_images(wanted) if wanted else {}
        shown = list(turns)
        for index, message in chosen:
            images = state.pictures.get(message.id) or tuple(stored.get(message.id, ()))
            shown[index] = replace(turns[index], images=images)
        return shown


def _upper_bound(request: LLMRequest, counter: TokenCounter) -> Usage:
    """A call's usage at most: its prompt as counted here (the estimating counter errs
    high, and every picture at the most one can cost), all uncached, and the longest answer
    the model may give."""
    prompt = counter.count(request.instructions) + sum(
        counter.count(item.text) + MAX_IMAGE_TOKENS * len(item.images)
        if isinstance(item, ChatTurn)
        else counter.count(str(item))
        for item in request.items
    )
    prompt += sum(counter.count(str(tool.parameters)) for tool in request.tools)
    return Usage(prompt, 0, request.max_output_tokens or request.model.max_output_tokens)


def _estimate(request: LLMRequest, counter: TokenCounter, text: str) -> Usage:
    """Usage counted locally when the API reported none (a stream cut short)."""
    prompt = counter.count(request.instructions) + sum(
        counter.count(item.text) + IMAGE_TOKENS * len(item.images)
        for item in request.items
        if isinstance(item, ChatTurn)
    )
    return Usage(prompt, 0, counter.count(text))
