"""The use cases of a turn: answering a message (with what it heard and saw, the tool loop
and a spoken reply), drawing and editing pictures. Each runs as its conversation's turn
(``TurnRunner``), emits reply events, and stores what it produced, charged as it went."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from core.clock import Clock
from core.conversation.admin_notices import AdminNotices
from core.conversation.choices import ConversationChoices
from core.conversation.context import IMAGE_TOKENS, ContextBuilder
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
from core.conversation.messages import Conversation, IncomingMessage, NewMessage, Role
from core.conversation.spool import DurableWrites
from core.conversation.store import ConversationStore, UsageRecord
from core.conversation.tokens import MESSAGE_OVERHEAD, TokenCounter, TokenCounters
from core.conversation.turns import Turn, TurnRunner
from core.conversation.voice_talk import is_talk, talk_by_voice
from core.errors import (
    ContextTooLong,
    ModelNotFound,
    SwitchboardError,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamUnavailable,
    UserInputError,
    user_message,
)
from core.logs import logged_turn
from core.media.ports import PreparedImage, VoiceNote
from core.media.steps import MediaSteps, Seen
from core.metrics import Metrics, error_kind, watched_turn
from core.models.lifecycle import ModelLifecycle
from core.models.llm import (
    MIN_OUTPUT_TOKENS,
    ChatTurn,
    Completion,
    ContextItem,
    LLMGateway,
    LLMRequest,
    TextChunk,
    ToolCall,
    ToolOutput,
    Usage,
)
from core.models.registry import ModelSpec, ModeSpec
from core.money.budgets import Payer
from core.money.metering import Charge, Meter
from core.money.pricing import output_cost, price_sheet, token_cost
from core.tools.toolbox import ToolContext, ToolRegistry

log = logging.getLogger(__name__)

CUT_SHORT = "(My answer was cut short: the budget had no room for more.)"

MAX_IMAGE_TOKENS = 4_000
"""Input tokens a picture may cost at most (OpenAI's patch-based mini models bill up to about
3,800), so a budget reservation stays an upper bound."""


@dataclass(frozen=True)
class AssistantOptions:
    """Limits applied to every turn."""

    tool_rounds: int = 5
    max_message_chars: int = 32_000


@dataclass
class _TurnState:
    """One turn's choices and what it produced so far: text shown, usage to record."""

    message: IncomingMessage
    conversation: Conversation
    user_id: int
    mode: ModeSpec
    model: ModelSpec
    counter: TokenCounter
    sink: ReplySink
    last_message_id: int | None = None
    text: str = ""
    usage: list[UsageRecord] = field(default_factory=list)
    tools_used: list[str] = field(default_factory=list)
    pictures: dict[int, tuple[PreparedImage, ...]] = field(default_factory=dict)
    drawn: list[PreparedImage] = field(default_factory=list)
    spoken: VoiceNote | None = None
    cut_short: bool = False
    """A model call stopped at the output cap its budget allowed."""

    @property
    def charge(self) -> Charge:
        return Charge(
            Payer.of(self.message.sender, self.message.key), self.user_id, self.conversation.id
        )


_Body = Callable[[_TurnState], Awaitable[None]]


class Assistant:
    """Runs the turn use cases against the ports it is given."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        gateway: LLMGateway,
        choices: ConversationChoices,
        context: ContextBuilder,
        tools: ToolRegistry,
        meter: Meter,
        media: MediaSteps,
        turns: TurnRunner,
        clock: Clock,
        counters: TokenCounters,
        options: AssistantOptions,
        metrics: Metrics,
        lifecycle: ModelLifecycle,
        writes: DurableWrites,
        notices: AdminNotices,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._choices = choices
        self._context = context
        self._tools = tools
        self._meter = meter
        self._media = media
        self._turns = turns
        self._clock = clock
        self._counters = counters
        self._options = options
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._writes = writes
        self._notices = notices

    async def answer_message(self, message: IncomingMessage, sink: ReplySink) -> None:
        """Answer ``message``, emitting reply events to ``sink``; never raises for bad input
        or upstream failures, which become a ``ReplyFailed`` event."""
        if await self._refused(message, sink, need_text=True):
            return
        await self._turns.run(message.key, sink, lambda turn: self._watched(message, sink, turn))

    async def draw_image(self, message: IncomingMessage, sink: ReplySink) -> None:
        """``/image``: draw what ``message.text`` describes; the picture arrives as an
        ``ImageReady`` event, and the request and picture are kept in the conversation."""
        await self._drawing(message, sink, edit=False)

    async def edit_image(self, message: IncomingMessage, sink: ReplySink) -> None:
        """``/edit``: change the picture attached to ``message`` (else the newest picture in
        the conversation) as ``message.text`` asks."""
        await self._drawing(message, sink, edit=True)

    async def _drawing(self, message: IncomingMessage, sink: ReplySink, *, edit: bool) -> None:
        if await self._refused(message, sink, need_text=False):
            return

        async def body(state: _TurnState) -> None:
            await self._draw(state, edit=edit)

        await self._turns.run(
            message.key, sink, lambda turn: self._watched(message, sink, turn, body, speak=False)
        )

    async def _refused(self, message: IncomingMessage, sink: ReplySink, *, need_text: bool) -> bool:
        """Check what the user sent; a problem is told to them and nothing runs."""
        try:
            self._check(message, need_text=need_text)
        except SwitchboardError as exc:
            await sink.emit(ReplyFailed(user_message(exc)))
            return True
        return False

    def _check(self, message: IncomingMessage, *, need_text: bool) -> None:
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

    @logged_turn
    async def _watched(
        self,
        message: IncomingMessage,
        sink: ReplySink,
        turn: Turn,
        body: _Body | None = None,
        *,
        speak: bool = True,
    ) -> None:
        """Run the turn, reported to the metrics (in flight, first text, outcome)."""
        with watched_turn(self._metrics, message.key.channel, sink) as watched:
            await self._run(message, watched, turn, body, speak=speak)

    async def _run(
        self,
        message: IncomingMessage,
        sink: ReplySink,
        turn: Turn,
        body: _Body | None = None,
        *,
        speak: bool = True,
    ) -> None:
        state: _TurnState | None = None
        try:
            user_id = await self._store.ensure_user(message.sender)
            conversation = await self._choices.for_turn(message.key)
            mode, model = self._choices.resolve(conversation)
            counter = self._counters.for_encoding(model.encoding)
            state = _TurnState(message, conversation, user_id, mode, model, counter, sink)
            await (body or self._converse)(state)
        except asyncio.CancelledError:
            if not turn.stopped_by_request():
                raise
            await self._finish(state, cancelled=True)
            await sink.emit(ReplyFinished(state.text if state else "", cancelled=True))
            return
        except Exception as exc:
            if isinstance(exc, UpstreamError):
                self._metrics.upstream_error(error_kind(exc))
            if isinstance(exc, SwitchboardError):
                log.warning("turn in %s failed: %s", message.key, exc)
            else:
                log.exception("turn in %s failed unexpectedly", message.key)
            await self._finish(state, cancelled=False)
            try:
                await sink.emit(ReplyFailed(user_message(exc), state.text if state else ""))
            finally:
                # Only an admin can fix the bot's own settings: they are told (once an hour).
                if isinstance(exc, UpstreamMisconfigured):
                    await self._notices.misconfigured(exc)
            return
        await self._finish(state, cancelled=False)
        await sink.emit(ReplyFinished(state.text))
        if state.cut_short:
            await sink.emit(Notice(CUT_SHORT))
        if state.spoken is not None:
            await sink.emit(VoiceReady(state.spoken))
        elif speak and state.conversation.voice and state.text.strip():
            await self._speak(state)

    async def _converse(self, state: _TurnState) -> None:
        """A chat turn: hear and see what was attached, store the message, answer it."""
        message = state.message
        if is_talk(message, state.conversation, self._media) and not message.stored:
            await self._talk(state)
            return
        text = message.text if message.text.strip() else ""
        usage: list[UsageRecord] = []
        seen = Seen((), ())
        audio = [a for a in message.attachments if a.is_audio and not a.is_image]
        pictures = [a for a in message.attachments if a.is_image]
        if audio:
            try:
                heard = await self._media.hear(audio, state.charge, usage)
            except BaseException:
                state.usage.extend(usage)  # calls that returned were paid for
                raise
            await state.sink.emit(Transcribed(heard))
            text = f"{text.strip()}\n\n{heard}" if text else heard
        if pictures:
            seen = await self._media.see(pictures)
            state.model = self._choices.registry.vision_model(state.model)
            if "vision" not in state.model.capabilities:
                raise UserInputError("None of this bot's models can look at pictures.")
            state.counter = self._counters.for_encoding(state.model.encoding)
            if not text:
                text = f"What is in {'this picture' if len(pictures) == 1 else 'these pictures'}?"
        if len(text) > self._options.max_message_chars:
            raise UserInputError(
                f"That message is too long ({len(text):,} characters); the limit is "
                f"{self._options.max_message_chars:,}."
            )
        if message.stored:
            # A turn resumed after a restart: the question is already the newest message.
            state.last_message_id = state.conversation.last_message_id
            await self._generate(state)
            return
        stored = await self._store.add_message(
            state.conversation.id,
            NewMessage(
                Role.USER,
                text,
                state.counter.count(text) + IMAGE_TOKENS * len(seen.kept),
                author_id=state.user_id,
                platform_message_id=message.platform_message_id,
                images=seen.kept,
                turn_id=message.turn_id,
            ),
            usage,
        )
        self._metrics.usage(usage)
        self._context.remember(stored, state.conversation.last_message_id)
        state.last_message_id = stored.id
        if seen.full:
            state.pictures[stored.id] = seen.full
        await self._generate(state)

    async def _talk(self, state: _TurnState) -> None:
        """``/voice talk``: the voice note answered voice-to-voice by a realtime model."""
        talked = await talk_by_voice(
            state.message,
            media=self._media,
            store=self._store,
            conversation=state.conversation,
            instructions=state.mode.system_prompt.replace(
                "{date}", self._clock.now().date().isoformat()
            ),
            author_id=state.user_id,
            counter=state.counter,
            charge=state.charge,
            sink=state.sink,
            usage=state.usage,
        )
        self._context.remember(talked.stored, state.conversation.last_message_id)
        state.last_message_id = talked.stored.id
        state.text, state.spoken = talked.answer, talked.note

    async def _draw(self, state: _TurnState, *, edit: bool) -> None:
        """``/image`` and ``/edit``: the prompt and the picture are kept in history."""
        message = state.message
        source: PreparedImage | None = None
        if edit:
            pictures = [a for a in message.attachments if a.is_image]
            if pictures:
                source = await self._media.picture(pictures[0])
            else:
                source = await self._store.latest_image(state.conversation.id)
            if source is None:
                raise UserInputError(
                    "Send the picture to edit with /edit in its caption, or reply to it "
                    "with /edit and what to change."
                )
        picture, kept, record = await self._media.draw(message.text, state.charge, source)
        await state.sink.emit(ImageReady(picture, picture.revised_prompt))
        prompt = message.text.strip()
        request = NewMessage(
            Role.USER,
            f"/{'edit' if edit else 'image'} {prompt}",
            state.counter.count(prompt),
            author_id=state.user_id,
            platform_message_id=message.platform_message_id,
            turn_id=message.turn_id,
        )
        described = picture.revised_prompt or prompt
        answer = f"(I drew a picture: {described})"
        if message.stored:
            stored_id = state.conversation.last_message_id
        else:
            stored = await self._store.add_message(state.conversation.id, request)
            self._context.remember(stored, state.conversation.last_message_id)
            stored_id = stored.id
        drawn = await asyncio.shield(
            self._writes.add_message(
                state.conversation.id,
                NewMessage(
                    Role.ASSISTANT,
                    answer,
                    state.counter.count(answer),
                    meta={"image_model": record.model},
                    images=(kept,),
                    turn_id=message.turn_id,
                ),
                [record],
            )
        )
        self._metrics.usage([record])
        if drawn is not None:
            self._context.remember(drawn, stored_id)

    async def _speak(self, state: _TurnState) -> None:
        """Also say the reply aloud (``/voice on``); a failure here costs only the voice."""
        usage: list[UsageRecord] = []
        try:
            note = await self._media.speak(state.text, state.charge, usage)
        except SwitchboardError as exc:
            log.warning("speaking the reply in %s failed: %s", state.conversation.key, exc)
            await state.sink.emit(Notice(f"I couldn't say that aloud: {user_message(exc)}"))
            return
        finally:
            # Shielded: what was spoken was paid for, even if the reply is stopped now.
            await asyncio.shield(self._writes.record_usage(usage))
            self._metrics.usage(usage)
        await state.sink.emit(VoiceReady(note))

    async def _generate(self, state: _TurnState) -> None:
        model = state.model
        mode = state.mode
        instructions = mode.system_prompt.replace("{date}", self._clock.now().date().isoformat())
        tools = self._tools.schemas(mode.tools) if model.supports_tools else []
        budget = self._context.budget(model, state.counter, instructions, tools)
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

    async def _history(self, state: _TurnState, budget: int) -> tuple[list[ChatTurn], int]:
        return await self._context.history(
            state.conversation.id, state.last_message_id, budget, state.model, state.pictures
        )

    async def _run_tool(self, call: ToolCall, state: _TurnState) -> tuple[ToolOutput, bool]:
        context = ToolContext(
            key=state.message.key,
            caller=state.message.sender,
            charge=state.charge,
            emit=state.sink.emit,
            usage=state.usage,
            images=state.drawn,
        )
        return await self._tools.run(call, context)

    async def _call(self, request: LLMRequest, state: _TurnState) -> Completion:
        """Call the model, or its successor once it is retired or the API no longer has it
        (the conversations on it move along); the turn is answered either way."""
        models = self._choices.registry.models
        model = await self._lifecycle.use(models, request.model, self._store.replace_model)
        shown = len(state.text)
        try:
            state.model = model
            return await self._call_model(replace(request, model=model), state)
        except ModelNotFound:
            if len(state.text) != shown:
                raise  # refused mid-answer: a retry would repeat what was shown
            self._lifecycle.refused(model.id)
            successor = await self._lifecycle.use(models, model, self._store.replace_model)
            if successor is model:
                raise
            state.model = successor
            return await self._call_model(replace(request, model=successor), state)

    async def _call_model(self, request: LLMRequest, state: _TurnState) -> Completion:
        # Held before the call: the input at most, and as much output as the budgets' money
        # left pays for, to which the call is then capped; if not even a short answer fits,
        # no call is made.
        most = request.max_output_tokens or request.model.max_output_tokens
        cost = output_cost(request.model.prices, _input_bound(request, state.counter))
        completion: Completion | None = None
        async with self._meter.reserved_up_to(
            state.charge.payer, cost, most, MIN_OUTPUT_TOKENS, "this message"
        ) as allowed:
            bill = allowed.bill
            if allowed.units is not None:
                request = replace(request, max_output_tokens=allowed.units)
            streamed: list[str] = []
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
                    self._charge(request, state, completion, "".join(streamed), bill.add)
        if completion is None:
            raise UpstreamUnavailable("the model stream ended without completing")
        if allowed.units is not None and allowed.units < most:
            state.cut_short |= _stopped_at(completion, allowed.units)
        return completion

    def _charge(
        self,
        request: LLMRequest,
        state: _TurnState,
        completion: Completion | None,
        streamed: str,
        add: Callable[[int], None],
    ) -> None:
        reported = completion.usage if completion else None
        usage = reported or _estimate(request, state.counter, streamed)
        cost = token_cost(request.model.prices, usage)
        add(cost)
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
            turn_id=state.message.turn_id,
        )
        # Shielded so that a shutdown arriving now cannot lose a reply the user has seen;
        # a database that stays away gets it later, from the spool.
        stored = await asyncio.shield(
            self._writes.add_message(state.conversation.id, reply, state.usage)
        )
        self._metrics.usage(state.usage)
        if stored is not None:
            self._context.remember(stored, state.last_message_id)


def _input_bound(request: LLMRequest, counter: TokenCounter) -> int:
    """A call's input tokens at most, all uncached: its prompt as counted here (the
    estimating counter errs high), each message's framing, every picture at the most one
    can cost, and the tools on offer."""
    prompt = counter.count(request.instructions) + MESSAGE_OVERHEAD
    prompt += sum(
        MESSAGE_OVERHEAD
        + (
            counter.count(item.text) + MAX_IMAGE_TOKENS * len(item.images)
            if isinstance(item, ChatTurn)
            else counter.count(str(item))
        )
        for item in request.items
    )
    prompt += sum(
        MESSAGE_OVERHEAD
        + counter.count(tool.name)
        + counter.count(tool.description)
        + counter.count(json.dumps(tool.parameters))
        for tool in request.tools
    )
    return prompt


def _stopped_at(completion: Completion, cap: int) -> bool:
    """Whether the call produced as much as its cap allowed (so it was cut short)."""
    return completion.usage is not None and completion.usage.output_tokens >= cap


def _estimate(request: LLMRequest, counter: TokenCounter, text: str) -> Usage:
    """Usage counted locally when the API reported none (a stream cut short)."""
    prompt = counter.count(request.instructions) + sum(
        counter.count(item.text) + IMAGE_TOKENS * len(item.images)
        for item in request.items
        if isinstance(item, ChatTurn)
    )
    output = counter.count(text)
    if request.max_output_tokens:
        output = min(output, request.max_output_tokens)  # the API stops there
    return Usage(prompt, 0, output)
