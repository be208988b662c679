"""Spending budgets: who and where they apply, and the ledger port that reserves a call's
estimated cost against all of them at once, then settles it to the real cost.

Budgets are set per user, per place (a Telegram chat, a Slack channel) and as a default
for every user without their own, each for a period (daily, weekly, monthly, total) that
resets in the configured timezone. They are hard limits: a reservation is made only if it
fits in what every budget has left. Money is integer micro-dollars.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from core.conversation.messages import ConversationKey, UserRef
from core.errors import UserInputError
from core.money.money import format_usd
from core.money.periods import Period, Window, describe_reset, window


class Scope(enum.StrEnum):
    """What a budget limits."""

    USER = "user"
    PLACE = "place"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on spending in each ``period`` window; ``subject`` is a user's principal
    (``telegram:123``), a place key, or empty for the default."""

    scope: Scope
    subject: str
    period: Period
    limit_micros: int


@dataclass(frozen=True, slots=True)
class Payer:
    """Who a call is charged to: a user, in a place."""

    user: str
    place: str

    @classmethod
    def of(cls, user: UserRef, key: ConversationKey) -> Payer:
        """The payer for ``user`` talking in the conversation ``key`` (its place, any thread)."""
        return cls(user.principal, place_of(key))


@dataclass(frozen=True, slots=True)
class Claim:
    """One budget's counter that a reservation draws on: the counter is per user (for user
    and default budgets) or per place, and per period window."""

    scope: Scope
    subject: str
    period: Period
    window_start: datetime
    limit_micros: int
    budget: Budget


@dataclass(frozen=True, slots=True)
class Hold:
    """Who holds a reservation, and until when unless renewed: the reservation of a process
    that died mid-call is released once ``until`` has passed (or as soon as its ``owner``
    is known to be dead)."""

    owner: str
    until: datetime


@dataclass(frozen=True, slots=True)
class Reservation:
    """An estimated cost held against ``claims`` until the call is settled or released.
    ``hold`` names a reservation held under a lease (``Hold``), settled exactly once; None
    for one that stays until whoever settles it does (a batch's, held for hours)."""

    claims: tuple[Claim, ...]
    amount: int
    hold: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget that applies to someone, with what was spent and reserved in this window."""

    budget: Budget
    window: Window
    spent_micros: int
    reserved_micros: int

    @property
    def left_micros(self) -> int:
        """What can still be spent in this window (never below zero)."""
        return max(self.budget.limit_micros - self.spent_micros - self.reserved_micros, 0)


class BudgetExceeded(UserInputError):
    """A call would go over a budget; the message says which, what it has left and when it
    resets. ``left_micros`` is what that budget had left when the call was refused: the
    most a smaller call could still reserve (``Meter`` sizes a capped call with it)."""

    def __init__(self, message: str, claim: Claim, left_micros: int) -> None:
        super().__init__(message)
        self.claim = claim
        self.left_micros = left_micros


def place_of(key: ConversationKey) -> str:
    """The place part of a conversation key (a chat or channel, without the thread)."""
    return str(replace(key, thread=""))


def applicable(budgets: Sequence[Budget], payer: Payer) -> list[Budget]:
    """The budgets that limit ``payer``: their own per period (else the default's), and
    their place's."""
    own = {b.period: b for b in budgets if b.scope is Scope.USER and b.subject == payer.user}
    chosen = list(own.values())
    chosen += [
        b for b in budgets if b.scope is Scope.DEFAULT and b.period not in own and not b.subject
    ]
    chosen += [b for b in budgets if b.scope is Scope.PLACE and b.subject == payer.place]
    return chosen


def claims_for(budgets: Sequence[Budget], payer: Payer, now: datetime, tz: ZoneInfo) -> list[Claim]:
    """The counters a call by ``payer`` at ``now`` draws on, one per applicable budget."""
    claims = []
    for budget in applicable(budgets, payer):
        scope, subject = (
            (Scope.PLACE, payer.place) if budget.scope is Scope.PLACE else (Scope.USER, payer.user)
        )
        start = window(budget.period, now, tz).start
        claims.append(Claim(scope, subject, budget.period, start, budget.limit_micros, budget))
    return claims


def fits(amount: int, limit: int, used: int) -> bool:
    """Whether a call of ``amount`` may be reserved on a counter that has ``used`` (spent
    plus reserved) of ``limit``: only if it fits in what is left, and never once the budget
    is used up, not even a free call."""
    return used < limit and used + amount <= limit


def refusal(
    claim: Claim, left: int, now: datetime, tz: ZoneInfo, purpose: str = "this request"
) -> BudgetExceeded:
    """The error for a call refused by ``claim``'s budget, which has ``left`` micro-dollars
    left; ``purpose`` names the call for the user (``this message``, ``this picture``)."""
    return BudgetExceeded(exceeded_message(claim, left, now, tz, purpose), claim, left)


def exceeded_message(
    claim: Claim, left: int, now: datetime, tz: ZoneInfo, purpose: str = "this request"
) -> str:
    """The friendly line for a call refused by ``claim``'s budget: which budget, what it has
    left (if anything) and when it resets."""
    whose = {
        Scope.USER: "Your",
        Scope.DEFAULT: "Your",
        Scope.PLACE: "This chat's",
    }[claim.budget.scope]
    budget = f"{whose} {claim.period.value} budget of {format_usd(claim.limit_micros)}"
    state = f"has {format_usd(left)} left, not enough for {purpose}" if left > 0 else "is used up"
    reset = describe_reset(window(claim.period, now, tz), now, tz)
    return f"{budget} {state}; it {reset}. An admin can raise it with /quota."


class BudgetLedger(Protocol):
    """Budgets and their counters; every implementation passes
    ``tests/test_budget_contract``. Reservations are atomic across processes."""

    async def set_budget(self, budget: Budget) -> None:
        """Create or replace the budget of ``budget.scope``/``subject`` for its period."""

    async def remove_budgets(self, scope: Scope, subject: str) -> int:
        """Remove every budget of a subject; returns how many there were."""

    async def budgets(self, subjects: Sequence[tuple[Scope, str]] = ()) -> list[Budget]:
        """The budgets of the given subjects (all budgets when none are given)."""

    async def reserve(
        self, payer: Payer, amount: int, now: datetime, tz: ZoneInfo, hold: Hold | None = None
    ) -> Reservation:
        """Hold ``amount`` against every budget that applies to ``payer``, all or nothing,
        atomically, only if it ``fits`` in what each has left (spending plus reservations
        never exceed a limit, whatever runs concurrently); else ``BudgetExceeded`` names
        the budget with the least left, and what that is. With ``hold``, the reservation is
        leased to its owner (``renew``, ``release_abandoned``)."""

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace a reservation by the real cost of the call. A held reservation is settled
        once: settling it again changes nothing, and one released meanwhile (its lease ran
        out) only adds ``actual`` to what was spent."""

    async def renew(self, reservation: Reservation, until: datetime) -> None:
        """Extend the lease of a held reservation still under way to ``until``."""

    async def release_abandoned(self, now: datetime, gone: Callable[[str], bool]) -> int:
        """Release the held reservations whose lease ran out by ``now`` or whose owner is
        ``gone`` (a dead process): what they held is free again, what was spent stays.
        Returns how many were released."""

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed."""

    async def status(self, payer: Payer, now: datetime, tz: ZoneInfo) -> list[BudgetStatus]:
        """Each budget that applies to ``payer``, with this window's spending."""

    async def reset_spending(self, scope: Scope, subject: str, now: datetime, tz: ZoneInfo) -> int:
        """Forget what a user or place spent in the current windows, and any estimate still
        held there (left by a process that died mid-call); returns the counters reset.
        Calls settling afterwards still add their cost."""
