"""Context building: which stored turns, with which pictures, fit a model's context budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from core.conversation.history import HistoryCache
from core.conversation.messages import Role, StoredMessage
from core.conversation.store import ConversationStore
from core.conversation.tokens import MESSAGE_OVERHEAD, TokenCounter
from core.errors import UserInputError
from core.media.ports import PreparedImage
from core.models.llm import ChatTurn, ToolSchema
from core.models.registry import ModelSpec


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


HISTORY_PAGE = 64
IMAGE_TOKENS = 800
"""Context tokens counted per picture: about what a high-detail image costs the model."""
HISTORY_PICTURE_TURNS = 3
"""How many of the newest turns with pictures show them to the model, this one included
(earlier turns as the small copies history keeps; older ones as text only)."""


class ContextBuilder:
    """Builds what a model call sees of a conversation: the newest turns that fit the
    model's budget, from a per-process cache when it is current, with their pictures."""

    def __init__(self, store: ConversationStore, *, context_tokens: int | None = None) -> None:
        self._store = store
        self._context_tokens = context_tokens
        self._cache = HistoryCache()

    def remember(self, message: StoredMessage, previous_id: int | None) -> None:
        """Keep the cache current with a message just stored after ``previous_id``."""
        self._cache.append(message, previous_id)

    def budget(
        self,
        model: ModelSpec,
        counter: TokenCounter,
        instructions: str,
        tools: Sequence[ToolSchema],
    ) -> int:
        """Tokens left for history once the answer, the instructions and tools are counted."""
        window = model.context_window
        if self._context_tokens is not None:
            window = min(window, self._context_tokens)
        reserve = min(model.max_output_tokens, window // 4)
        fixed = counter.count(instructions) + MESSAGE_OVERHEAD
        fixed += sum(
            counter.count(str(tool.parameters)) + counter.count(tool.description) for tool in tools
        )
        return window - reserve - fixed

    async def history(
        self,
        conversation_id: int,
        last_message_id: int | None,
        budget: int,
        model: ModelSpec,
        pictures: Mapping[int, tuple[PreparedImage, ...]],
    ) -> tuple[list[ChatTurn], int]:
        """Recent turns within ``budget`` and the tokens they use, paging back through the
        store only as far as needed; ``pictures`` are this turn's full-size ones by message."""
        newest_first = self._cache.lookup(conversation_id, last_message_id, budget)
        if newest_first is None:
            newest_first = []
            before: int | None = None
            used = 0
            complete = False
            while used <= budget:
                page = await self._store.recent_messages(
                    conversation_id, limit=HISTORY_PAGE, before_id=before
                )
                newest_first.extend(page)
                used += sum(m.token_count + MESSAGE_OVERHEAD for m in page)
                if len(page) < HISTORY_PAGE:
                    complete = True
                    break
                before = page[-1].id
            self._cache.store(conversation_id, newest_first, complete=complete, budget=budget)
        turns, used = fit_history(newest_first, budget)
        if not turns:
            raise UserInputError(
                "That message is too long for this model's context. Please shorten it."
            )
        return await self._with_pictures(turns, newest_first, model, pictures), used

    async def _with_pictures(
        self,
        turns: list[ChatTurn],
        newest_first: Sequence[StoredMessage],
        model: ModelSpec,
        pictures: Mapping[int, tuple[PreparedImage, ...]],
    ) -> list[ChatTurn]:
        """Show the model the pictures of the newest turns that had any: this turn's at full
        size, the few before as the small copies history keeps; older ones are only text."""
        if "vision" not in model.capabilities:
            return turns
        # fit_history keeps the newest messages, so turns[-1 - i] is newest_first[i].
        chosen = [
            (len(turns) - 1 - i, m)
            for i, m in enumerate(newest_first[: len(turns)])
            if m.image_count and m.role == Role.USER
        ][:HISTORY_PICTURE_TURNS]
        if not chosen:
            return turns
        wanted = [m.id for _, m in chosen if m.id not in pictures]
        stored = await self._store.message_images(wanted) if wanted else {}
        shown = list(turns)
        for index, message in chosen:
            images = pictures.get(message.id) or tuple(stored.get(message.id, ()))
            shown[index] = replace(turns[index], images=images)
        return shown
