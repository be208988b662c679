"""The metrics port: what the core and the channels report about their work (turns, first
text, usage, upstream errors, platform throttling, jobs), with a null default.

The Prometheus implementation is ``core.metrics_prometheus``; the operations server
(``bots.ops``) serves it. Use cases see only this port.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Protocol

from core.conversation.events import ReplyEvent, ReplyFailed, ReplyFinished, ReplySink, TextDelta
from core.conversation.store import UsageRecord
from core.errors import UpstreamError

Outcome = Literal["answered", "cancelled", "failed", "interrupted"]
"""How a turn ended: answered, stopped by ``/cancel`` or shutdown, failed with a reply
saying so, or interrupted without a final event (the task itself was cancelled)."""


class Metrics(Protocol):
    """Receives counts and timings; implementations must be cheap and never raise."""

    def turn_started(self, channel: str) -> None:
        """A turn began generating a reply in ``channel`` (turns in flight go up)."""

    def turn_ended(self, channel: str, outcome: Outcome, seconds: float) -> None:
        """A turn in ``channel`` ended after ``seconds`` (turns in flight go down)."""

    def first_text(self, channel: str, seconds: float) -> None:
        """A turn's first reply text appeared ``seconds`` after the turn began."""

    def usage(self, records: Sequence[UsageRecord]) -> None:
        """Usage rows were stored: tokens and cost by model."""

    def upstream_error(self, kind: str) -> None:
        """A turn failed because the model provider did (``kind`` from ``error_kind``)."""

    def platform_throttled(self, platform: str) -> None:
        """A chat platform answered 429 Too Many Requests."""

    def open_jobs(self, count: int) -> None:
        """How many batch and fine-tune jobs are open right now."""


class NullMetrics:
    """The ``Metrics`` port that records nothing: the default when none is wired."""

    def turn_started(self, channel: str) -> None:
        """Record nothing."""

    def turn_ended(self, channel: str, outcome: Outcome, seconds: float) -> None:
        """Record nothing."""

    def first_text(self, channel: str, seconds: float) -> None:
        """Record nothing."""

    def usage(self, records: Sequence[UsageRecord]) -> None:
        """Record nothing."""

    def upstream_error(self, kind: str) -> None:
        """Record nothing."""

    def platform_throttled(self, platform: str) -> None:
        """Record nothing."""

    def open_jobs(self, count: int) -> None:
        """Record nothing."""


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_kind(error: UpstreamError) -> str:
    """A stable label for an upstream error: its class in snake case (``rate_limited``,
    ``upstream_unavailable``), so new classes in ``core.errors`` get labels of their own."""
    return _CAMEL.sub("_", type(error).__name__).lower()


class _TurnWatch:
    """A ``ReplySink`` decorator that notes a turn's first text and how it ended."""

    def __init__(
        self, sink: ReplySink, metrics: Metrics, channel: str, clock: Callable[[], float]
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._channel = channel
        self._clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.outcome: Outcome = "interrupted"
        self._texted = False

    async def emit(self, event: ReplyEvent) -> None:
        """Note ``event``, then pass it on."""
        if isinstance(event, TextDelta) and not self._texted:
            self._texted = True
            self._metrics.first_text(self._channel, self._clock() - self.started)
        elif isinstance(event, ReplyFinished | ReplyFailed) and self.ended is None:
            self.ended = self._clock()
            if isinstance(event, ReplyFailed):
                self.outcome = "failed"
            else:
                self.outcome = "cancelled" if event.cancelled else "answered"
        await self._sink.emit(event)


@contextmanager
def watched_turn(
    metrics: Metrics,
    channel: str,
    sink: ReplySink,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ReplySink]:
    """Report one turn to ``metrics``: in flight for the block, its first text, and its
    outcome and duration (until its final event, so a spoken copy made afterwards does not
    count) when the block exits. Use the sink it yields for the turn's events."""
    watch = _TurnWatch(sink, metrics, channel, clock)
    metrics.turn_started(channel)
    try:
        yield watch
    finally:
        ended = watch.ended if watch.ended is not None else clock()
        metrics.turn_ended(channel, watch.outcome, ended - watch.started)
