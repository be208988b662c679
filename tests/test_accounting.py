"""``/usage`` and ``/quota`` through the real composition root: admins and non-admins, good
and hostile arguments, and what they do to the budgets the engine enforces."""

from __future__ import annotations

import logging

import pytest

from bots.bootstrap import App
from core.conversation.commands import parse_command
from core.conversation.events import CommandReply, ReplyFailed, ReplyFinished
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.money.accounting import Caller
from core.money.budgets import Budget, Payer, Scope
from core.money.periods import Period
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sinks import RecordingSink

CHAT = ConversationKey("telegram", place="1001")
ADMIN = Caller(UserRef("telegram", "1", username="boss"), admin=True)
ALICE = UserRef("telegram", "42", username="alice")
BEN = UserRef("slack", "U0BEN", username="ben")


async def command(app: App, text: str, caller: Caller = ADMIN) -> str:
    parsed = parse_command(text)
    assert parsed is not None
    reply: CommandReply = await app.commands.run(CHAT, parsed, caller=caller)
    return reply.text


async def ask(app: App, user: UserRef, text: str, key: ConversationKey = CHAT) -> RecordingSink:
    sink = RecordingSink()
    await app.assistant.answer_message(IncomingMessage(key, user, text), sink)
    return sink


async def test_admins_set_show_and_reset_budgets_by_id_username_and_default(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await ask(app, ALICE, "hello")  # now @alice is a known user
        by_name = await command(app, "/quota set @Alice $0.01 daily")
        by_id = await command(app, "/quota set 42 2.5 monthly")
        default = await command(app, "/quota set default 0.10 weekly")
        here = await command(app, "/quota set here 1 total")
        # She spends her whole daily budget (budgets are hard limits: no call goes past one).
        ledger, now, zone = app.storage.budgets, app.storage.clock.now(), app.settings.zone
        alice = Payer.of(ALICE, CHAT)
        await ledger.settle(await ledger.reserve(alice, 10_000, now, zone), 10_000)
        refused = await ask(app, ALICE, "over her daily budget now")
        shown = await command(app, "/quota show @alice")
        everything = await command(app, "/quota show")
        reset = await command(app, "/quota reset 42")
        answered = await ask(app, ALICE, "after the reset")
        budgets = await app.storage.budgets.budgets()
    assert by_name == "Budget set: @alice (telegram:42), $0.01 daily."
    assert by_id == "Budget set: telegram:42, $2.50 monthly."
    assert default.startswith("Budget set: the default") and "$0.10 weekly" in default
    assert here == "Budget set: this chat, $1.00 total."
    assert isinstance(refused.final, ReplyFailed)
    assert refused.final.message.startswith("Your daily budget of $0.01 is used up; it resets")
    assert "$0.01 daily" in shown and "$2.50 monthly" in shown
    assert "default (each user): $0.10 weekly" in everything
    assert reset.startswith("Spending this period reset for telegram:42")
    assert isinstance(answered.final, ReplyFinished)
    assert {(b.scope, b.period) for b in budgets} == {
        (Scope.USER, Period.DAILY),
        (Scope.USER, Period.MONTHLY),
        (Scope.DEFAULT, Period.WEEKLY),
        (Scope.PLACE, Period.TOTAL),
    }


async def test_slack_mentions_name_slack_users(make_app: AppFactory) -> None:
    slack_admin = Caller(UserRef("slack", "U0BOSS"), admin=True)
    async with make_app() as app:
        answer = await command(app, "/quota set <@U0BEN|ben> 3 daily", slack_admin)
        [budget] = await app.storage.budgets.budgets()
    assert answer == "Budget set: slack:U0BEN, $3.00 daily."
    assert budget == Budget(Scope.USER, "slack:U0BEN", Period.DAILY, 3_000_000)


async def test_non_admins_are_refused_and_the_attempt_is_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Caller(ALICE)
    async with make_app() as app:
        with caplog.at_level(logging.WARNING, logger="core.money.accounting"):
            quota = await command(app, "/quota set default 100 daily", alice)
            usage_of_others = await command(app, "/usage all", alice)
        budgets = await app.storage.budgets.budgets()
    assert quota == "Only admins can do that."
    assert usage_of_others.startswith("Only admins can do that.")
    assert budgets == []
    assert sum("refused /quota" in r.message for r in caplog.records) == 1
    assert "telegram:42" in caplog.text


@pytest.mark.parametrize(
    "arguments",
    [
        "",
        "set",
        "set @alice",
        "set @alice ten daily",
        "set @alice -1 daily",
        "set @alice 1 hourly",
        "set @alice 99999999999 daily",
        "set @ 1 daily",
        "set <@> 1 daily",
        "show too many words here",
        "delete @alice",
        "set @alice 1 daily; DROP TABLE budgets",
        "x" * 180,
    ],
)
async def test_bad_quota_arguments_get_the_grammar_back(
    make_app: AppFactory, arguments: str
) -> None:
    async with make_app() as app:
        answer = await command(app, f"/quota {arguments}")
        budgets = await app.storage.budgets.budgets()
    assert "/quota set <who> <usd> <daily|weekly|monthly|total>" in answer
    assert "Traceback" not in answer
    assert budgets == []


async def test_an_unknown_username_is_explained(make_app: AppFactory) -> None:
    async with make_app() as app:
        answer = await command(app, "/quota set @nobody 1 daily")
    assert answer.startswith("I don't know @nobody yet")


async def test_usage_shows_spending_and_what_is_left(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await command(app, "/quota set 42 1 daily")
        await ask(app, ALICE, "spend a little")
        await ask(app, BEN, "spend a little too", ConversationKey("slack", place="D1", scope="T1"))
        own = await command(app, "/usage", Caller(ALICE))
        everyone = await command(app, "/usage all")
        of_alice = await command(app, "/usage @alice")
        nothing_set = await command(app, "/usage", Caller(BEN))
    assert own.splitlines()[0] == "Your usage:"
    assert "today: $0." in own and "(1 calls)" in own
    assert "daily (yours):" in own and "of $1.00 spent" in own and "left; resets" in own
    assert everyone.startswith("This month: $0.")
    assert "in 2 calls." in everyone
    assert "@alice (telegram:42)" in everyone and "@ben (slack:U0BEN)" in everyone
    assert of_alice.startswith("@alice (telegram:42)'s usage:")
    assert nothing_set.endswith("No budget limits you.")


async def test_admins_allow_and_block_users_at_runtime(make_app: AppFactory) -> None:
    async with make_app(SWITCHBOARD_ALLOWED_USERS="telegram:42") as app:
        await ask(app, ALICE, "hello")  # a known user, so @alice resolves
        assert app.access.is_allowed(ALICE)
        outsider = UserRef("telegram", "77")
        assert not app.access.is_allowed(outsider)

        blocked = await command(app, "/block @alice")
        allowed = await command(app, "/allow 77")
        listing = await command(app, "/allow")
        rules = await app.store.access_rules()
        alice_now, outsider_now = app.access.is_allowed(ALICE), app.access.is_allowed(outsider)
        lifted = await command(app, "/allow 42")
        alice_after = app.access.is_allowed(ALICE)
    assert blocked == "@alice (telegram:42) is blocked: the bot will not answer them."
    assert allowed == "telegram:77 may use the bot now."
    assert "• telegram:42: block" in listing and "• telegram:77: allow" in listing
    assert rules == {"telegram:42": "block", "telegram:77": "allow"}
    assert lifted == "telegram:42 may use the bot now."
    assert (alice_now, outsider_now, alice_after) == (False, True, True)


async def test_access_rules_survive_a_restart_and_reach_other_processes(
    make_app: AppFactory,
) -> None:
    async with make_app() as first, make_app() as second:
        await command(first, "/block 42")
        assert not first.access.is_allowed(ALICE)
        # The other process re-reads the rules periodically; here it is asked to at once.
        second.access.apply(await second.store.access_rules())
        assert not second.access.is_allowed(ALICE)
    async with make_app() as restarted:
        assert not restarted.access.is_allowed(ALICE)


async def test_access_commands_are_for_admins_and_check_their_arguments(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Caller(ALICE)
    async with make_app(SWITCHBOARD_ADMINS="telegram:1") as app:
        with caplog.at_level(logging.WARNING, logger="core.money.accounting"):
            refused = await command(app, "/block 1", alice)
        admin_block = await command(app, "/block 1")
        nonsense = await command(app, "/block <script>alert(1)</script>")
        nobody = await command(app, "/allow @nobody_known")
        place = await command(app, "/block here")
        rules = await app.store.access_rules()
    assert refused == "Only admins can do that."
    assert "refused an access change for telegram:42" in caplog.text
    assert admin_block == "telegram:1 is an admin (SWITCHBOARD_ADMINS) and cannot be blocked."
    assert nonsense.startswith("Usage: /allow <who>")
    assert nobody.startswith("I don't know @nobody_known yet")
    assert place.startswith("Name one user.")
    assert rules == {}
