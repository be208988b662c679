"""Albums: photos sent together arrive as separate updates sharing a ``media_group_id``;
they are gathered here so that the bot answers them as one message.

The handler of an album's first part waits until no part has arrived for a moment and then
answers all of them; the handlers of later parts only add theirs and return. The wait
happens in the first part's handler, so an album that is being gathered is tracked like
any update in progress, and :meth:`AlbumCollector.flush` ends every wait at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from telegram import Message

QUIET_SECONDS = 0.8
"""How long after an album's newest part it is taken to be complete."""
LONGEST_WAIT = 10.0
"""Seconds after its first part at which an album is answered however it trickles in."""
MOST_PARTS = 10  # Telegram's own limit for one album


@dataclass
class _Album:
    parts: list[Message]
    last_seen: float
    flushed: asyncio.Event = field(default_factory=asyncio.Event)


class AlbumCollector:
    """Gathers album parts per chat and ``media_group_id``."""

    def __init__(self, *, quiet: float = QUIET_SECONDS, longest: float = LONGEST_WAIT) -> None:
        self._quiet = quiet
        self._longest = longest
        self._albums: dict[tuple[int, str], _Album] = {}

    async def collect(self, message: Message) -> list[Message] | None:
        """Add an album part. For the album's first part: wait until the album is complete
        and return its parts in order. For the others: None, at once."""
        group = message.media_group_id
        assert group is not None
        key = (message.chat.id, group)
        loop = asyncio.get_running_loop()
        album = self._albums.get(key)
        if album is not None:
            if len(album.parts) < MOST_PARTS:
                album.parts.append(message)
            album.last_seen = loop.time()
            return None
        album = _Album([message], loop.time())
        self._albums[key] = album
        try:
            deadline = loop.time() + self._longest
            while not album.flushed.is_set():
                wait = min(album.last_seen + self._quiet, deadline) - loop.time()
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await album.flushed.wait()
        finally:
            del self._albums[key]
        return sorted(album.parts, key=lambda part: part.message_id)

    def flush(self) -> int:
        """Stop waiting for more parts of every album being gathered (at shutdown), so each
        is answered with what arrived; returns how many albums there were."""
        for album in self._albums.values():
            album.flushed.set()
        return len(self._albums)

    def __len__(self) -> int:
        return len(self._albums)
