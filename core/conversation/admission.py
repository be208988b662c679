"""Turns in the order they came: at most a few turns at a time do their work in this process
(the database's writes and the CPU around them); the others wait, earliest arrival first.

Without it a burst of turns advances together through each stage — every question is
stored before the first answer is — so all of them finish at about the same moment, after
the whole burst's work. With it the first turns finish first and their replies go out
while later ones are still being worked on.

A turn holds its place only while it works here: it lets go while it waits for the model
(``outside``: the API's time is not this process's; it gets a place back afterwards, still
by its arrival, so it goes before turns that came later), once its reply is ready to show
(``leave``: the platform's pacing may make the final message wait), and after
``hold_seconds`` in any case, so that no slow step (a picture being drawn, a tool) keeps
others waiting. A waiting turn is already recorded in the turn journal, so nothing is lost
if the process dies; ``/cancel`` and shutdown stop it like a running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from core.models.llm import LLMEvent, LLMGateway, LLMRequest


@dataclass(eq=False)
class _Place:
    """One turn's place: its arrival, and whether it holds one of the slots now."""

    admission: Admission
    arrival: int
    held: bool = False
    expiry: asyncio.TimerHandle | None = None


@dataclass(order=True)
class _Waiter:
    arrival: int
    ready: asyncio.Future[None] = field(compare=False)


_CURRENT: ContextVar[_Place | None] = ContextVar("admission_place", default=None)


class Admission:
    """At most ``limit`` turns working at once (0: no limit); the others wait, earliest
    arrival first. ``hold_seconds`` bounds how long one turn keeps a slot at a stretch."""

    def __init__(self, limit: int = 0, *, hold_seconds: float = 1.0) -> None:
        self._limit = limit
        self._hold_seconds = hold_seconds
        self._busy = 0
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    def arrival(self) -> int:
        """Take the next place in the arrival order (when a turn is handed to the runner)."""
        return next(self._arrivals)

    def working(self) -> int:
        """How many turns hold a slot now."""
        return self._busy

    def waiting(self) -> int:
        """How many turns wait for a slot now."""
        return sum(not w.ready.done() for w in self._waiting)

    async def admit(self, arrival: int) -> Admitted:
        """Wait for a slot (turns that arrived earlier first); the turn holds it inside
        the returned ``with`` block, unless it lets go sooner (``outside``, ``leave``, or
        after ``hold_seconds``). Cancelled while waiting: no slot is taken."""
        place = _Place(self, arrival)
        await self._take(place)
        return Admitted(place)

    async def _take(self, place: _Place) -> None:
        if self._limit <= 0:
            return
        if self._busy < self._limit:  # then nobody waits: a freed slot goes to a waiter first
            self._busy += 1
        else:
            waiter = _Waiter(place.arrival, asyncio.get_running_loop().create_future())
            heapq.heappush(self._waiting, waiter)
            try:
                await waiter.ready
            except asyncio.CancelledError:
                if waiter.ready.done() and not waiter.ready.cancelled():
                    self._hand_on()  # the slot was handed over just as it was cancelled
                raise
        place.held = True
        place.expiry = asyncio.get_running_loop().call_later(
            self._hold_seconds, self._let_go, place
        )

    def _let_go(self, place: _Place) -> None:
        if not place.held:
            return
        place.held = False
        if place.expiry is not None:
            place.expiry.cancel()
            place.expiry = None
        self._hand_on()

    def _hand_on(self) -> None:
        """A slot is free: give it to the earliest waiter still waiting, else keep it free."""
        while self._waiting:
            waiter = heapq.heappop(self._waiting)
            if not waiter.ready.done():
                waiter.ready.set_result(None)
                return
        self._busy -= 1


class Admitted:
    """A turn's slot while it runs: the ``with`` block makes it the current task's (for
    ``outside`` and ``leave``) and frees it at the end."""

    def __init__(self, place: _Place) -> None:
        self._place = place
        self._token: Token[_Place | None] | None = None

    def __enter__(self) -> None:
        self._token = _CURRENT.set(self._place)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        self._place.admission._let_go(self._place)


@contextlib.asynccontextmanager
async def outside() -> AsyncIterator[None]:
    """The current turn waits for something outside this process (the model's answer): its
    slot is free meanwhile, and taken back (by its arrival) when the block ends normally."""
    place = _CURRENT.get()
    if place is None or not place.held:
        yield
        return
    place.admission._let_go(place)
    yield
    await place.admission._take(place)


def leave() -> None:
    """The current turn's reply is ready to show: its slot is free from now on."""
    place = _CURRENT.get()
    if place is not None:
        place.admission._let_go(place)


class AdmittedGateway:
    """An ``LLMGateway`` whose streams are waited for ``outside`` the turn's slot."""

    def __init__(self, inner: LLMGateway) -> None:
        self._inner = inner

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        async with outside():
            async for event in self._inner.stream(request):
                yield event
