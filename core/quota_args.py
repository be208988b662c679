"""The ``/quota`` grammar of SPEC §3, parsed into typed commands with friendly errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.money import AmountError, parse_usd
from core.periods import Period

MAX_ARGS = 200

GRAMMAR = (
    "/quota set <who> <usd> <daily|weekly|monthly|total>\n"
    "/quota show [<who>]\n"
    "/quota reset <who>\n"
    "<who>: a Telegram numeric user id, a known @username, a Slack mention, "
    "default, or here (this chat)."
)

_DIGITS = re.compile(r"[0-9]{1,20}")
_USERNAME = re.compile(r"@([A-Za-z0-9_.\-]{1,64})")
_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^<>]{0,80})?>")
_SLACK_ID = re.compile(r"[UW][A-Z0-9]{8,11}")


@dataclass(frozen=True, slots=True)
class Who:
    """Whom a quota command is about."""

    kind: Literal["user", "username", "default", "here"]
    channel: str | None = None
    user_id: str | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class QuotaSet:
    """``/quota set``: a limit for a subject and period."""

    who: Who
    micros: int
    period: Period


@dataclass(frozen=True, slots=True)
class QuotaShow:
    """``/quota show``: one subject's budgets, or all of them."""

    who: Who | None


@dataclass(frozen=True, slots=True)
class QuotaReset:
    """``/quota reset``: forget a subject's spending this period."""

    who: Who


QuotaCommand = QuotaSet | QuotaShow | QuotaReset


class QuotaSyntaxError(ValueError):
    """The arguments do not follow the grammar; ``str()`` is a friendly line and GRAMMAR."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}\n{GRAMMAR}")


def parse_quota(args: str, channel: str) -> QuotaCommand:
    """Parse the words after ``/quota`` typed in ``channel`` (a bare number is a Telegram id)."""
    if len(args) > MAX_ARGS:
        raise QuotaSyntaxError("That is far too long for a quota command.")
    words = args.split()
    if not words:
        raise QuotaSyntaxError("Say what to do:")
    action, rest = words[0].lower(), words[1:]
    if action == "set":
        if len(rest) != 3:
            raise QuotaSyntaxError("/quota set takes who, an amount and a period:")
        who = parse_who(rest[0], channel)
        try:
            micros = parse_usd(rest[1])
        except AmountError as exc:
            raise QuotaSyntaxError(str(exc)) from None
        try:
            period = Period(rest[2].lower())
        except ValueError:
            raise QuotaSyntaxError(f"{rest[2][:20]!r} is not a period.") from None
        return QuotaSet(who, micros, period)
    if action == "show":
        if len(rest) > 1:
            raise QuotaSyntaxError("/quota show takes at most one <who>:")
        return QuotaShow(parse_who(rest[0], channel) if rest else None)
    if action == "reset":
        if len(rest) != 1:
            raise QuotaSyntaxError("/quota reset takes one <who>:")
        return QuotaReset(parse_who(rest[0], channel))
    raise QuotaSyntaxError(f"I don't know {action[:20]!r}; use set, show or reset:")


def parse_who(word: str, channel: str) -> Who:
    """The subject one ``<who>`` word names."""
    lowered = word.lower()
    if lowered == "default":
        return Who("default")
    if lowered == "here":
        return Who("here")
    if _DIGITS.fullmatch(word):
        return Who("user", channel="telegram", user_id=word)
    if mention := _MENTION.fullmatch(word):
        return Who("user", channel="slack", user_id=mention.group(1))
    if _SLACK_ID.fullmatch(word):
        return Who("user", channel="slack", user_id=word)
    if username := _USERNAME.fullmatch(word):
        return Who("username", username=username.group(1).lower())
    raise QuotaSyntaxError(f"{word[:40]!r} does not name anyone.")
