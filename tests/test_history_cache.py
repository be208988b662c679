"""The per-process history cache: trusted only while current, bounded in tokens and size."""

from __future__ import annotations

from datetime import UTC, datetime

from core.conversation.history import HistoryCache
from core.conversation.messages import Role, StoredMessage
from core.conversation.tokens import MESSAGE_OVERHEAD


def stored(message_id: int, conversation_id: int = 1, tokens: int = 10) -> StoredMessage:
    role = Role.USER if message_id % 2 else Role.ASSISTANT
    return StoredMessage(
        message_id, conversation_id, role, f"m{message_id}", tokens, datetime.now(UTC)
    )


def newest_first(*ids: int) -> list[StoredMessage]:
    return [stored(i) for i in sorted(ids, reverse=True)]


def test_a_current_entry_is_returned_newest_first() -> None:
    cache = HistoryCache()
    cache.store(1, newest_first(1, 2, 3), complete=True, budget=1000)
    assert [m.id for m in cache.lookup(1, 3, 1000) or []] == [3, 2, 1]


def test_a_stale_entry_is_not_trusted() -> None:
    cache = HistoryCache()
    cache.store(1, newest_first(1, 2, 3), complete=True, budget=1000)
    assert cache.lookup(1, 4, 1000) is None  # another process added message 4
    assert cache.lookup(2, None, 1000) is None  # never cached


def test_appending_keeps_the_entry_current() -> None:
    cache = HistoryCache()
    cache.store(1, newest_first(1, 2), complete=True, budget=1000)
    cache.append(stored(3), previous_id=2)
    assert [m.id for m in cache.lookup(1, 3, 1000) or []] == [3, 2, 1]


def test_appending_after_a_gap_drops_the_entry() -> None:
    cache = HistoryCache()
    cache.store(1, newest_first(1, 2), complete=True, budget=1000)
    cache.append(stored(5), previous_id=4)  # messages 3 and 4 were written elsewhere
    assert cache.lookup(1, 5, 1000) is None
    assert cache.lookup(1, 2, 1000) is None


def test_an_incomplete_entry_must_cover_the_budget() -> None:
    cache = HistoryCache()
    cost = 10 + MESSAGE_OVERHEAD
    cache.store(1, newest_first(5, 6), complete=False, budget=2 * cost)
    assert cache.lookup(1, 6, 2 * cost) is not None
    assert cache.lookup(1, 6, 2 * cost + 1) is None  # older messages may be needed


def test_entries_are_trimmed_to_their_token_capacity() -> None:
    cache = HistoryCache()
    cost = 10 + MESSAGE_OVERHEAD
    cache.store(1, newest_first(1, 2), complete=True, budget=2 * cost)
    cache.append(stored(3), previous_id=2)
    assert [m.id for m in cache.lookup(1, 3, 2 * cost) or []] == [3, 2]
    assert cache.lookup(1, 3, 3 * cost) is None  # no longer complete


def test_least_recently_used_conversations_are_evicted() -> None:
    cache = HistoryCache(max_conversations=2)
    for conversation in (1, 2):
        cache.store(conversation, [stored(conversation, conversation)], complete=True, budget=99)
    assert cache.lookup(1, 1, 99) is not None  # 1 is now the most recently used
    cache.store(3, [stored(3, 3)], complete=True, budget=99)
    assert cache.lookup(2, 2, 99) is None
    assert cache.lookup(1, 1, 99) is not None
    assert cache.lookup(3, 3, 99) is not None
