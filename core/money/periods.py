"""Budget periods (SPEC §6): the window of time a budget counts, reset at local midnight.

Windows are computed in the operator's timezone and expressed in UTC, so a local day may be
23 or 25 hours long and consecutive windows always meet exactly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Period(enum.StrEnum):
    """How often a budget starts again from zero."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Window:
    """The half-open span ``[start, end)`` of one budget period, kept in UTC; ``end`` is None
    for a total budget, which never resets."""

    start: datetime
    end: datetime | None

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        # Kept in UTC: aware datetimes sharing one tzinfo compare by wall clock, not instant.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.end is not None:
            _require_aware(self.end, "end")
            object.__setattr__(self, "end", self.end.astimezone(UTC))
            if self.end <= self.start:
                raise ValueError("a window must end after it starts")

    def contains(self, moment: datetime) -> bool:
        """Whether the aware ``moment`` falls inside this window."""
        _require_aware(moment, "moment")
        return self.start <= moment and (self.end is None or moment < self.end)


def window(period: Period, now: datetime, tz: ZoneInfo) -> Window:
    """The window of ``period`` that holds the aware instant ``now``, with resets in ``tz``.

    Days start at local midnight, weeks on Monday and months on the 1st. Where a clock change
    skips midnight, the day starts when the clock jumps; where midnight happens twice, at the
    first. Moments whose local date runs backwards after a reset (Newfoundland fell back at
    00:01 until 2010) stay in the newer period.
    """
    _require_aware(now, "now")
    if period is Period.TOTAL:
        return Window(EPOCH, None)
    first = _first_day(period, now.astimezone(tz).date())
    start, end = _day_start(first, tz), _day_start(_shift(period, first, 1), tz)
    while now >= end:
        first = _shift(period, first, 1)
        start, end = end, _day_start(_shift(period, first, 1), tz)
    return Window(start, end)


def describe_reset(window: Window, now: datetime, tz: ZoneInfo) -> str:
    """A short phrase saying when ``window`` resets, seen from ``now`` in ``tz``.

    For example ``resets at 00:00 UTC (in 3 h 12 min)`` or
    ``resets on Mon 1 Dec at 00:00 Europe/Berlin (in 2 days)``.
    """
    if window.end is None:
        return "never resets"
    _require_aware(now, "now")
    reset = window.end.astimezone(tz)
    left = window.end - now
    when = f"at {reset:%H:%M} {tz.key or reset.tzname()}"
    if left >= timedelta(days=1):
        when = f"on {_WEEKDAYS[reset.weekday()]} {reset.day} {_MONTHS[reset.month - 1]} {when}"
    return f"resets {when} ({_describe_wait(left)})"


def _describe_wait(left: timedelta) -> str:
    if left <= timedelta(0):
        return "now"
    if left >= timedelta(days=1):
        days = round(left / timedelta(days=1))
        return f"in {days} day{'s' if days > 1 else ''}"
    # Round up, so that a reset a few seconds away never reads as "in 0 min".
    hours, minutes = divmod(math.ceil(left / timedelta(minutes=1)), 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else [])
    return "in " + " ".join(parts)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _first_day(period: Period, day: date) -> date:
    """The local date on which the period holding ``day`` begins."""
    if period is Period.WEEKLY:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTHLY:
        return day.replace(day=1)
    return day


def _shift(period: Period, first: date, steps: int) -> date:
    """The first day of the period ``steps`` periods after the one starting on ``first``."""
    if period is Period.WEEKLY:
        return first + timedelta(weeks=steps)
    if period is Period.MONTHLY:
        year, month = divmod(first.year * 12 + first.month - 1 + steps, 12)
        return date(year, month + 1, 1)
    return first + timedelta(days=steps)


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant whose local date in ``tz`` is ``day`` or later, in UTC."""
    midnight = datetime.combine(day, time(), tzinfo=tz)
    first = midnight.astimezone(UTC)  # fold=0: the earlier of two midnights
    if first.astimezone(tz).replace(tzinfo=None) == midnight.replace(tzinfo=None):
        return first
    # Midnight falls in a gap: fold=0 reads it with the offset from before the jump (an instant
    # after the gap), fold=1 with the offset from after it (one before). The day begins at the
    # jump, which lies between them; tz offsets are whole seconds, so bisect in seconds.
    before = midnight.replace(fold=1).astimezone(UTC)
    naive_midnight = midnight.replace(tzinfo=None)
    low, high = 0, (first - before) // timedelta(seconds=1)
    while high - low > 1:
        middle = (low + high) // 2
        local = (before + timedelta(seconds=middle)).astimezone(tz)
        if local.replace(tzinfo=None) >= naive_midnight:
            high = middle
        else:
            low = middle
    return before + timedelta(seconds=high)
