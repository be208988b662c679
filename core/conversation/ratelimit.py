"""A per-user message rate limit, so one person cannot flood the bot (and its budget)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
PRUNE_AT = 10_000


class MessageRateLimit:
    """At most ``per_minute`` messages per user in any 60-second window (0: no limit).

    Kept in the process: with several processes, each allows its own share.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}

    def wait_needed(self, user: str) -> float:
        """Take a slot for ``user`` and return 0, or return the seconds until one is free."""
        if self._per_minute <= 0:
            return 0.0
        now = self._clock()
        if len(self._recent) >= PRUNE_AT:
            self._recent = {
                who: times
                for who, times in self._recent.items()
                if times and times[-1] > now - WINDOW_SECONDS
            }
        times = self._recent.setdefault(user, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) >= self._per_minute:
            return times[0] + WINDOW_SECONDS - now
        times.append(now)
        return 0.0
