"""Choosing the recent turns that fit the context budget (SPEC §4)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

from core.conversation.context import fit_history
from core.conversation.messages import Role, StoredMessage
from core.conversation.tokens import MESSAGE_OVERHEAD
from core.models.llm import ChatTurn

WHEN = datetime(2024, 1, 1, tzinfo=UTC)


def message(number: int, role: Role, tokens: int = 10) -> StoredMessage:
    return StoredMessage(
        id=number,
        conversation_id=1,
        role=role,
        text=f"{role.value} {number}",
        token_count=tokens,
        created_at=WHEN,
    )


def conversation(turns: int, tokens: int = 10) -> list[StoredMessage]:
    """``turns`` user/assistant pairs, oldest first."""
    messages: list[StoredMessage] = []
    for number in range(1, turns + 1):
        messages.append(message(2 * number - 1, Role.USER, tokens))
        messages.append(message(2 * number, Role.ASSISTANT, tokens))
    return messages


def cost(tokens: int = 10) -> int:
    return tokens + MESSAGE_OVERHEAD


def test_everything_fits_and_comes_back_oldest_first() -> None:
    history = conversation(3)

    turns, used = fit_history(reversed(history), budget=1_000)

    assert turns == [
        ChatTurn("user", "user 1"),
        ChatTurn("assistant", "assistant 2"),
        ChatTurn("user", "user 3"),
        ChatTurn("assistant", "assistant 4"),
        ChatTurn("user", "user 5"),
        ChatTurn("assistant", "assistant 6"),
    ]
    assert used == 6 * cost()


def test_only_the_newest_turns_that_fit_are_kept() -> None:
    history = conversation(3)  # u1 a2 u3 a4 u5 a6

    turns, used = fit_history(reversed(history), budget=4 * cost())

    assert [turn.text for turn in turns] == ["user 3", "assistant 4", "user 5", "assistant 6"]
    assert used == 4 * cost()


def test_a_leading_assistant_turn_is_dropped_and_not_counted() -> None:
    history = conversation(3)

    turns, used = fit_history(reversed(history), budget=3 * cost())

    assert [turn.text for turn in turns] == ["user 5", "assistant 6"]
    assert turns[0].role == "user"
    assert used == 2 * cost()


def test_budget_is_inclusive() -> None:
    history = conversation(1)

    turns, used = fit_history(reversed(history), budget=2 * cost())
    assert len(turns) == 2
    assert used == 2 * cost()

    # Only the assistant reply fits, and a context never starts with the assistant.
    assert fit_history(reversed(history), budget=2 * cost() - 1) == ([], 0)


def test_newest_alone_over_budget_gives_nothing() -> None:
    history = [message(1, Role.USER, 5), message(2, Role.USER, 500)]

    assert fit_history(reversed(history), budget=100) == ([], 0)


def test_the_cut_is_contiguous() -> None:
    """An older small message is not taken once a newer one did not fit."""
    history = [
        message(1, Role.USER, 1),
        message(2, Role.ASSISTANT, 1_000),
        message(3, Role.USER, 1),
    ]

    turns, used = fit_history(reversed(history), budget=100)

    assert [turn.text for turn in turns] == ["user 3"]
    assert used == cost(1)


def test_empty_history() -> None:
    assert fit_history([], budget=100) == ([], 0)


def test_only_as_much_history_is_read_as_fits() -> None:
    """A long history is read lazily, newest first, and reading stops at the budget."""
    read: list[int] = []

    def newest_first() -> Iterator[StoredMessage]:
        for number in itertools.count(10**6, -1):
            read.append(number)
            yield message(number, Role.USER if number % 2 else Role.ASSISTANT)

    turns, _ = fit_history(newest_first(), budget=5 * cost())

    assert len(turns) <= 5
    assert len(read) == 6
