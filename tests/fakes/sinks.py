"""A reply sink that records every event, for asserting what a channel would have shown."""

from __future__ import annotations

import asyncio

from core.conversation.events import (
    ReplyEvent,
    ReplyFailed,
    ReplyFinished,
    TextDelta,
    ToolFinished,
    ToolStarted,
)


class RecordingSink:
    """A ``Reply`` that keeps the events of one reply in order; ``first_text`` is set on the
    first delta; ``started`` and ``closed`` say whether the reply was opened and ended."""

    def __init__(self) -> None:
        self.events: list[ReplyEvent] = []
        self.first_text = asyncio.Event()
        self.started = False
        self.closed = False

    async def start(self) -> None:
        """Record that the reply was opened (a channel would show typing)."""
        self.started = True

    async def close(self) -> None:
        """Record that the reply ended."""
        self.closed = True

    async def emit(self, event: ReplyEvent) -> None:
        """Record ``event``."""
        self.events.append(event)
        if isinstance(event, TextDelta):
            self.first_text.set()

    @property
    def deltas(self) -> list[str]:
        """The streamed text pieces."""
        return [e.text for e in self.events if isinstance(e, TextDelta)]

    @property
    def final(self) -> ReplyFinished | ReplyFailed:
        """The last event, which ends every reply."""
        last = self.events[-1]
        assert isinstance(last, ReplyFinished | ReplyFailed), f"reply did not end: {last!r}"
        return last

    @property
    def tools(self) -> list[ToolStarted | ToolFinished]:
        """Tool activity, in order."""
        return [e for e in self.events if isinstance(e, ToolStarted | ToolFinished)]
