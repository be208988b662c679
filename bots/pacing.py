"""Platform flood limits as a pacer, so the bot never trips them instead of recovering.

Telegram allows about one message a second per chat with short bursts, twenty a minute per
group and thirty a second overall; Slack about one a second per channel. Edits count like
messages. The pacer models each limit the way the platform counts it: a token bucket per
chat (a sustained rate and a burst), for groups also a one-minute window, and a one-second
window over all chats.

A call is counted from the moment its slot is taken until its answer arrives, and then as
made at the moment the answer arrived: the only instant surely no earlier than when the
platform counted it, however long the request waited for the CPU, a connection or the
network on its way. So the pacer's count is never below the platform's, whatever happens
between the slot and the write (``call``/``try_call``). ``acquire`` counts a call the moment
its slot is taken, for callers that write at once and do not report the answer.

A 429 feeds back into the chat's bucket (no call there for ``retry_after`` seconds); 429s
in two different chats within a second pause every chat, since that is the limit they share.

Optional calls (the progressive edits of a streaming reply) ask whether they may go now and
are skipped if not; required calls (first and final messages) wait their turn, first come
first served, and optional calls give way to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass

PRUNE_AT = 4096
GROUP_WINDOW_SECONDS = 60.0
OVERALL_WINDOW_SECONDS = 1.0
SHARED_LIMIT_SECONDS = 1.0  # 429s in two chats this close together: the overall limit
OPTIONAL_RETRY_SECONDS = 0.05
RETRY_BACKOFF = 0.25  # seconds before the first retry of a transient failure; doubles
RETRY_BACKOFF_MAX = 4.0


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (from 0) of a platform call that
    failed transiently (a 5xx, a dropped connection, a timeout): doubling, with jitter so
    that replies failing together do not retry together."""
    base = min(RETRY_BACKOFF * 2.0**attempt, RETRY_BACKOFF_MAX)
    return base * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class FloodLimits:
    """The platform's limits; the defaults are Telegram's public ones (one message a second
    per chat with bursts of three, twenty a minute per group, thirty a second overall).
    ``math.inf`` lifts a rate (a self-hosted Bot API server, a benchmark)."""

    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: float = 20.0
    group_burst: int = 3
    overall_per_second: float = 30.0


class TokenBucket:
    """``burst`` calls at once, refilled at ``rate`` a second: the generic cell rate
    algorithm, with calls under way counted as if made now (they are, at the latest, made
    when their answer arrives)."""

    def __init__(self, rate: float, burst: int) -> None:
        self._interval = 0.0 if math.isinf(rate) else 1.0 / rate
        self._tolerance = (max(burst, 1) - 1) * self._interval
        self._tat = -math.inf  # theoretical arrival time of the next call
        self._blocked_until = -math.inf
        self.pending = 0

    def delay(self, now: float, reserve: int = 0) -> float:
        """Seconds until one more call fits (0: now), leaving ``reserve`` calls' room."""
        blocked = self._blocked_until - now
        if not self._interval:
            return max(0.0, blocked)
        tat = max(self._tat, now) + (self.pending + reserve) * self._interval
        return max(0.0, tat - self._tolerance - now, blocked)

    def record(self, at: float) -> None:
        """A call was made at ``at`` (no earlier than any call recorded before)."""
        self._tat = max(self._tat, at) + self._interval

    def block(self, until: float) -> None:
        """No call before ``until``, and then one at a time at the sustained rate."""
        self._blocked_until = max(self._blocked_until, until)
        self._tat = max(self._tat, until + self._tolerance)

    def idle(self, now: float) -> bool:
        """Full again, with nothing under way: forgetting it changes nothing."""
        return not self.pending and self._tat <= now and self._blocked_until <= now


class Window:
    """At most ``count`` calls in any ``seconds``; calls under way count as made now."""

    def __init__(self, count: float, seconds: float) -> None:
        self._count = count
        self._seconds = seconds
        self._times: deque[float] = deque()
        self.pending = 0

    def delay(self, now: float, reserve: int = 0) -> float:
        """Seconds until one more call fits (0: now), leaving ``reserve`` calls' room."""
        if math.isinf(self._count):
            return 0.0
        times = self._times
        while times and times[0] <= now - self._seconds:
            times.popleft()
        excess = len(times) + self.pending + reserve + 1 - self._count
        if excess <= 0:
            return 0.0
        if excess > len(times):
            # Only calls still under way can make room, a window after their answers.
            return self._seconds
        return times[math.ceil(excess) - 1] + self._seconds - now

    def record(self, at: float) -> None:
        """A call was made at ``at``."""
        if not math.isinf(self._count):
            self._times.append(at)

    def room(self, now: float) -> float:
        """How many more calls fit now."""
        if math.isinf(self._count):
            return math.inf
        times = self._times
        while times and times[0] <= now - self._seconds:
            times.popleft()
        return self._count - len(times) - self.pending

    def idle(self, now: float) -> bool:
        """Nothing in the window and nothing under way."""
        return not self.pending and (not self._times or self._times[-1] <= now - self._seconds)


class _Place:
    """One chat's limits: its bucket, a group's minute window, a 429's block."""

    def __init__(self, limits: FloodLimits, group: bool) -> None:
        if group:
            self.bucket = TokenBucket(limits.group_per_minute / 60, limits.group_burst)
            self.window: Window | None = Window(limits.group_per_minute, GROUP_WINDOW_SECONDS)
            burst = limits.group_burst
        else:
            self.bucket = TokenBucket(limits.chat_per_second, limits.chat_burst)
            self.window = None
            burst = limits.chat_burst
        # Optional calls leave room for one required call (a reply's final message), so that
        # progress edits never make it wait; with no burst to share there is no such room.
        self.reserve = 1 if burst > 1 else 0
        self.required_waiting = 0

    def delay(self, now: float, *, optional: bool = False) -> float:
        reserve = self.reserve if optional else 0
        window = self.window.delay(now, reserve) if self.window is not None else 0.0
        return max(self.bucket.delay(now, reserve), window)

    def take(self) -> None:
        self.bucket.pending += 1
        if self.window is not None:
            self.window.pending += 1

    def settle(self, at: float) -> None:
        self.bucket.pending -= 1
        self.bucket.record(at)
        if self.window is not None:
            self.window.pending -= 1
            self.window.record(at)

    def idle(self, now: float) -> bool:
        return (
            not self.required_waiting
            and self.bucket.idle(now)
            and (self.window is None or self.window.idle(now))
        )


class Slot:
    """A call's place in the limits, from the slot until ``done``: the answer (or an error)
    came back."""

    __slots__ = ("_chat", "_flood", "_open")

    def __init__(self, flood: FloodControl, chat: Hashable) -> None:
        self._flood = flood
        self._chat = chat
        self._open = True

    def done(self) -> None:
        """The call's answer arrived: it counts as made now."""
        if self._open:
            self._open = False
            self._flood._settle(self._chat)


class FloodControl:
    """Per-chat and overall pacing of calls that send or edit messages."""

    def __init__(
        self,
        limits: FloodLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_throttled: Callable[[], None] | None = None,
    ) -> None:
        self._limits = limits or FloodLimits()
        self._clock = clock
        self._on_throttled = on_throttled
        self._places: dict[Hashable, _Place] = {}
        self._overall = Window(self._limits.overall_per_second, OVERALL_WINDOW_SECONDS)
        self._paused_until = 0.0
        self._queue: deque[asyncio.Future[None]] = deque()  # required calls, first come first
        self._coming = 0  # required calls about to ask (first messages in their moment)
        self._last_429: tuple[Hashable, float] | None = None

    def _place(self, chat: Hashable, group: bool) -> _Place:
        place = self._places.get(chat)
        if place is None:
            if len(self._places) >= PRUNE_AT:
                # Chats back to a full bucket need no entry: memory stays bounded.
                now = self._clock()
                self._places = {c: p for c, p in self._places.items() if not p.idle(now)}
            place = self._places[chat] = _Place(self._limits, group)
        return place

    def _overall_delay(self, now: float) -> float:
        return max(self._overall.delay(now), self._paused_until - now)

    def ready_in(self, chat: Hashable, *, group: bool = False, optional: bool = False) -> float:
        """Seconds until ``chat`` may send again (0 if now); an ``optional`` call waits
        until it leaves room in the chat's burst for a required one."""
        now = self._clock()
        place = self._place(chat, group)
        return max(place.delay(now, optional=optional), self._overall_delay(now))

    def try_call(self, chat: Hashable, *, group: bool, optional: bool = False) -> Slot | None:
        """A slot now if one is free for ``chat`` and overall, else None; never waits.

        ``optional`` calls (progress edits) leave room in the overall limit for the required
        calls waiting in ``slot`` or ``coming``, and in the chat's burst for one, so first
        and final messages never queue behind edits.
        """
        place = self._place(chat, group)
        now = self._clock()
        if optional and (
            place.required_waiting or self._overall.room(now) <= len(self._queue) + self._coming
        ):
            return None
        if place.delay(now, optional=optional) > 0 or self._overall_delay(now) > 0:
            return None
        return self._take(chat, place)

    def _take(self, chat: Hashable, place: _Place) -> Slot:
        place.take()
        self._overall.pending += 1
        return Slot(self, chat)

    def _settle(self, chat: Hashable) -> None:
        """A call's answer arrived: it counts as made now."""
        at = self._clock()
        self._overall.pending -= 1
        self._overall.record(at)
        place = self._places.get(chat)
        if place is not None:
            place.settle(at)

    async def slot(self, chat: Hashable, *, group: bool) -> Slot:
        """Wait for and take the next slot for ``chat``; other chats are not held up.

        A call first waits for its chat's limits, then in line with other chats' required
        calls for the overall one; whoever is first in line waits out the overall limit and
        hands over to the next when it has its slot.
        """
        place = self._place(chat, group)
        place.required_waiting += 1
        try:
            while True:
                delay = place.delay(self._clock())
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                turn = asyncio.get_running_loop().create_future()
                self._queue.append(turn)
                try:
                    if self._queue[0] is not turn:
                        await turn  # the one before hands over
                    await self._overall_free()
                    if place.delay(self._clock()) > 0:
                        continue  # another reply in this chat took its slot: wait again
                    return self._take(chat, place)
                finally:
                    self._leave(turn)
        finally:
            place.required_waiting -= 1

    async def _overall_free(self) -> None:
        """Wait until the overall limit has room (nothing signals it: it is time that frees
        the window, or the answer of a call under way, after which time must pass anyway)."""
        delay = self._overall_delay(self._clock())
        while delay > 0:
            await asyncio.sleep(delay)
            delay = self._overall_delay(self._clock())

    def _leave(self, turn: asyncio.Future[None]) -> None:
        """Out of the line; wake whoever is first now."""
        was_first = bool(self._queue) and self._queue[0] is turn
        with contextlib.suppress(ValueError):
            self._queue.remove(turn)
        if was_first and self._queue and not self._queue[0].done():
            self._queue[0].set_result(None)

    @contextlib.asynccontextmanager
    async def call(self, chat: Hashable, *, group: bool) -> AsyncIterator[None]:
        """Wait for a slot, make the call inside, and count it when it returns (or fails)."""
        slot = await self.slot(chat, group=group)
        try:
            yield
        finally:
            slot.done()

    async def acquire(self, chat: Hashable, *, group: bool) -> None:
        """Wait for a slot and count the call at once (for a call written right away)."""
        (await self.slot(chat, group=group)).done()

    def try_acquire(self, chat: Hashable, *, group: bool, optional: bool = False) -> bool:
        """Take a slot now if one is free and count the call at once; never waits."""
        slot = self.try_call(chat, group=group, optional=optional)
        if slot is None:
            return False
        slot.done()
        return True

    def coming(self, calls: int) -> None:
        """``calls`` more required calls (fewer, if negative) will soon ask for a slot:
        progress edits leave room for them."""
        self._coming += calls

    def throttled(self) -> None:
        """The platform answered 429 (reported to ``on_throttled``, for the metrics)."""
        if self._on_throttled is not None:
            self._on_throttled()

    def blocked(self, chat: Hashable, retry_after: float, *, group: bool = False) -> None:
        """The platform answered 429 for ``chat``: no calls to it for ``retry_after`` seconds,
        then one at a time; a 429 in another chat within a second pauses all chats too."""
        self.throttled()
        now = self._clock()
        self._place(chat, group).bucket.block(now + retry_after)
        last, self._last_429 = self._last_429, (chat, now)
        if last is not None and last[0] != chat and now - last[1] <= SHARED_LIMIT_SECONDS:
            self._paused_until = max(self._paused_until, now + retry_after)


class ProgressFlusher:
    """Keeps a shown message in step with a growing reply: one paced call at a time, each
    showing the latest state; calls the limits do not allow now are skipped, never queued.

    ``flush_once`` makes one call and returns False when there is nothing more to do for
    now; ``started`` says whether the reply already shows something: until it does, the call
    that shows it is required and waits its turn (not before ``first_after`` seconds from the
    first ``schedule``, so that a reply finished by then goes out as one message); after,
    calls are optional and yield to required ones. ``pending`` says cheaply whether there is
    anything new to show, so that no slot is taken for nothing. A call under way is never
    cancelled: the platform may have made the message already, and the reply must continue
    in it, so ``close`` waits for it.
    """

    def __init__(
        self,
        flood: FloodControl,
        place: Hashable,
        *,
        group: bool,
        flush_once: Callable[[], Awaitable[bool]],
        started: Callable[[], bool],
        pending: Callable[[], bool] = lambda: True,
        first_after: float = 0.0,
    ) -> None:
        self._flood = flood
        self._place = place
        self._group = group
        self._flush_once = flush_once
        self._started = started
        self._pending = pending
        self._first_after = first_after
        self._first_at: float | None = None
        self._announced = False  # the first message is announced to the pacer as coming
        self._task: asyncio.Task[None] | None = None
        self._calling = False
        self._closed = False

    def schedule(self) -> None:
        """Make sure a flush is under way or coming (nothing after ``close``)."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        loop = asyncio.get_running_loop()
        if self._first_at is None:
            self._first_at = loop.time() + self._first_after
            if not self._started():
                self._announce(True)
        self._task = loop.create_task(self._run())

    def _announce(self, coming: bool) -> None:
        """Tell the pacer that this reply's first message is coming (or no longer)."""
        if coming != self._announced:
            self._announced = coming
            self._flood.coming(1 if coming else -1)

    async def close(self) -> None:
        """Stop flushing: a pending wait is cancelled, a call under way is waited for."""
        self._closed = True
        self._announce(False)
        task = self._task
        if task is None or task.done():
            return
        if self._calling:
            await asyncio.wait([task])  # it stops after the call under way
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed and self._pending():
            if not self._started():
                # Short replies often finish within a moment: then they need one call only.
                if self._first_at is not None and (wait := self._first_at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                    continue
                # The first message is required: it waits its turn, and edits give way to it.
                self._announce(False)  # from now on it waits in the pacer's line
                slot = await self._flood.slot(self._place, group=self._group)
            else:
                delay = self._flood.ready_in(self._place, group=self._group, optional=True)
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                maybe = self._flood.try_call(self._place, group=self._group, optional=True)
                if maybe is None:
                    await asyncio.sleep(OPTIONAL_RETRY_SECONDS)
                    continue
                slot = maybe
            self._calling = True
            try:
                more = await self._flush_once()
            finally:
                self._calling = False
                slot.done()
            if not more:
                return
