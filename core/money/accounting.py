"""The admin and self-service side of budgets: ``/usage`` reports and ``/quota`` changes,
shared by every chat channel and the shell."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from core.access.names import UserDirectory
from core.access.policy import ALLOW, BLOCK, AccessPolicy
from core.access.quota_args import (
    GRAMMAR,
    QuotaReset,
    QuotaSet,
    QuotaShow,
    QuotaSyntaxError,
    Who,
    parse_quota,
)
from core.conversation.messages import ConversationKey, UserRef
from core.conversation.store import ConversationStore, Spend
from core.money.budgets import Budget, BudgetLedger, BudgetStatus, Payer, Scope, place_of
from core.money.money import format_usd
from core.money.periods import Period, describe_reset, window

log = logging.getLogger(__name__)

REFUSAL = "Only admins can do that."
SHELL = "shell"  # the channel of the ``switchboard quota`` and ``usage`` commands
TOP_USERS = 10


@dataclass(frozen=True, slots=True)
class Caller:
    """Who typed a command, and whether ``SWITCHBOARD_ADMINS`` names them."""

    user: UserRef
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Subject:
    """A resolved ``<who>``: the budget scope and subject, and how to name it."""

    scope: Scope
    subject: str
    label: str


@dataclass(frozen=True)
class Accounts:
    """What the accounting commands work on."""

    store: ConversationStore
    budgets: BudgetLedger
    now: datetime
    zone: ZoneInfo
    access: AccessPolicy
    names: UserDirectory


async def usage(accounts: Accounts, key: ConversationKey, caller: Caller, args: str) -> str:
    """``/usage``: the caller's spending and budgets; admins may name ``<who>`` or ``all``."""
    target = args.strip()
    if not target:
        return await _user_report(accounts, caller.user, key, "Your")
    if not caller.admin:
        log.warning("refused /usage %s for %s: not an admin", target[:60], caller.user.principal)
        return f"{REFUSAL} Send /usage alone to see your own."
    if target.lower() in {"all", "everyone"}:
        return await _everyone_report(accounts)
    try:
        who = parse_quota(f"show {target}", caller.user.channel, accounts.names)
    except QuotaSyntaxError:
        return "Usage: /usage, or for admins /usage <who> or /usage all."
    assert isinstance(who, QuotaShow) and who.who is not None
    resolved = await resolve(accounts.store, who.who, caller, key)
    if isinstance(resolved, str):
        return resolved
    if resolved.scope is not Scope.USER:
        return "Name a user: a numeric id, @username or a Slack mention."
    channel, _, user_id = resolved.subject.partition(":")
    return await _user_report(accounts, UserRef(channel, user_id), key, f"{resolved.label}'s")


async def quota(accounts: Accounts, key: ConversationKey, caller: Caller, args: str) -> str:
    """``/quota set|show|reset``, for admins only."""
    if not caller.admin:
        log.warning("refused /quota %s for %s: not an admin", args[:60], caller.user.principal)
        return REFUSAL
    try:
        command = parse_quota(args, caller.user.channel, accounts.names)
    except QuotaSyntaxError as exc:
        return str(exc)
    if isinstance(command, QuotaShow) and command.who is None:
        return _budget_lines(await accounts.budgets.budgets(), "All budgets")
    who = command.who
    assert who is not None
    resolved = await resolve(accounts.store, who, caller, key)
    if isinstance(resolved, str):
        return resolved
    if isinstance(command, QuotaSet):
        budget = Budget(resolved.scope, resolved.subject, command.period, command.micros)
        await accounts.budgets.set_budget(budget)
        log.info("%s set %s", caller.user.principal, budget)
        return f"Budget set: {resolved.label}, {format_usd(command.micros)} {command.period.value}."
    if isinstance(command, QuotaReset):
        if resolved.scope is Scope.DEFAULT:
            return "The default applies to each user; reset a user's spending instead."
        await accounts.budgets.reset_spending(
            resolved.scope, resolved.subject, accounts.now, accounts.zone
        )
        log.info("%s reset the spending of %s", caller.user.principal, resolved.subject)
        return f"Spending this period reset for {resolved.label}; their budgets stay."
    budgets = await accounts.budgets.budgets([(resolved.scope, resolved.subject)])
    return _budget_lines(budgets, f"Budgets of {resolved.label}")


ACCESS_GRAMMAR = (
    "Usage: /allow <who> lets a user in, /block <who> shuts them out; <who> is a Telegram "
    "user id, a known @username or a Slack mention. /allow or /block alone lists the rules."
)


async def allow(accounts: Accounts, key: ConversationKey, caller: Caller, args: str) -> str:
    """``/allow <who>``, for admins: let a user in (it also lifts a block)."""
    return await _set_access(accounts, key, caller, args, ALLOW)


async def block(accounts: Accounts, key: ConversationKey, caller: Caller, args: str) -> str:
    """``/block <who>``, for admins: shut a user out, whatever the allow-list says."""
    return await _set_access(accounts, key, caller, args, BLOCK)


async def clear_access(accounts: Accounts, key: ConversationKey, caller: Caller, args: str) -> str:
    """Drop a user's runtime rule, so the allow-list setting decides again (the shell's
    ``switchboard access clear``)."""
    return await _set_access(accounts, key, caller, args, None)


def access_report(access: AccessPolicy) -> str:
    """The runtime rules and the allow-list setting, one line each."""
    lines = ["Access rules:"]
    lines += [f"• {principal}: {rule}" for principal, rule in sorted(access.rules.items())]
    if not access.rules:
        lines.append("• none set at runtime")
    if access.allowed:
        lines.append(f"SWITCHBOARD_ALLOWED_USERS lets in {len(access.allowed)} user(s) besides.")
    else:
        lines.append("SWITCHBOARD_ALLOWED_USERS is empty: everyone not blocked may use the bot.")
    return "\n".join(lines)


async def _set_access(
    accounts: Accounts, key: ConversationKey, caller: Caller, args: str, rule: str | None
) -> str:
    if not caller.admin:
        log.warning("refused an access change for %s: not an admin", caller.user.principal)
        return REFUSAL
    access = accounts.access
    target = args.strip()
    if not target:
        return f"{access_report(access)}\n{ACCESS_GRAMMAR}"
    try:
        parsed = parse_quota(f"show {target}", caller.user.channel, accounts.names)
    except QuotaSyntaxError:
        return ACCESS_GRAMMAR
    assert isinstance(parsed, QuotaShow) and parsed.who is not None
    resolved = await resolve(accounts.store, parsed.who, caller, key)
    if isinstance(resolved, str):
        return resolved
    if resolved.scope is not Scope.USER:
        return f"Name one user. {ACCESS_GRAMMAR}"
    principal = resolved.subject
    if rule == BLOCK and principal in access.admins:
        return f"{resolved.label} is an admin (SWITCHBOARD_ADMINS) and cannot be blocked."
    await access.set_rule(accounts.store, principal, rule, caller.user.principal)
    log.info("%s set the access of %s to %s", caller.user.principal, principal, rule or "default")
    if rule == ALLOW:
        return f"{resolved.label} may use the bot now."
    if rule == BLOCK:
        return f"{resolved.label} is blocked: the bot will not answer them."
    return f"{resolved.label} has no rule now: the allow-list setting decides."


async def resolve(
    store: ConversationStore, who: Who, caller: Caller, key: ConversationKey
) -> Subject | str:
    """The budget subject ``who`` names, or a line saying why it names none."""
    if who.kind == "default":
        return Subject(Scope.DEFAULT, "", "the default (each user)")
    if who.kind == "here":
        if key.channel == SHELL:
            return "There is no chat here: use `here` inside the chat it should limit."
        return Subject(Scope.PLACE, place_of(key), "this chat")
    if who.kind == "user":
        principal = f"{who.channel}:{who.user_id}"
        return Subject(Scope.USER, principal, principal)
    found = await store.find_users(who.username or "")
    if len(found) > 1:
        same = [u for u in found if u.channel == caller.user.channel]
        found = same if len(same) == 1 else found
    if not found:
        return (
            f"I don't know @{who.username} yet: they must have written to me first. "
            "You can use their numeric id instead."
        )
    if len(found) > 1:
        return f"More than one user is called @{who.username}; use their id."
    user = found[0]
    return Subject(Scope.USER, user.principal, f"@{user.username} ({user.principal})")


async def _user_report(accounts: Accounts, user: UserRef, key: ConversationKey, whose: str) -> str:
    zone = accounts.zone
    today = window(Period.DAILY, accounts.now, zone).start
    month = window(Period.MONTHLY, accounts.now, zone).start
    [_, *mine_today] = await accounts.store.spending(today, user, top=1)
    [_, *mine_month] = await accounts.store.spending(month, user, top=1)
    lines = [
        f"{whose} usage:",
        f"• today: {_spend(mine_today)}",
        f"• this month: {_spend(mine_month)}",
    ]
    statuses = await accounts.budgets.status(Payer.of(user, key), accounts.now, zone)
    if statuses:
        lines.append("Budgets:")
        lines += [f"• {_status_line(s, accounts.now, zone)}" for s in statuses]
    else:
        lines.append("No budget limits you.")
    return "\n".join(lines)


async def _everyone_report(accounts: Accounts) -> str:
    month = window(Period.MONTHLY, accounts.now, accounts.zone).start
    total, *top = await accounts.store.spending(month, top=TOP_USERS)
    lines = [f"This month: {format_usd(total.cost_micros)} in {total.calls} calls."]
    if top:
        lines.append("Top users:")
        lines += [
            f"{rank}. {_name(s.user)}: {format_usd(s.cost_micros)} ({s.calls} calls)"
            for rank, s in enumerate(top, 1)
            if s.user is not None
        ]
    return "\n".join(lines)


def _spend(rows: Sequence[Spend]) -> str:
    if not rows:
        return "$0.00 (0 calls)"
    return f"{format_usd(rows[0].cost_micros)} ({rows[0].calls} calls)"


def _status_line(status: BudgetStatus, now: datetime, zone: ZoneInfo) -> str:
    budget = status.budget
    whose = {Scope.USER: "yours", Scope.DEFAULT: "the default", Scope.PLACE: "this chat's"}
    return (
        f"{budget.period.value} ({whose[budget.scope]}): "
        f"{format_usd(status.spent_micros)} of {format_usd(budget.limit_micros)} spent, "
        f"{format_usd(status.left_micros)} left; {describe_reset(status.window, now, zone)}"
    )


def _budget_lines(budgets: Sequence[Budget], title: str) -> str:
    if not budgets:
        return f"{title}: none."
    lines = [f"{title}:"]
    for budget in budgets:
        subject = {
            Scope.USER: budget.subject,
            Scope.DEFAULT: "default (each user)",
            Scope.PLACE: f"chat {budget.subject}",
        }[budget.scope]
        lines.append(f"• {subject}: {format_usd(budget.limit_micros)} {budget.period.value}")
    lines.append(GRAMMAR.splitlines()[0])
    return "\n".join(lines)


def _name(user: UserRef | None) -> str:
    if user is None:
        return "?"
    return f"@{user.username} ({user.principal})" if user.username else user.principal
