"""Telling the admins of a fault only they can fix (the bot's own OpenAI settings are wrong:
a rejected key, a wrong base URL, a model the account may not use), through the outbound
port — at most once per cause per hour, however many turns fail meanwhile, so that a
broken key does not flood their private chats."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from core.clock import Clock
from core.errors import UpstreamMisconfigured

log = logging.getLogger(__name__)

NOTICE_INTERVAL = timedelta(hours=1)

TellAdmins = Callable[[str], Awaitable[int]]
"""Posts a Markdown text privately to every reachable admin; returns how many were told
(``Outbox.tell_admins``)."""


class AdminNotices:
    """One notice per cause per ``interval``, by ``clock``; a cause is the kind of
    misconfiguration (``ApiKeyRejected``, ``EndpointNotFound`` …)."""

    def __init__(
        self, tell: TellAdmins, clock: Clock, *, interval: timedelta = NOTICE_INTERVAL
    ) -> None:
        self._tell = tell
        self._clock = clock
        self._interval = interval
        self._told: dict[str, datetime] = {}

    async def misconfigured(self, error: UpstreamMisconfigured) -> None:
        """A turn failed because of ``error``: tell the admins, unless they were told of the
        same cause within the interval. Never raises: the user's reply matters more."""
        cause = type(error).__name__
        now = self._clock.now()
        last = self._told.get(cause)
        if last is not None and now - last < self._interval:
            return
        self._told[cause] = now
        # ``error``'s message is written for operators: it names the setting to check and
        # carries no key (the gateway masks what the provider quotes).
        text = f"⚠️ The assistant cannot reach its model ({cause}): {error}"
        try:
            told = await self._tell(text)
        except Exception:
            log.exception("could not tell the admins about %s", cause)
            return
        if told:
            log.warning("told %d admin(s) that the bot is misconfigured (%s)", told, cause)
        else:
            log.warning("no admin could be told that the bot is misconfigured (%s)", cause)
