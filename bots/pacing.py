"""Platform flood limits as a pacer, so the bot never trips them instead of recovering.

Telegram allows about one message a second per private chat, twenty a minute per group and
thirty a second overall; Slack about one a second per channel. Edits count like messages,
and a 429 binds only the chat or channel it names. The pacer hands out send times per chat
and overall; optional calls (the progressive edits of a streaming reply) ask whether they
may go now and are skipped if not, while required calls (final messages) wait their turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

PRUNE_AT = 4096


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
    ) -> None:
        self._limits = limits or FloodLimits()
        self._clock = clock
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

    def blocked(self, chat_id: Hashable, retry_after: float) -> None:
        """The platform answered 429 for ``chat_id``: no calls to it for ``retry_after`` seconds."""
        until = self._clock() + retry_after
        self._chat_next[chat_id] = max(self._chat_next.get(chat_id, 0.0), until)

    def _overall_free_at(self, now: float) -> float:
        """When the next call fits the overall limit (calls per any one-second window)."""
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) < self._limits.overall_per_second:
            return now
        return self._recent[0] + 1.0
