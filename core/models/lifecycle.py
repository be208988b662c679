"""Model lifecycle: which registry entries are retiring or retired on a given day, and which
model a call goes to instead.

The functions here are pure: they take the day (from an injected clock) and the registry's
tables. ``ModelLifecycle`` adds what one process learns while running: the models the API
said do not exist, and which retirements were already announced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import date, timedelta
from enum import StrEnum
from typing import TypeVar

from core.clock import Clock
from core.models.registry import Entry, Registry

log = logging.getLogger(__name__)

WARNING_DAYS = 30
"""A model this many days or fewer before its shutdown is flagged."""
DEFAULT_HORIZON_DAYS = 90
"""A shipped default has no shutdown within this many days of the registry's check."""

_E = TypeVar("_E", bound=Entry)

RetiredHook = Callable[[str, str], Awaitable[None]]
"""Told ``(old, new)`` once per retired model: where admins will be notified."""
MoveConversations = Callable[[str, str], Awaitable[int]]
"""Moves every conversation that chose ``old`` to ``new``; returns how many moved."""


class Status(StrEnum):
    """Where a model is in its life on a given day."""

    CURRENT = "current"
    RETIRING = "retiring"
    """Shuts down within ``WARNING_DAYS``."""
    RETIRED = "retired"
    """Its shutdown day has come: calls go to its successor."""


def status(entry: Entry, today: date) -> Status:
    """``entry``'s status on ``today``; a model is retired from its shutdown day on."""
    if entry.shutdown is None:
        return Status.CURRENT
    if entry.shutdown <= today:
        return Status.RETIRED
    if entry.shutdown - today <= timedelta(days=WARNING_DAYS):
        return Status.RETIRING
    return Status.CURRENT


def shuts_down_within(entry: Entry, start: date, days: int) -> bool:
    """Whether ``entry`` shuts down on or before ``days`` days after ``start``."""
    return entry.shutdown is not None and entry.shutdown <= start + timedelta(days=days)


def live(table: Mapping[str, _E], entry: _E, today: date, gone: Collection[str] = ()) -> _E:
    """The model a call for ``entry`` goes to on ``today``: ``entry`` itself, or the first
    model down its successor chain that is neither retired nor ``gone`` (refused by the API).
    Where the chain ends in a model the table does not list, the last listed one is kept:
    the call then fails with the provider's own error rather than a guess."""
    seen = {entry.id}
    current = entry
    while status(current, today) is Status.RETIRED or current.id in gone:
        nxt = table.get(current.successor) if current.successor else None
        if nxt is None or nxt.id in seen:
            return current
        seen.add(nxt.id)
        current = nxt
    return current


def mark(entry: Entry, today: date) -> str:
    """A short note on ``entry``'s lifecycle for lists (``/model``), empty when current."""
    state = status(entry, today)
    if state is Status.RETIRED:
        return f"retired, now {entry.successor}" if entry.successor else "retired"
    if state is Status.RETIRING:
        assert entry.shutdown is not None
        return f"shuts down {entry.shutdown.isoformat()}"
    return ""


def offered(table: Mapping[str, _E], today: date) -> list[tuple[_E, str]]:
    """The entries worth choosing on ``today``, each with its ``mark``; retired ones are
    left out (their calls go to a successor anyway)."""
    return [
        (entry, mark(entry, today))
        for entry in table.values()
        if status(entry, today) is not Status.RETIRED
    ]


def uses(
    registry: Registry, chosen: Mapping[str, str] | None = None
) -> dict[tuple[str, str], list[str]]:
    """What this configuration uses each model for, by (table role, model id): each role's
    default, or the id ``chosen`` for that role in settings, and ``mode <id>`` for models
    that modes name."""
    found: dict[tuple[str, str], list[str]] = {}
    for role, name in {**registry.defaults(), **(chosen or {})}.items():
        found.setdefault(("chat" if role == "vision" else role, name), []).append(role)
    for mode in registry.modes.values():
        if mode.model:
            found.setdefault(("chat", mode.model), []).append(f"mode {mode.id}")
    return found


def warnings(registry: Registry, today: date, chosen: Mapping[str, str] | None = None) -> list[str]:
    """One line per model in use that is retiring or retired on ``today``, for the log."""
    tables = registry.tables()
    lines: list[str] = []
    for (role, name), used_for in uses(registry, chosen).items():
        table = tables[role]
        entry = table.get(name)
        if entry is None or entry.shutdown is None:
            continue
        state = status(entry, today)
        if state is Status.CURRENT:
            continue
        if entry.successor is None:
            then = "it has no successor"
        elif entry.successor not in table:
            then = f"its successor {entry.successor} is not in the registry"
        else:
            then = f"calls go to its successor {entry.successor}"
        what = f"model {entry.id} ({', '.join(used_for)})"
        if state is Status.RETIRED:
            lines.append(f"{what} was shut down on {entry.shutdown.isoformat()}; {then}")
        else:
            days = (entry.shutdown - today).days
            lines.append(
                f"{what} shuts down on {entry.shutdown.isoformat()}, in "
                f"{days} day{'' if days == 1 else 's'}; then {then}"
            )
    return lines


class ModelLifecycle:
    """Which model each call uses, by the registry's dates and what the API said.

    ``on_retired`` is called once per retired model with its id and its successor's: the
    hook for telling the admins (a WARNING log line is always written).
    """

    def __init__(self, clock: Clock, *, on_retired: RetiredHook | None = None) -> None:
        self._clock = clock
        self._on_retired = on_retired
        self._gone: set[str] = set()
        self._announced: set[str] = set()

    def today(self) -> date:
        """The clock's current day (UTC)."""
        return self._clock.now().date()

    def refused(self, model_id: str) -> None:
        """The API answered that ``model_id`` does not exist: use its successor from now on."""
        self._gone.add(model_id)

    async def use(
        self, table: Mapping[str, _E], entry: _E, move: MoveConversations | None = None
    ) -> _E:
        """The model to call for ``entry`` now (``entry`` or a successor). The first time a
        model is replaced, ``move`` moves the conversations that chose it, the retirement
        is logged, and ``on_retired`` is told."""
        chosen = live(table, entry, self.today(), self._gone)
        if chosen is not entry and entry.id not in self._announced:
            self._announced.add(entry.id)
            try:
                moved = await move(entry.id, chosen.id) if move is not None else 0
            except BaseException:
                self._announced.discard(entry.id)  # the next call tries again
                raise
            log.warning(
                "model %s is retired or no longer offered; its calls now go to %s "
                "(%d conversations moved)",
                entry.id,
                chosen.id,
                moved,
            )
            if self._on_retired is not None:
                await self._on_retired(entry.id, chosen.id)
        return chosen
