"""How Slack users are written: mentions (``<@U012AB>``, also with ``|name``), member ids
(``U012ABCDEF``) and ``slack:U012AB``."""

from __future__ import annotations

import re

CHANNEL = "slack"

_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^<>|]*)?>")
_MEMBER_ID = re.compile(r"[UW][A-Z0-9]{8,11}")
_ANY_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


class SlackNames:
    """``UserNames`` for Slack: a mention or a member id."""

    channel = CHANNEL
    hint = "mention them, like @alice."

    def user_id(self, word: str) -> str | None:
        """The member id of a mention, or a bare member id."""
        if (mention := _MENTION.fullmatch(word)) is not None:
            return mention.group(1)
        return word if _MEMBER_ID.fullmatch(word) else None

    def valid_id(self, user_id: str) -> bool:
        """A Slack user (``U…``) or enterprise user (``W…``) id."""
        return _ANY_ID.fullmatch(user_id) is not None
