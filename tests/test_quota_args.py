"""The ``/quota`` grammar of SPEC §3: every accepted form, and a clear refusal of the rest."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.bootstrap import user_directory
from core.access.quota_args import (
    GRAMMAR,
    MAX_ARGS_LENGTH,
    QuotaReset,
    QuotaSet,
    QuotaShow,
    QuotaSyntaxError,
    Who,
    parse_quota,
)
from core.errors import UserInputError, user_message
from core.money.money import AmountError, format_usd
from core.money.periods import Period

PROPERTY = settings(max_examples=300, deadline=None)
NAMES = user_directory()  # how each channel names its users, as the composition root has it
CHANNELS = ["telegram", "slack", "console"]

TELEGRAM_USER = Who("user", channel="telegram", user_id="123456789")
SLACK_USER = Who("user", channel="slack", user_id="U012ABC")
ALICE = Who("username", username="alice")
DEFAULT = Who("default")
HERE = Who("here")


def refusal(args: str, channel: str = "telegram") -> QuotaSyntaxError:
    """The error ``args`` raises, after checking the shape every refusal shares."""
    with pytest.raises(QuotaSyntaxError) as caught:
        parse_quota(args, channel, NAMES)
    error = caught.value
    first, _, rest = str(error).partition("\n")
    assert first == error.problem
    assert rest == GRAMMAR
    assert 0 < len(first) <= 100
    return error


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("123456789", TELEGRAM_USER),
        ("0123456789", TELEGRAM_USER),
        ("4503599627370495", Who("user", channel="telegram", user_id="4503599627370495")),
        ("@alice", ALICE),
        ("@Alice", ALICE),
        ("@ALICE", ALICE),
        ("@a", Who("username", username="a")),
        ("@john_doe99", Who("username", username="john_doe99")),
        ("@john.smith", Who("username", username="john.smith")),
        ("@mary-jane", Who("username", username="mary-jane")),
        ("@" + "a" * 32, Who("username", username="a" * 32)),
        ("<@U012ABC>", SLACK_USER),
        ("<@U012ABC|bob>", SLACK_USER),
        ("<@U012ABC|Bob Smith>", SLACK_USER),
        ("<@W012ABCDEF>", Who("user", channel="slack", user_id="W012ABCDEF")),
        ("U012ABCDEF", Who("user", channel="slack", user_id="U012ABCDEF")),
        ("W0123456789A", Who("user", channel="slack", user_id="W0123456789A")),
        ("U01234567", Who("user", channel="slack", user_id="U01234567")),
        ("default", DEFAULT),
        ("Default", DEFAULT),
        ("DEFAULT", DEFAULT),
        ("here", HERE),
        ("HERE", HERE),
        ("@here", HERE),
        ("<!here>", HERE),
        ("<!here|here>", HERE),
    ],
)
def test_every_form_of_who(who: str, expected: Who) -> None:
    assert parse_quota(f"show {who}", "telegram", NAMES) == QuotaShow(expected)
    assert parse_quota(f"reset {who}", "slack", NAMES) == QuotaReset(expected)
    assert parse_quota(f"set {who} 1 daily", "console", NAMES) == QuotaSet(
        expected, 1_000_000, Period.DAILY
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("set 123456789 5 daily", QuotaSet(TELEGRAM_USER, 5_000_000, Period.DAILY)),
        ("set @alice 0.5 weekly", QuotaSet(ALICE, 500_000, Period.WEEKLY)),
        ("set <@U012ABC> $0.50 monthly", QuotaSet(SLACK_USER, 500_000, Period.MONTHLY)),
        ("set default 0.50$ total", QuotaSet(DEFAULT, 500_000, Period.TOTAL)),
        ("set here $ 3 daily", QuotaSet(HERE, 3_000_000, Period.DAILY)),
        ("set here 3 $ daily", QuotaSet(HERE, 3_000_000, Period.DAILY)),
        ("set default 1,000.25 weekly", QuotaSet(DEFAULT, 1_000_250_000, Period.WEEKLY)),
        ("set default 0.000001 daily", QuotaSet(DEFAULT, 1, Period.DAILY)),
        ("set default 0 daily", QuotaSet(DEFAULT, 0, Period.DAILY)),
        ("set default 1000000 total", QuotaSet(DEFAULT, 10**12, Period.TOTAL)),
        ("SET Default 5 Daily", QuotaSet(DEFAULT, 5_000_000, Period.DAILY)),
        ("Set @Alice 2 WEEKLY", QuotaSet(ALICE, 2_000_000, Period.WEEKLY)),
        ("  set   default \t 5\n daily  ", QuotaSet(DEFAULT, 5_000_000, Period.DAILY)),
        ("set\u00a0default\u00a05\u00a0daily", QuotaSet(DEFAULT, 5_000_000, Period.DAILY)),
        ("set <@U012ABC|Bob Smith> 5 monthly", QuotaSet(SLACK_USER, 5_000_000, Period.MONTHLY)),
        ("show", QuotaShow(None)),
        ("SHOW", QuotaShow(None)),
        ("  show  ", QuotaShow(None)),
        ("show 123456789", QuotaShow(TELEGRAM_USER)),
        ("reset @alice", QuotaReset(ALICE)),
        ("Reset here", QuotaReset(HERE)),
    ],
)
def test_accepted_commands(args: str, expected: object) -> None:
    for channel in CHANNELS:
        assert parse_quota(args, channel, NAMES) == expected


def test_a_bare_number_is_a_telegram_user_wherever_it_is_typed() -> None:
    assert parse_quota("show 42", "slack", NAMES) == QuotaShow(
        Who("user", channel="telegram", user_id="42")
    )


def test_the_slack_mention_name_is_not_kept() -> None:
    command = parse_quota("show <@U012ABC|bob>", "slack", NAMES)
    assert isinstance(command, QuotaShow)
    assert command.who == Who("user", channel="slack", user_id="U012ABC")
    assert command.who is not None
    assert command.who.username is None


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("", "Say what to do"),
        ("   ", "Say what to do"),
        ("\n", "Say what to do"),
        ("frobnicate", "Unknown /quota action"),
        ("delete 123", "Unknown /quota action"),
        ("sett 123 5 daily", "Unknown /quota action"),
        ("set", "Say whose budget to set"),
        ("set 123", "Say how many dollars, and the period"),
        ("set 123 5", "Say the period after the amount"),
        ("set 123 daily", "Say how many dollars, before the period"),
        ("set 123 5 daily extra", "Too many words"),
        ("set 123 5 6 daily", "Too many words"),
        ("set 123 $ 5 $ daily", "Too many words"),
        ("set 123 5 yearly", "Unknown period"),
        ("set 123 5 day", "Unknown period"),
        ("set 123 5 $", "Unknown period"),
        ("set 123 -5 daily", "can't be negative"),
        ("set 123 -0.01 daily", "can't be negative"),
        ("set 123 $-5 daily", "can't be negative"),
        ("set 123 five daily", "not an amount"),
        ("set 123 1e3 daily", "Write the amount out in full"),
        ("set 123 NaN daily", "plain number"),
        ("set 123 Infinity daily", "plain number"),
        ("set 123 0.0000001 daily", "at most 6 decimal places"),
        ("set 123 1000000.01 daily", "too large"),
        ("set 123 0,5 daily", "Use a dot for cents"),
        ("set 123 \u0661\u0662 daily", "digits 0 to 9"),
        ("show 123 456", "Too many words"),
        ("show @alice @bob", "Too many words"),
        ("reset", "Say whose budget to reset"),
        ("reset 123 daily", "Too many words"),
        ("show @", "Write the username after the @"),
        ("show @@alice", "not a username"),
        ("show @alice!", "not a username"),
        ("show @.alice", "not a username"),
        ("show @alice.", "not a username"),
        ("show @" + "a" * 33, "not a username"),
        ("show @al ice", "Too many words"),
        ("show <@>", "not a Slack user mention"),
        ("show <@u012abc>", "not a Slack user mention"),
        ("show <@U1>", "not a Slack user mention"),
        ("show <@U012ABC", "not a Slack user mention"),
        ("show <script>", "not a Slack user mention"),
        ("show <#C012ABC|general>", "That is a Slack channel"),
        ("show -1001234567890", "to budget a group"),
        ("show 0", "not a Telegram user id"),
        ("show 000", "not a Telegram user id"),
        ("show 4503599627370496", "not a Telegram user id"),
        ("show 99999999999999999999999", "not a Telegram user id"),
        ("show \u0661\u0662\u0663", "digits 0 to 9"),
        ("show \uff11\uff12\uff13", "digits 0 to 9"),
        ("show 12\u0663", "digits 0 to 9"),
        ("show u012abcdef", "can't tell whose budget"),
        ("show U012", "can't tell whose budget"),
        ("show bob", "can't tell whose budget"),
        ("show 123;", "can't tell whose budget"),
        ("show 123;DROP", "can't tell whose budget"),
        ("show '); DROP TABLE budgets;--", "Too many words"),
        ("show ${jndi:ldap://x}", "can't tell whose budget"),
        ("show $(rm -rf /)", "Too many words"),
        ("show 123\u200b", "invisible or control characters"),
        ("show \u202eecila@", "invisible or control characters"),
        ("set 123 5\x00 daily", "invisible or control characters"),
        ("show \x1b[31mred", "invisible or control characters"),
        ("x" * (MAX_ARGS_LENGTH + 1), "too long"),
        ("set 123 5 daily" + " " * MAX_ARGS_LENGTH, "too long"),
    ],
)
def test_refusals(args: str, problem: str) -> None:
    assert problem in refusal(args).problem


@pytest.mark.parametrize(
    ("channel", "hint"),
    [
        ("telegram", "numeric user id or @username"),
        ("slack", "mention them"),
        ("console", "<channel>:<id>"),
        ("shell", "telegram:<id>"),
    ],
)
def test_the_hint_for_an_unknown_who_suits_the_channel(channel: str, hint: str) -> None:
    assert hint in refusal("show bob", channel).problem


def test_an_amount_error_is_kept_as_the_cause() -> None:
    error = refusal("set 123 -5 daily")
    assert isinstance(error.__cause__, AmountError)
    assert error.problem == str(error.__cause__)


def test_refusals_are_user_input_errors_shown_as_they_are() -> None:
    error = refusal("set 123 5 hourly")
    assert isinstance(error, ValueError)
    assert isinstance(error, UserInputError)
    assert user_message(error) == str(error)


def test_the_grammar_has_the_three_usage_lines_and_explains_who() -> None:
    lines = GRAMMAR.splitlines()
    assert lines[:3] == [
        "/quota set <who> <usd> <daily|weekly|monthly|total>",
        "/quota show [<who>]",
        "/quota reset <who>",
    ]
    assert len(lines) == 4
    assert lines[3].startswith("<who> is")
    for form in ("Telegram user id", "@username", "Slack", "default", "here"):
        assert form in lines[3]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "user", "user_id": "1"}, "takes channel and user_id"),
        ({"kind": "user", "channel": "telegram"}, "takes channel and user_id"),
        ({"kind": "username"}, "takes username"),
        ({"kind": "username", "username": "a", "channel": "slack"}, "takes username"),
        ({"kind": "default", "username": "a"}, "takes no other field"),
        ({"kind": "here", "channel": "slack"}, "takes no other field"),
    ],
)
def test_who_refuses_fields_that_do_not_fit_its_kind(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Who(**fields)


@PROPERTY
@given(
    who=st.sampled_from(["123456789", "@alice", "<@U012ABC>", "default", "here"]),
    micros=st.integers(min_value=0, max_value=10**12),
    period=st.sampled_from(list(Period)),
    channel=st.sampled_from(CHANNELS),
)
def test_set_reads_any_formatted_amount(
    who: str, micros: int, period: Period, channel: str
) -> None:
    command = parse_quota(f"set {who} {format_usd(micros)} {period.upper()}", channel, NAMES)
    assert isinstance(command, QuotaSet)
    assert command.micros == micros
    assert command.period is period


@PROPERTY
@given(args=st.text(max_size=MAX_ARGS_LENGTH + 20), channel=st.sampled_from(CHANNELS))
def test_any_text_parses_or_is_refused_with_the_grammar(args: str, channel: str) -> None:
    try:
        command = parse_quota(args, channel, NAMES)
    except QuotaSyntaxError as error:
        assert str(error).endswith(GRAMMAR)
        assert "\n" not in error.problem
    else:
        assert isinstance(command, QuotaSet | QuotaShow | QuotaReset)
        assert len(args) <= MAX_ARGS_LENGTH


@PROPERTY
@given(
    words=st.lists(
        st.sampled_from(["set", "show", "reset", "@bob", "42", "5", "$", "daily", "<@U012ABC>"]),
        max_size=7,
    )
)
def test_sequences_of_plausible_words_never_crash(words: list[str]) -> None:
    args = " ".join(words)
    try:
        command = parse_quota(args, "telegram", NAMES)
    except QuotaSyntaxError as error:
        assert error.problem
    else:
        assert args.split()[0].lower() in {"set", "show", "reset"}
        if isinstance(command, QuotaSet):
            assert len(args.split()) in (4, 5)
