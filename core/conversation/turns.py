"""Running turns: one at a time per conversation, in the order their messages arrived, any
number across conversations, each stoppable by ``/cancel``, and stopped channel by channel at
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace

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


@dataclass(eq=False)
class _Place:
    """A turn's place in its conversation's line, and in the arrival order across them."""

    key: ConversationKey
    arrival: int
    ready: asyncio.Future[None]  # done once every place before it in the line is given up
    taken: bool = False  # a turn runs in it (``run``)
    given_up: bool = False


_RESERVED: ContextVar[_Place | None] = ContextVar("reserved_turn_place", default=None)

TurnBody = Callable[[Turn], Awaitable[None]]


class TurnRunner:
    """Orders turns per conversation and keeps track of them for ``/cancel`` and shutdown."""

    def __init__(self, admission: Admission | None = None) -> None:
        self._admission = admission or Admission()
        self._lines: dict[ConversationKey, deque[_Place]] = {}
        self._turns: dict[ConversationKey, Turn] = {}
        self._stopping: set[str] = set()

    @contextlib.contextmanager
    def reserved(self, key: ConversationKey) -> Iterator[None]:
        """Take ``key``'s next place in line at once, without waiting: a message that may
        become a turn calls it as soon as it is handed over, so that the work before its
        turn (recording it, downloading its files) cannot let a later message of the same
        conversation overtake it. The turn ``run`` for ``key`` inside the block takes this
        place; the place is given up when the block ends (if no turn ran in it: at once)."""
        place = self._reserve(key)
        token = _RESERVED.set(place)
        try:
            yield
        finally:
            _RESERVED.reset(token)
            self._give_up(place)

    async def run(self, key: ConversationKey, sink: ReplySink, body: TurnBody) -> None:
        """Run ``body`` as ``key``'s turn once the turns before it in ``key`` are done (its
        place taken with ``reserved``, else now); if ``key``'s channel is stopping by then,
        tell the user to send it again instead. Across conversations, turns work a few at a
        time, earliest first (``Admission``)."""
        place = _RESERVED.get()
        if place is None or place.key != key or place.taken or place.given_up:
            place = self._reserve(key)
        place.taken = True
        try:
            await place.ready
            if key.channel in self._stopping:
                await sink.emit(ReplyFailed(RESTARTING, postponed=True))
                return
            task = asyncio.current_task()
            assert task is not None
            turn = Turn(key, task)
            self._turns[key] = turn
            try:
                try:
                    admitted = await self._admission.admit(place.arrival)
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
            self._give_up(place)

    def _reserve(self, key: ConversationKey) -> _Place:
        """The last place in ``key``'s line (ready at once if the line was empty)."""
        place = _Place(key, self._admission.arrival(), asyncio.get_running_loop().create_future())
        line = self._lines.setdefault(key, deque())
        line.append(place)
        if len(line) == 1:
            place.ready.set_result(None)
        return place

    def _give_up(self, place: _Place) -> None:
        """Leave the line; if ``place`` was first, the next one's turn may begin."""
        if place.given_up:
            return
        place.given_up = True
        line = self._lines[place.key]
        first = line[0] is place
        line.remove(place)
        if not line:
            del self._lines[place.key]
        elif first and not line[0].ready.done():
            line[0].ready.set_result(None)

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
