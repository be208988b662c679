"""How Telegram users are written: numeric ids (``123456789``, ``telegram:123456789``)."""

from __future__ import annotations

import re

from core.access.names import UnknownName

CHANNEL = "telegram"
MAX_USER_ID = 2**52 - 1
"""The Bot API promises at most 52 significant bits for a user id."""

_USER_ID = re.compile(r"[0-9]+")


class TelegramNames:
    """``UserNames`` for Telegram: a user is a positive number."""

    channel = CHANNEL
    hint = "give their numeric user id or @username."

    def user_id(self, word: str) -> str | None:
        """A bare number is a Telegram user id (``UnknownName`` if it cannot be one)."""
        if _USER_ID.fullmatch(word) is None:
            return None
        if not self.valid_id(word):
            raise UnknownName("That number is not a Telegram user id.")
        return str(int(word))

    def valid_id(self, user_id: str) -> bool:
        """A positive number within the Bot API's 52 bits."""
        return _USER_ID.fullmatch(user_id) is not None and 0 < int(user_id) <= MAX_USER_ID
