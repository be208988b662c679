"""Who may use the bot and who administers it: ``SWITCHBOARD_ALLOWED_USERS`` and
``SWITCHBOARD_ADMINS`` (``channel:user id`` principals), plus the allow and block rules
admins set at runtime (``/allow``, ``/block``, ``switchboard access``), kept in the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from core.conversation.messages import UserRef

log = logging.getLogger(__name__)

ALLOW: Final = "allow"
BLOCK: Final = "block"
REFRESH_SECONDS = 5.0


class AccessRules(Protocol):
    """Where runtime rules are kept (the conversation store)."""

    async def access_rules(self) -> dict[str, str]:
        """Every rule by principal."""

    async def set_access_rule(self, principal: str, rule: str | None, set_by: str) -> None:
        """Set or clear one principal's rule."""


@dataclass
class AccessPolicy:
    """Allow-list, admins and runtime rules. An empty allow-list lets everyone in; a
    runtime rule overrides the allow-list either way; admins are always let in."""

    allowed: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()
    rules: dict[str, str] = field(default_factory=dict)

    def is_admin(self, user: UserRef) -> bool:
        """Whether ``user`` is named in the admins setting."""
        return user.principal in self.admins

    def is_allowed(self, user: UserRef) -> bool:
        """Whether ``user`` may talk to the bot."""
        if self.is_admin(user):
            return True
        rule = self.rules.get(user.principal)
        if rule is not None:
            return rule == ALLOW
        return not self.allowed or user.principal in self.allowed

    def apply(self, rules: Mapping[str, str]) -> None:
        """Replace the runtime rules with ``rules`` (as read from the store)."""
        self.rules = dict(rules)

    async def set_rule(self, store: AccessRules, principal: str, rule: str | None, by: str) -> None:
        """Store a rule (None clears it) and apply it in this process at once; other
        processes pick it up within ``REFRESH_SECONDS``."""
        await store.set_access_rule(principal, rule, by)
        if rule is None:
            self.rules.pop(principal, None)
        else:
            self.rules[principal] = rule


@contextlib.asynccontextmanager
async def kept_fresh(
    policy: AccessPolicy, store: AccessRules, every: float = REFRESH_SECONDS
) -> AsyncIterator[AccessPolicy]:
    """Load the runtime rules into ``policy`` now and re-read them every ``every`` seconds
    until the block ends, so rules set by another process apply here too. A database that
    cannot be read (not migrated yet, unreachable) is logged and tried again later."""

    async def load() -> None:
        try:
            policy.apply(await store.access_rules())
        except Exception as exc:
            log.error("could not read the access rules (%s); keeping the last ones", exc)

    await load()

    async def refresh() -> None:
        while True:
            await asyncio.sleep(every)
            await load()

    task = asyncio.create_task(refresh(), name="access-rules")
    try:
        yield policy
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
