"""Platform flood limits as a pacer, so the bot never trips them instead of recovering.

Telegram allows about one message a second per private chat, twenty a minute per group and
thirty a second overall; Slack about one a second per channel. Edits count like messages,
and a 429 binds only the chat or channel it names. The pacer hands out send times per chat
and overall; optional calls (the progressive edits of a streaming reply) ask whether they
may go now and are skipped if not, while required calls (final messages) wait their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

PRUNE_AT = 4096
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
    """Seconds between calls per chat (private or group), and calls per second overall;
    the defaults stay below Telegram's limits."""

    private_interval: float = 1.0
    group_interval: float = 3.0
    overall_per_second: int = 25


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
        self._chat_next: dict[Hashable, float] = {}
        self._recent: deque[float] = deque()  # times of the calls in the last second
        self._required_waiting = 0

    def _interval(self, group: bool) -> float:
        return self._limits.group_interval if group else self._limits.private_interval

    def try_acquire(self, chat_id: Hashable, *, group: bool, optional: bool = False) -> bool:
        """Take a slot now if one is free for ``chat_id`` and overall; never waits.

        ``optional`` calls (progress edits) yield to required calls waiting in ``acquire``,
        so first and final messages never queue behind other chats' edits.
        """
        if optional and self._required_waiting:
            return False
        now = self._clock()
        if self._chat_next.get(chat_id, 0.0) > now or self._overall_free_at(now) > now:
            return False
        if len(self._chat_next) >= PRUNE_AT:
            # Chats whose next slot lies in the past need no entry: memory stays bounded.
            self._chat_next = {chat: t for chat, t in self._chat_next.items() if t > now}
        self._chat_next[chat_id] = now + self._interval(group)
        self._recent.append(now)
        return True

    def ready_in(self, chat_id: Hashable) -> float:
        """Seconds until ``chat_id`` may send again (0 if now)."""
        now = self._clock()
        return max(self._chat_next.get(chat_id, 0.0), self._overall_free_at(now), now) - now

    async def acquire(self, chat_id: Hashable, *, group: bool) -> None:
        """Wait for and take the next slot for ``chat_id``; other chats are not held up."""
        self._required_waiting += 1
        try:
            while True:
                delay = self.ready_in(chat_id)
                if delay <= 0 and self.try_acquire(chat_id, group=group):
                    return
                await asyncio.sleep(max(delay, 0.001))
        finally:
            self._required_waiting -= 1

    def throttled(self) -> None:
        """The platform answered 429 (reported to ``on_throttled``, for the metrics)."""
        if self._on_throttled is not None:
            self._on_throttled()

    def blocked(self, chat_id: Hashable, retry_after: float) -> None:
        """The platform answered 429 for ``chat_id``: no calls to it for ``retry_after`` seconds."""
        self.throttled()
        until = self._clock() + retry_after
        self._chat_next[chat_id] = max(self._chat_next.get(chat_id, 0.0), until)

    def _overall_free_at(self, now: float) -> float:
        """When the next call fits the overall limit (calls per any one-second window)."""
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) < self._limits.overall_per_second:
            return now
        return self._recent[0] + 1.0


class ProgressFlusher:
    """Keeps a shown message in step with a growing reply: one paced call at a time, each
    showing the latest state; calls the limits do not allow now are skipped, never queued.

    ``flush_once`` makes one call and returns False when there is nothing more to do for
    now; ``started`` says whether the reply already shows something: until it does, the call
    that shows it is required and waits its turn; after, calls are optional and yield to
    required ones. A call under way is never cancelled: the platform may have made the
    message already, and the reply must continue in it, so ``close`` waits for it.
    """

    def __init__(
        self,
        flood: FloodControl,
        place: Hashable,
        *,
        group: bool,
        flush_once: Callable[[], Awaitable[bool]],
        started: Callable[[], bool],
    ) -> None:
        self._flood = flood
        self._place = place
        self._group = group
        self._flush_once = flush_once
        self._started = started
        self._task: asyncio.Task[None] | None = None
        self._calling = False
        self._closed = False

    def schedule(self) -> None:
        """Make sure a flush is under way or coming (nothing after ``close``)."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop flushing: a pending wait is cancelled, a call under way is waited for."""
        self._closed = True
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
        while not self._closed:
            if not self._started():
                # The first message is required: it waits its turn, and edits give way to it.
                await self._flood.acquire(self._place, group=self._group)
            else:
                delay = self._flood.ready_in(self._place)
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                if not self._flood.try_acquire(self._place, group=self._group, optional=True):
                    await asyncio.sleep(0.05)
                    continue
            self._calling = True
            try:
                if not await self._flush_once():
                    return
            finally:
                self._calling = False
