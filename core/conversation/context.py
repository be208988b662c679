"""Choosing which stored turns fit a model's context budget."""

from __future__ import annotations

from collections.abc import Iterable

from core.conversation.messages import StoredMessage
from core.conversation.tokens import MESSAGE_OVERHEAD
from core.models.llm import ChatTurn


def fit_history(newest_first: Iterable[StoredMessage], budget: int) -> tuple[list[ChatTurn], int]:
    """The longest run of recent messages whose tokens fit ``budget``, oldest first.

    Returns the turns and the tokens they use. A conversation never starts with an assistant
    turn, so a leading one left over by the cut is dropped.
    """
    chosen: list[StoredMessage] = []
    used = 0
    for message in newest_first:
        cost = message.token_count + MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        chosen.append(message)
        used += cost
    chosen.reverse()
    while chosen and chosen[0].role != "user":
        used -= chosen.pop(0).token_count + MESSAGE_OVERHEAD
    return [ChatTurn("user" if m.role == "user" else "assistant", m.text) for m in chosen], used
