"""The "typing…" indicator: one loop per chat (and topic), however many replies wait there.

Telegram shows the indicator for five seconds per call, or until the bot's next message
arrives. A reply that shows text within half a second needs none; several replies queued in
one chat share one indicator, instead of each sending its own calls. A reply that will be a
picture shows "sending a photo" instead; the newest reply to start in a chat chooses what
the shared indicator says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Bot
from telegram.constants import ChatAction
from telegram.error import TelegramError

log = logging.getLogger(__name__)

TYPING_AFTER = 0.5
TYPING_EVERY = 4.0

Place = tuple[int, int | None]  # chat id, forum topic


class TypingIndicators:
    """Keeps the indicator on in each chat while at least one reply there shows no text."""

    def __init__(self, bot: Bot, *, after: float = TYPING_AFTER, every: float = TYPING_EVERY):
        self._bot = bot
        self._after = after
        self._every = every
        self._waiting: dict[Place, int] = {}
        self._loops: dict[Place, asyncio.Task[None]] = {}
        self._actions: dict[Place, str] = {}

    def waiting(self, place: Place, action: str = ChatAction.TYPING) -> None:
        """A reply in ``place`` has started and shows nothing yet; ``action`` is what the
        indicator says (a ``ChatAction``)."""
        self._waiting[place] = self._waiting.get(place, 0) + 1
        self._actions[place] = action
        if place not in self._loops:
            self._loops[place] = asyncio.create_task(self._loop(place))

    def done(self, place: Place) -> None:
        """That reply now shows text, or ended.

        Its message clears the indicator in Telegram's clients, so when other replies there
        still wait, the indicator starts over: shown again half a second on, not at the
        loop's next tick up to four seconds later.
        """
        left = self._waiting.get(place, 0) - 1
        loop = self._loops.pop(place, None)
        if loop is not None:
            loop.cancel()
        if left > 0:
            self._waiting[place] = left
            self._loops[place] = asyncio.create_task(self._loop(place))
            return
        self._waiting.pop(place, None)
        self._actions.pop(place, None)

    async def _loop(self, place: Place) -> None:
        chat_id, thread_id = place
        await asyncio.sleep(self._after)
        while True:
            with contextlib.suppress(TelegramError):
                await self._bot.send_chat_action(
                    chat_id,
                    self._actions.get(place, ChatAction.TYPING),
                    message_thread_id=thread_id,
                )
            await asyncio.sleep(self._every)
