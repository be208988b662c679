"""A per-process cache of each conversation's recent messages, so that a turn need not read
its whole history back from the database.

An entry is trusted only while the store's newest message id for the conversation equals the
entry's, which also holds with several processes writing to one database: any message added
elsewhere changes that id and the entry is reloaded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from core.conversation.messages import StoredMessage
from core.conversation.tokens import MESSAGE_OVERHEAD


@dataclass
class _Entry:
    messages: deque[StoredMessage] = field(default_factory=deque)  # oldest first
    tokens: int = 0
    complete: bool = False  # holds every message since the conversation began
    capacity: int = 0  # tokens kept; older messages are dropped beyond this

    @property
    def last_id(self) -> int | None:
        return self.messages[-1].id if self.messages else None


class HistoryCache:
    """Recent messages per conversation, least recently used conversations evicted first."""

    def __init__(self, max_conversations: int = 1024) -> None:
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._max = max_conversations

    def lookup(
        self, conversation_id: int, last_id: int | None, budget: int
    ) -> list[StoredMessage] | None:
        """The cached messages, newest first, if they are current and cover ``budget``."""
        entry = self._entries.get(conversation_id)
        if entry is None or entry.last_id != last_id:
            return None
        if not entry.complete and entry.tokens < budget:
            return None
        self._entries.move_to_end(conversation_id)
        return list(reversed(entry.messages))

    def store(
        self,
        conversation_id: int,
        newest_first: list[StoredMessage],
        *,
        complete: bool,
        budget: int,
    ) -> None:
        """Remember messages just read from the store (newest first)."""
        entry = _Entry(deque(reversed(newest_first)), complete=complete, capacity=budget)
        entry.tokens = sum(_cost(m) for m in newest_first)
        self._entries[conversation_id] = entry
        self._entries.move_to_end(conversation_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def append(self, message: StoredMessage, previous_id: int | None) -> None:
        """Add a message just stored; the entry is dropped if it was not current."""
        entry = self._entries.get(message.conversation_id)
        if entry is None:
            return
        if entry.last_id != previous_id:
            del self._entries[message.conversation_id]
            return
        entry.messages.append(message)
        entry.tokens += _cost(message)
        while entry.tokens > entry.capacity and len(entry.messages) > 1:
            entry.tokens -= _cost(entry.messages.popleft())
            entry.complete = False


def _cost(message: StoredMessage) -> int:
    return message.token_count + MESSAGE_OVERHEAD
