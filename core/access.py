"""Who may use the bot and who administers it, from ``SWITCHBOARD_ALLOWED_USERS`` and
``SWITCHBOARD_ADMINS`` (``channel:user id`` principals)."""

from __future__ import annotations

from dataclasses import dataclass

from core.messages import UserRef


@dataclass(frozen=True)
class AccessPolicy:
    """Allow-list and admins; an empty allow-list lets everyone in, admins always."""

    allowed: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()

    def is_admin(self, user: UserRef) -> bool:
        """Whether ``user`` is named in the admins setting."""
        return user.principal in self.admins

    def is_allowed(self, user: UserRef) -> bool:
        """Whether ``user`` may talk to the bot."""
        return not self.allowed or user.principal in self.allowed or self.is_admin(user)
