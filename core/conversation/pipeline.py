"""The inbound pipeline: every channel hands each translated event to it, and it runs the
same named steps for all of them — follow-ups only in known threads, the access gate with
its one-time refusal, each event once (a message to answer is recorded as a durable turn in
the same transaction), the message rate limit, then command routing or a turn — and, at
shutdown, drains one channel's work without touching the others'."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from math import ceil
from typing import Protocol

from core.access.policy import AccessPolicy
from core.clock import Clock
from core.conversation import admission
from core.conversation.assistant import Assistant
from core.conversation.channel import Reply
from core.conversation.choices import ConversationChoices
from core.conversation.commands import ADMIN_COMMANDS, TURN_COMMANDS, Command, Commands
from core.conversation.events import (
    CommandAnswered,
    CommandReply,
    Refused,
    ReplyEvent,
    ReplyFailed,
    ReplyFinished,
)
from core.conversation.journal import LEASE_SECONDS, NewTurn, TurnJournal
from core.conversation.messages import ConversationKey, IncomingMessage
from core.conversation.ratelimit import MessageRateLimit
from core.conversation.spool import DurableWrites
from core.conversation.store import ConversationStore
from core.conversation.turns import RESTARTING, TurnRunner
from core.errors import StorageUnavailable, SwitchboardError, user_message
from core.media.ports import Attachment
from core.money.accounting import Caller

log = logging.getLogger(__name__)

REFUSAL = (
    "Sorry, this assistant is only available to approved users. "
    "Ask an admin to add you (your id: {user_id})."
)
TOO_FAST = "You're sending messages faster than I can answer. Please wait {seconds} s."


class Activity(enum.StrEnum):
    """What a reply shows while it is prepared (a channel's typing or upload indicator)."""

    WRITING = "writing"
    DRAWING = "drawing"


FetchFiles = Callable[[], Awaitable[tuple[Attachment, ...]]]


class FileCommands(Protocol):
    """Commands answered at once that take the files sent with them (``/batch``, ``/jobs``:
    ``core.jobs.commands``)."""

    names: frozenset[str]

    async def run(
        self,
        key: ConversationKey,
        command: Command,
        caller: Caller,
        attachments: Sequence[Attachment] = (),
    ) -> CommandReply:
        """Run ``command`` with ``attachments``; returns what to show."""


@dataclass(frozen=True)
class Delivery:
    """One platform event, translated by its channel for the pipeline.

    ``reply`` opens where the answer goes; it is called only once the message is accepted,
    so a redelivery or a refused sender never sees a typing indicator. ``command`` is the
    command the text carries for this bot (the channel knows its own syntax). ``fetch``
    downloads the files still to be fetched, after the gate. A ``follow_up`` (a thread
    reply without a mention) is answered only in a conversation the bot takes part in.
    ``threaded``: the message's key is a place whose threads are conversations.
    ``private``: only the sender sees the answer (a Slack slash command), so a refusal is
    given every time rather than once.
    """

    message: IncomingMessage
    reply: Callable[[Activity], Reply]
    command: Command | None = None
    fetch: FetchFiles | None = None
    follow_up: bool = False
    threaded: bool = False
    private: bool = False


class Delivered:
    """A ``Reply`` that remembers whether the reply's end was shown: the final event
    emitted without the platform refusing it. A platform failure there is logged and kept
    from the turn — the turn stays open and recovery delivers it later."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self.shown = False
        self.failure: str | None = None
        self.postponed = False

    async def start(self) -> None:
        await self._reply.start()

    async def emit(self, event: ReplyEvent) -> None:
        if not isinstance(event, ReplyFinished | ReplyFailed):
            await self._reply.emit(event)
            return
        admission.leave()  # the reply is ready: showing it may wait for the platform's pacing
        try:
            await self._reply.emit(event)
        except Exception:
            log.exception("the reply could not be shown; it stays open for another try")
            return
        self.shown = True
        if isinstance(event, ReplyFailed):
            self.failure = event.message
            self.postponed = event.postponed

    async def close(self) -> None:
        await self._reply.close()


class InboundPipeline:
    """Runs each delivery through the steps; never raises for what a user sent."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        journal: TurnJournal,
        writes: DurableWrites,
        clock: Clock,
        owner: str,
        access: AccessPolicy,
        rate: MessageRateLimit,
        commands: Commands,
        assistant: Assistant,
        choices: ConversationChoices,
        turns: TurnRunner,
        jobs: FileCommands | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._journal = journal
        self._writes = writes
        self._clock = clock
        self._owner = owner
        self._access = access
        self._rate = rate
        self._commands = commands
        self._assistant = assistant
        self._choices = choices
        self._turns = turns
        self._refused: set[str] = set()
        self._working: dict[str, set[asyncio.Task[object]]] = {}

    async def handle(self, delivery: Delivery) -> None:
        """Take one delivery through every step; the work is tracked for ``drain``."""
        message = delivery.message
        command = delivery.command
        with self.tracking(message.key.channel), self._in_line(delivery):
            if delivery.follow_up and not await self._choices.has_conversation(message.key):
                return  # a thread the bot was never asked into
            if not await self._let_in(delivery):
                return
            if command is not None and self._jobs is not None and command.name in self._jobs.names:
                if await self._first_delivery(message):
                    await self._file_command(delivery, command, self._jobs)
                return
            if command is not None and not (command.name in TURN_COMMANDS and command.args):
                if await self._first_delivery(message):
                    await self._answer_command(delivery, command)
                return
            turn_id = await self._accept(delivery)
            if turn_id is not None:
                await self._turn(delivery, replace(message, turn_id=turn_id))

    def _in_line(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        """A message to answer as a turn takes its conversation's place in line now, before
        the first wait: deliveries are handled concurrently, and the steps before a turn
        (recording it, fetching its files) take longer for some messages than for others,
        yet a conversation's turns must follow the order its messages arrived in. A
        command answered at once waits for no turn and takes no place."""
        command = delivery.command
        if command is None or (
            command.name in TURN_COMMANDS
            and bool(command.args)
            and (self._jobs is None or command.name not in self._jobs.names)
        ):
            return self._turns.reserved(delivery.message.key)
        return contextlib.nullcontext()

    def caller(self, message: IncomingMessage) -> Caller:
        """Who sent ``message``, and whether they are an admin."""
        return Caller(message.sender, self._access.is_admin(message.sender))

    async def drain(self, channel: str, grace: float) -> None:
        """Stop ``channel``: give its work in flight ``grace`` seconds to finish, then stop
        its replies (their text is kept and shown) and tell the messages still waiting to be
        sent again; other channels go on."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while working := self._working.get(channel):
                    await asyncio.wait(set(working))
        stopped = self._turns.stop(channel)
        if stopped:
            log.info("stopped %d %s replies in flight for shutdown", stopped, channel)
        if working := self._working.get(channel):
            await asyncio.wait(set(working), timeout=grace)

    async def _accept(self, delivery: Delivery) -> int | None:
        """Each event once, and a message to answer is a durable turn: recorded, leased to
        this process, with its event claimed, in one transaction; None for a redelivery."""
        message = delivery.message
        command = delivery.command
        turn = NewTurn(
            message.key,
            message.sender,
            command.args if command is not None else message.text,
            command.name if command is not None else None,
            has_files=delivery.fetch is not None or bool(message.attachments),
            platform_message_id=message.platform_message_id,
        )
        try:
            # A database away for a few seconds delays the answer; longer, the user is told.
            turn_id = await self._writes.attempt(
                lambda: self._journal.accept_turn(
                    turn, message.event_id, self._owner, self._lease_end()
                )
            )
        except Exception as exc:
            if isinstance(exc, StorageUnavailable):  # an outage: one line naming the cause
                log.error("could not record a %s message: %s", message.key.channel, exc)
            else:
                log.exception("could not record a %s message", message.key.channel)
            reply = delivery.reply(Activity.WRITING)
            try:
                await reply.emit(ReplyFailed(user_message(exc)))
            finally:
                await reply.close()
            return None
        if turn_id is None:
            log.info("dropping redelivered %s event %s", message.key.channel, message.event_id)
        return turn_id

    def _lease_end(self) -> datetime:
        return self._clock.now() + timedelta(seconds=LEASE_SECONDS)

    async def _first_delivery(self, message: IncomingMessage) -> bool:
        """Each event once: a redelivered event id is dropped before anything is shown."""
        if message.event_id is None:
            return True
        if await self._store.claim_event(message.key.channel, message.event_id):
            return True
        log.info("dropping redelivered %s event %s", message.key.channel, message.event_id)
        return False

    async def _let_in(self, delivery: Delivery) -> bool:
        """The access gate: anyone not allowed is told politely — once, unless only they see
        the answer — and logged."""
        sender = delivery.message.sender
        if self._access.is_allowed(sender):
            return True
        if delivery.private or sender.principal not in self._refused:
            self._refused.add(sender.principal)
            log.warning("refused %s (@%s): not allowed", sender.principal, sender.username)
            reply = delivery.reply(Activity.WRITING)
            try:
                await reply.emit(Refused(REFUSAL.format(user_id=sender.user_id)))
            finally:
                await reply.close()
        return False

    def _too_fast(self, message: IncomingMessage) -> str | None:
        """The message rate limit: the reason to refuse a turn, or None."""
        wait = self._rate.wait_needed(message.sender.principal)
        return TOO_FAST.format(seconds=ceil(wait)) if wait > 0 else None

    async def _answer_command(self, delivery: Delivery, command: Command) -> None:
        """A command runs and answers at once (``/image`` and ``/edit`` are turns)."""
        message = delivery.message
        answer = await self._commands.run(
            message.key, command, caller=self.caller(message), threaded=delivery.threaded
        )
        reply = delivery.reply(Activity.WRITING)
        try:
            await reply.emit(CommandAnswered(answer))
        finally:
            await reply.close()

    async def _file_command(
        self, delivery: Delivery, command: Command, handler: FileCommands
    ) -> None:
        """A command that takes the files sent with it (``/batch``) and answers at once;
        an admin command's files are fetched only for an admin (the command refuses others)."""
        message = delivery.message
        caller = self.caller(message)
        reply = delivery.reply(Activity.WRITING)
        try:
            attachments: Sequence[Attachment] = message.attachments
            if command.name in ADMIN_COMMANDS and not caller.admin:
                attachments = ()
            elif delivery.fetch is not None:
                try:
                    attachments = await delivery.fetch()
                except SwitchboardError as exc:
                    await reply.emit(ReplyFailed(user_message(exc)))
                    return
            answer = await handler.run(message.key, command, caller, attachments)
            await reply.emit(CommandAnswered(answer))
        finally:
            await reply.close()

    async def _turn(self, delivery: Delivery, message: IncomingMessage) -> None:
        """Answer a recorded turn; it is closed once its end was shown (delivered, or
        failed with the reason the user saw) and stays open for recovery otherwise."""
        command = delivery.command
        draw = command.name if command is not None else None
        if command is not None:
            message = replace(message, text=command.args)
        reply = Delivered(delivery.reply(Activity.DRAWING if draw else Activity.WRITING))
        await reply.start()
        try:
            problem = self._too_fast(message)
            if problem is not None:
                await reply.emit(ReplyFailed(problem))
                return
            if delivery.fetch is not None:
                try:
                    message = replace(message, attachments=await delivery.fetch())
                except SwitchboardError as exc:
                    await reply.emit(ReplyFailed(user_message(exc)))
                    return
            if self._turns.stopping(message.key.channel):
                await reply.emit(ReplyFailed(RESTARTING, postponed=True))
                return
            await self.answer(message, reply, draw)
        finally:
            await reply.close()
            assert message.turn_id is not None
            await self.close(message.turn_id, reply)

    async def answer(self, message: IncomingMessage, reply: Reply, draw: str | None) -> None:
        """Run ``message``'s turn (a drawing for ``/image`` and ``/edit``), renewing its
        lease while it runs.

        The renewal starts only once a third of the lease has passed: most turns are over
        long before, and a task per turn would cost them CPU for nothing."""
        renewing: list[asyncio.Task[None]] = []
        timer = None
        if message.turn_id is not None:
            turn_id = message.turn_id
            timer = asyncio.get_running_loop().call_later(
                LEASE_SECONDS / 3,
                lambda: renewing.append(asyncio.create_task(self._renew(turn_id))),
            )
        try:
            if draw == "edit":
                await self._assistant.edit_image(message, reply)
            elif draw == "image":
                await self._assistant.draw_image(message, reply)
            else:
                await self._assistant.answer_message(message, reply)
        finally:
            if timer is not None:
                timer.cancel()
            for task in renewing:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close(self, turn_id: int, reply: Delivered) -> None:
        """Close a turn whose end was shown; one that was not (the platform refused it,
        or the bot is restarting) is let go at once, for recovery to finish."""
        try:
            if reply.shown and not reply.postponed:
                await self._writes.close_turn(turn_id, failed=reply.failure)
            else:
                now = self._clock.now()
                await self._journal.lease_turn(turn_id, self._owner, now, now)
        except StorageUnavailable as exc:
            # The lease runs out by itself; recovery will look at the turn again.
            log.error("could not record how turn %d ended: %s", turn_id, exc)
        except Exception:
            log.exception("could not record how turn %d ended", turn_id)

    async def _renew(self, turn_id: int) -> None:
        """Renew the lease now, then every third of it, until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await self._journal.lease_turn(
                    turn_id, self._owner, self._lease_end(), self._clock.now()
                )
            await asyncio.sleep(LEASE_SECONDS / 3)

    @contextlib.contextmanager
    def tracking(self, channel: str) -> Iterator[None]:
        """Count the current task as ``channel``'s work in flight, so that ``drain`` waits
        for it: a channel wraps what it does before ``handle`` (gathering an album)."""
        task = asyncio.current_task()
        working = self._working.setdefault(channel, set())
        if task is None or task in working:
            yield
            return
        working.add(task)
        try:
            yield
        finally:
            working.discard(task)
