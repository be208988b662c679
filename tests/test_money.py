"""Integer micro-dollars (SPEC §6): parsing what admins type and formatting it back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UserInputError, user_message
from core.money.money import MAX_USD_MICROS, MICROS_PER_DOLLAR, AmountError, format_usd, parse_usd

PROPERTY = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.5", 500_000),
        ("$0.50", 500_000),
        ("0.50$", 500_000),
        ("0.50 $", 500_000),
        ("12", 12_000_000),
        ("1,000.25", 1_000_250_000),
        ("1,000,000", MAX_USD_MICROS),
        (" $ 3 ", 3_000_000),
        ("0.000001", 1),
        ("0.123456", 123_456),
        ("0", 0),
        ("$0", 0),
        ("0.00", 0),
        (".5", 500_000),
        ("5.", 5_000_000),
        ("007", 7_000_000),
        ("1000000.000000", MAX_USD_MICROS),
        ("999999.999999", MAX_USD_MICROS - 1),
        ("\t2.5\n", 2_500_000),
    ],
)
def test_parse_usd_accepts(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "No amount given"),
        ("   ", "No amount given"),
        ("$", "No amount given"),
        ("-1", "can't be negative"),
        ("-0.50", "can't be negative"),
        ("-$1", "can't be negative"),
        ("$-1", "can't be negative"),
        ("\N{MINUS SIGN}1", "can't be negative"),
        ("1.0000001", "at most 6 decimal places"),
        ("0.0000001", "at most 6 decimal places"),
        ("NaN", "plain number"),
        ("nan", "plain number"),
        ("sNaN", "plain number"),
        ("Infinity", "plain number"),
        ("inf", "plain number"),
        ("+inf", "plain number"),
        ("$Infinity", "plain number"),
        ("1e3", "Write the amount out in full"),
        ("1E3", "Write the amount out in full"),
        ("2.5e-3", "Write the amount out in full"),
        ("1e+3", "Write the amount out in full"),
        ("1000000.000001", "too large"),
        ("1,000,001", "too large"),
        ("9" * 40, "too large"),
        ("9" * 41, "too long"),
        ("0,5", "Use a dot for cents"),
        ("12,50", "Use a dot for cents"),
        ("\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT TWO}", "digits 0 to 9"),
        ("\N{FULLWIDTH DIGIT FIVE}", "digits 0 to 9"),
        ("abc", "not an amount"),
        ("five", "not an amount"),
        ("1,00", "Use a dot for cents"),
        ("1,0000", "not an amount"),
        ("1 000", "not an amount"),
        (".", "not an amount"),
        ("1.2.3", "not an amount"),
        ("$5$", "not an amount"),
        ("$$5", "not an amount"),
        ("+5", "not an amount"),
        ("0x10", "not an amount"),
        ("5 dollars", "not an amount"),
        ("€5", "not an amount"),
        ("1_000", "not an amount"),
        ("5; DROP TABLE budgets", "not an amount"),
    ],
)
def test_parse_usd_rejects(text: str, problem: str) -> None:
    with pytest.raises(AmountError, match=problem) as caught:
        parse_usd(text)
    message = str(caught.value)
    assert message.endswith(".")
    assert "\n" not in message
    assert len(message) < 100


def test_amount_errors_are_user_input_errors() -> None:
    with pytest.raises(AmountError) as caught:
        parse_usd("lots")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, UserInputError)
    assert user_message(caught.value) == str(caught.value)


def test_the_too_large_message_names_the_limit() -> None:
    with pytest.raises(AmountError, match=r"the most is \$1,000,000\.00"):
        parse_usd("2000000")


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (500_000, "$0.50"),
        (12_000_000, "$12.00"),
        (1_234_560_000, "$1,234.56"),
        (123, "$0.000123"),
        (123_456, "$0.123456"),
        (1, "$0.000001"),
        (10_000, "$0.01"),
        (1_500_000, "$1.50"),
        (1_234_500, "$1.2345"),
        (MAX_USD_MICROS, "$1,000,000.00"),
        (-500_000, "-$0.50"),
        (-1, "-$0.000001"),
        (-1_234_567_891, "-$1,234.567891"),
    ],
)
def test_format_usd(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_constants() -> None:
    assert MICROS_PER_DOLLAR == 1_000_000
    assert MAX_USD_MICROS == 1_000_000_000_000


@PROPERTY
@given(st.integers(min_value=0, max_value=MAX_USD_MICROS))
def test_parse_reads_back_what_format_writes(micros: int) -> None:
    assert parse_usd(format_usd(micros)) == micros


@PROPERTY
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_keeps_two_to_six_decimals(micros: int) -> None:
    text = format_usd(micros)
    whole, _, fraction = text.lstrip("-$").partition(".")
    assert 2 <= len(fraction) <= 6
    assert len(fraction) == 2 or not fraction.endswith("0")
    assert int(whole.replace(",", "")) == abs(micros) // MICROS_PER_DOLLAR
    assert text.startswith("-$") == (micros < 0)


@PROPERTY
@given(
    dollars=st.integers(min_value=0, max_value=999_999),
    fraction=st.text(alphabet="0123456789", min_size=0, max_size=6),
    dollar_sign=st.sampled_from(["", "$", "$ ", " $"]),
)
def test_parse_matches_exact_decimal_arithmetic(
    dollars: int, fraction: str, dollar_sign: str
) -> None:
    text = f"{dollars}.{fraction}" if fraction else str(dollars)
    typed = dollar_sign + text if dollar_sign.startswith("$") else text + dollar_sign
    expected = dollars * MICROS_PER_DOLLAR + int(fraction.ljust(6, "0"))
    assert parse_usd(typed) == expected


@PROPERTY
@given(st.text(max_size=60))
def test_parse_usd_never_fails_with_anything_but_an_amount_error(text: str) -> None:
    try:
        micros = parse_usd(text)
    except AmountError as error:
        assert str(error)
    else:
        assert 0 <= micros <= MAX_USD_MICROS
