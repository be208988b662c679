"""The arguments of the admins' ``/quota`` command (SPEC §3), parsed into typed commands.

Anything that does not fit the grammar raises ``QuotaSyntaxError``, whose text is a short
description of the problem followed by the grammar, ready to show in the chat.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from core.access.names import UnknownName, UserDirectory
from core.errors import UserInputError
from core.money.money import AmountError, parse_usd
from core.money.periods import Period

MAX_ARGS_LENGTH = 200
GRAMMAR = (
    "/quota set <who> <usd> <daily|weekly|monthly|total>\n"
    "/quota show [<who>]\n"
    "/quota reset <who>\n"
    "<who> is a Telegram user id, an @username, a Slack @mention, <channel>:<id> (like "
    "telegram:123 or slack:U012AB), default (everyone without a budget of their own) or "
    "here (this chat)."
)

# A Slack mention may carry a display name after a bar, which can contain spaces.
_TOKEN = re.compile(r"<[^<>|\s]*(?:\|[^<>]*)?>|\S+")
_USERNAME = re.compile(r"@([A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,30}[A-Za-z0-9_])?)")
_HERE = frozenset({"here", "@here", "<!here>", "<!here|here>", "<!here|@here>"})
_PERIODS = "daily, weekly, monthly or total"
_PERIOD_WORDS = frozenset(period.value for period in Period)
_OPTIONAL_FIELDS = ("channel", "user_id", "username")
_WHO_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("channel", "user_id"),
    "username": ("username",),
    "default": (),
    "here": (),
}


class QuotaSyntaxError(UserInputError, ValueError):
    """``/quota`` arguments that do not fit the grammar.

    ``problem`` is one friendly line; ``str()`` adds the grammar below it.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}\n{GRAMMAR}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Who:
    """Whose budget a command is about.

    ``user``: one person, by ``channel`` (``telegram`` or ``slack``) and ``user_id``;
    ``username``: a person known by ``username`` (without the @, lowercased), still to be
    looked up; ``default``: the budget of everyone without their own; ``here``: the chat or
    channel the command was typed in.
    """

    kind: Literal["user", "username", "default", "here"]
    channel: str | None = None
    user_id: str | None = None
    username: str | None = None

    def __post_init__(self) -> None:
        wanted = _WHO_FIELDS[self.kind]
        given = tuple(name for name in _OPTIONAL_FIELDS if getattr(self, name) is not None)
        if given != wanted:
            fields = " and ".join(wanted) or "no other field"
            raise ValueError(f"a {self.kind!r} Who takes {fields}")


@dataclass(frozen=True, slots=True)
class QuotaSet:
    """``/quota set``: give ``who`` a budget of ``micros`` micro-dollars per ``period``."""

    who: Who
    micros: int
    period: Period


@dataclass(frozen=True, slots=True)
class QuotaShow:
    """``/quota show``: the budgets of ``who``, or every budget when None."""

    who: Who | None


@dataclass(frozen=True, slots=True)
class QuotaReset:
    """``/quota reset``: clear what ``who`` has spent in the current period."""

    who: Who


QuotaCommand = QuotaSet | QuotaShow | QuotaReset


def parse_quota(args: str, channel: str, names: UserDirectory) -> QuotaCommand:
    """The command in ``args``, the text after ``/quota``, typed in ``channel``.

    ``<who>`` is read by ``names``: the ``<channel>:<id>`` form everywhere, else the
    syntax of the channel it was typed in (a bare number is a Telegram id in Telegram; in
    the shell, whichever channel's syntax it fits).
    Raises ``QuotaSyntaxError`` for anything outside the grammar.
    """
    if len(args) > MAX_ARGS_LENGTH:
        raise QuotaSyntaxError("That is too long for a /quota command.")
    if any(_is_hidden(char) for char in args):
        raise QuotaSyntaxError("The command contains invisible or control characters.")
    words = _TOKEN.findall(args)
    if not words:
        raise QuotaSyntaxError("Say what to do: set, show or reset.")
    action, rest = words[0].lower(), words[1:]
    if action == "set":
        return _parse_set(rest, channel, names)
    if action == "show":
        if len(rest) > 1:
            raise QuotaSyntaxError("Too many words: /quota show takes at most one <who>.")
        return QuotaShow(_parse_who(rest[0], channel, names) if rest else None)
    if action == "reset":
        if not rest:
            raise QuotaSyntaxError("Say whose budget to reset.")
        if len(rest) > 1:
            raise QuotaSyntaxError("Too many words: /quota reset takes one <who>.")
        return QuotaReset(_parse_who(rest[0], channel, names))
    raise QuotaSyntaxError("Unknown /quota action: use set, show or reset.")


def _parse_set(rest: list[str], channel: str, names: UserDirectory) -> QuotaSet:
    if not rest:
        raise QuotaSyntaxError("Say whose budget to set, how many dollars, and the period.")
    who = _parse_who(rest[0], channel, names)
    if len(rest) == 1:
        raise QuotaSyntaxError(f"Say how many dollars, and the period: {_PERIODS}.")
    if len(rest) == 2:
        if rest[1].lower() in _PERIOD_WORDS:
            raise QuotaSyntaxError("Say how many dollars, before the period.")
        raise QuotaSyntaxError(f"Say the period after the amount: {_PERIODS}.")
    amount = rest[1:-1]
    # "$ 5" and "5 $" arrive as two words.
    if len(amount) > 2 or (len(amount) == 2 and "$" not in amount):
        raise QuotaSyntaxError("Too many words: /quota set takes <who> <usd> <period>.")
    try:
        micros = parse_usd(" ".join(amount))
    except AmountError as error:
        raise QuotaSyntaxError(str(error)) from error
    return QuotaSet(who, micros, _parse_period(rest[-1]))


def _parse_period(word: str) -> Period:
    try:
        return Period(word.lower())
    except ValueError:
        raise QuotaSyntaxError(f"Unknown period: use {_PERIODS}.") from None


def _parse_who(word: str, channel: str, names: UserDirectory) -> Who:
    lowered = word.lower()
    if lowered == "default":
        return Who("default")
    if lowered in _HERE:
        return Who("here")
    try:
        user = names.user(word, channel)
    except UnknownName as exc:
        raise QuotaSyntaxError(str(exc)) from None
    if user is not None:
        return Who("user", channel=user[0], user_id=user[1])
    if (username := _USERNAME.fullmatch(word)) is not None:
        return Who("username", username=username.group(1).lower())
    raise QuotaSyntaxError(_why_not_who(word, channel, names))


def _why_not_who(word: str, channel: str, names: UserDirectory) -> str:
    """The most helpful complaint about a ``<who>`` that is none of the accepted forms."""
    if word == "@":
        return "Write the username after the @, like @alice."
    if word.startswith("@"):
        return "That is not a username: use letters, digits and _ after the @."
    if word.startswith("<#"):
        return "That is a Slack channel: to budget it, type the command there and use here."
    if word.startswith("<"):
        return "That is not a Slack user mention like <@U012ABCDEF>."
    if word.startswith("-") and word[1:].isdecimal() and word.isascii():
        return "That is not a user id: to budget a group, type the command there and use here."
    if any(char.isdigit() and not char.isascii() for char in word):
        return "Write user ids with the digits 0 to 9."
    return f"I can't tell whose budget that is: {names.hint(channel)}"


def _is_hidden(char: str) -> bool:
    """Control and format characters (zero-width, bidi overrides) but not ordinary spacing."""
    return unicodedata.category(char).startswith("C") and char not in "\t\n\r"
