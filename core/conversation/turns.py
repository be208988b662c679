"""Running turns: one at a time per conversation, any number across conversations, each
stoppable by ``/cancel``, and stopped channel by channel at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from core.conversation.admission import Admission
from core.conversation.events import ReplyFailed, ReplyFinished, ReplySink
from core.conversation.messages import ConversationKey

RESTARTING = "I'm restarting; I'll answer this as soon as I'm back."


@dataclass
class Turn:
    """A reply in progress: its task, and whether ``/cancel`` (not shutdown of the whole
    process) asked it to stop, in which case what it generated is kept and shown."""

    key: ConversationKey
    task: asyncio.Task[object]
    cancel_requested: bool = False

    def stopped_by_request(self) -> bool:
        """Call in an ``except CancelledError``: True (and the cancellation absorbed) when
        the stop was asked for with ``cancel``; False when the cancellation must propagate."""
        if not self.cancel_requested:
            return False
        self.task.uncancel()
        return True


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


TurnBody = Callable[[Turn], Awaitable[None]]


class TurnRunner:
    """Orders turns per conversation and keeps track of them for ``/cancel`` and shutdown."""

    def __init__(self, admission: Admission | None = None) -> None:
        self._admission = admission or Admission()
        self._slots: dict[ConversationKey, _Slot] = {}
        self._turns: dict[ConversationKey, Turn] = {}
        self._stopping: set[str] = set()

    async def run(self, key: ConversationKey, sink: ReplySink, body: TurnBody) -> None:
        """Run ``body`` as ``key``'s turn once the turns before it in ``key`` are done; if
        ``key``'s channel is stopping by then, tell the user to send it again instead.
        Across conversations, turns work a few at a time, earliest first (``Admission``)."""
        arrival = self._admission.arrival()
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                if key.channel in self._stopping:
                    await sink.emit(ReplyFailed(RESTARTING, postponed=True))
                    return
                task = asyncio.current_task()
                assert task is not None
                turn = Turn(key, task)
                self._turns[key] = turn
                try:
                    try:
                        admitted = await self._admission.admit(arrival)
                    except asyncio.CancelledError:
                        if not turn.stopped_by_request():
                            raise
                        # Stopped before it began: nothing was generated or stored.
                        if key.channel in self._stopping:
                            await sink.emit(ReplyFailed(RESTARTING, postponed=True))
                        else:
                            await sink.emit(ReplyFinished("", cancelled=True))
                        return
                    with admitted:
                        await body(turn)
                finally:
                    del self._turns[key]
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]

    def stopping(self, channel: str) -> bool:
        """Whether ``channel`` is shutting down (new messages get a "send it again")."""
        return channel in self._stopping

    def is_busy(self, key: ConversationKey) -> bool:
        """Whether a reply is being generated for ``key``."""
        return key in self._turns

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

    def stop(self, channel: str) -> int:
        """Stop ``channel``'s replies in progress (their text is kept) and refuse its
        messages still waiting for their turn; other channels go on. Returns how many
        replies were stopped."""
        self._stopping.add(channel)
        return sum(self.cancel(key) for key in list(self._turns) if key.channel == channel)
