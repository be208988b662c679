"""Whose user ids are whose: each channel says how its users are written (``UserNames``),
and the ``UserDirectory`` of all of them reads the ``<who>`` of admin commands and checks
the ``<channel>:<id>`` principals of the settings — so no channel's syntax lives in core."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from core.errors import ConfigError


class UserNames(Protocol):
    """How one platform names its users."""

    channel: str
    hint: str
    """How to name someone on this platform, for error messages ("mention them, like @alice")."""

    def user_id(self, word: str) -> str | None:
        """The user id ``word`` names in this platform's own syntax (a Telegram numeric id,
        a Slack ``<@U…>`` mention), or None if it is not such a reference; ``UnknownName``
        if it has the form but cannot be one (a zero user id)."""

    def valid_id(self, user_id: str) -> bool:
        """Whether ``user_id`` can be one of this platform's user ids."""


class UnknownName(ValueError):
    """A ``<who>`` that names no user; the message says why, in a line a person can act on."""


class UserDirectory:
    """The user naming of every channel this build knows."""

    def __init__(self, channels: Sequence[UserNames]) -> None:
        self._channels = {names.channel: names for names in channels}

    @property
    def channels(self) -> list[str]:
        """The channels' names."""
        return list(self._channels)

    def user(self, word: str, typed_in: str) -> tuple[str, str] | None:
        """The ``(channel, user id)`` that ``word`` names when typed in ``typed_in``: the
        ``<channel>:<id>`` form anywhere, else the typing channel's own syntax, else (in the
        shell, or a channel's form typed in another) the one channel whose syntax it fits.
        None if it is no user reference at all; ``UnknownName`` if it is a malformed one."""
        channel, colon, user_id = word.partition(":")
        if colon and channel.lower() in self._channels:
            names = self._channels[channel.lower()]
            if not names.valid_id(user_id):
                raise UnknownName(f"That is not a {names.channel} user id: {names.hint}")
            return names.channel, user_id
        own = self._channels.get(typed_in)
        if own is not None and (found := own.user_id(word)) is not None:
            return own.channel, found
        matches = [
            (names.channel, found)
            for names in self._channels.values()
            if (found := names.user_id(word)) is not None
        ]
        return matches[0] if len(matches) == 1 else None

    def hint(self, typed_in: str) -> str:
        """How to name a user from ``typed_in``."""
        own = self._channels.get(typed_in)
        if own is not None:
            return own.hint
        example = next(iter(self._channels), "telegram")
        return f"use <channel>:<id>, like {example}:<id>, or an @username."

    def principals(self, principals: Iterable[str], variable: str) -> frozenset[str]:
        """``principals`` (``<channel>:<id>``) checked by their channels; a bad one stops
        start-up with a line naming ``variable``."""
        checked: set[str] = set()
        for principal in principals:
            channel, colon, user_id = principal.partition(":")
            names = self._channels.get(channel.lower())
            if not colon or names is None:
                known = ", ".join(f"{name}:<id>" for name in self._channels)
                raise ConfigError(f"{variable}: {principal!r} is not one of {known}")
            if not names.valid_id(user_id):
                raise ConfigError(f"{variable}: {principal!r} is not a valid {names.channel} id")
            checked.add(f"{names.channel}:{user_id}")
        return frozenset(checked)
