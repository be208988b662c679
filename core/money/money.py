"""US-dollar amounts as integer micro-dollars: parsing what people type and formatting for them.

Money is never a float here (SPEC §6): text goes through ``decimal.Decimal`` and comes out as
an exact whole number of micro-dollars.
"""

from __future__ import annotations

import re
from decimal import Decimal

from core.errors import UserInputError

MICROS_PER_DOLLAR = 1_000_000
MAX_USD_MICROS = 1_000_000 * MICROS_PER_DOLLAR  # a budget above a million dollars is absurd
MAX_DECIMALS = 6
MAX_AMOUNT_LENGTH = 40

_EXAMPLE = "like 0.50 or $12"
# ASCII digits only: ``\d`` would also take Arabic-Indic and other Unicode digits.
_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.(?P<fraction>[0-9]*))?")
_DECIMAL_COMMA = re.compile(r"[0-9]+,[0-9]{1,2}")
_EXPONENT = re.compile(r"[0-9.,]*[0-9][eE][+-]?[0-9]+")
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
_MINUS_SIGNS = ("-", "\N{MINUS SIGN}")


class AmountError(UserInputError, ValueError):
    """Text that is not a usable amount of US dollars; the message is safe to show a chat user."""


def parse_usd(text: str) -> int:
    """The amount of US dollars in ``text``, in micro-dollars.

    Accepts ``0.5``, ``$0.50``, ``0.50$``, ``12``, ``1,000.25``, `` $ 3 `` and down to
    ``0.000001``; zero is allowed. Raises ``AmountError`` for anything else.
    """
    body = text.strip()
    if not body:
        raise AmountError(f"No amount given: write it in US dollars, {_EXAMPLE}.")
    if len(body) > MAX_AMOUNT_LENGTH:
        raise AmountError("That amount is too long to be a budget.")
    if body.startswith("$"):
        body = body[1:].strip()
    elif body.endswith("$"):
        body = body[:-1].strip()
    if not body:
        raise AmountError(f"No amount given: write it in US dollars, {_EXAMPLE}.")
    if body.startswith(_MINUS_SIGNS):
        raise AmountError("An amount can't be negative.")
    if body.lower().lstrip("+") in _NOT_FINITE:
        raise AmountError(f"The amount must be a plain number of dollars, {_EXAMPLE}.")
    if _EXPONENT.fullmatch(body):
        raise AmountError("Write the amount out in full, like 1000 rather than 1e3.")
    if any(char.isdigit() and not char.isascii() for char in body):
        raise AmountError("Write the amount with the digits 0 to 9.")
    match = _AMOUNT.fullmatch(body)
    if match is None or not match.group("whole") + (match.group("fraction") or ""):
        if _DECIMAL_COMMA.fullmatch(body):
            raise AmountError("Use a dot for cents and commas only between thousands: 1,000.50.")
        raise AmountError(f"That is not an amount in US dollars; write it {_EXAMPLE}.")
    fraction = match.group("fraction") or ""
    if len(fraction) > MAX_DECIMALS:
        raise AmountError("Amounts go down to a millionth of a dollar: at most 6 decimal places.")
    # Built from text, a Decimal is exact whatever the context's precision.
    dollars = Decimal(f"{match.group('whole').replace(',', '') or '0'}.{fraction or '0'}")
    if dollars > Decimal(MAX_USD_MICROS) / MICROS_PER_DOLLAR:
        raise AmountError(f"That amount is too large: the most is {format_usd(MAX_USD_MICROS)}.")
    return int(dollars.scaleb(MAX_DECIMALS))


def format_usd(micros: int) -> str:
    """``micros`` as dollars for people: ``$1,234.56``, ``$0.000123``, ``-$0.50``.

    At least two decimals and up to six, so no micro-dollar is ever hidden by rounding.
    """
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_DOLLAR)
    fraction = f"{rest:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars:,}.{fraction}"
