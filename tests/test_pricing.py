"""Token cost in integer micro-dollars (SPEC §6): exact, rounded up, never to cents."""

from __future__ import annotations

import pytest

from core.models.llm import Usage
from core.models.registry import TokenPrices
from core.money.pricing import price_sheet, token_cost

# $2.00 input, $0.50 cached input, $8.00 output per 1M tokens.
PRICES = TokenPrices.model_validate({"input": "2.00", "cached_input": "0.50", "output": "8.00"})


def test_prices_are_micro_dollars_per_million() -> None:
    assert (PRICES.input, PRICES.cached_input, PRICES.output) == (2_000_000, 500_000, 8_000_000)


def test_cost_with_cached_tokens_is_exact() -> None:
    usage = Usage(input_tokens=1_000, cached_input_tokens=200, output_tokens=500)

    # 800 * $2/1M + 200 * $0.50/1M + 500 * $8/1M = $0.0016 + $0.0001 + $0.004
    assert token_cost(PRICES, usage) == 5_700


def test_cached_tokens_are_part_of_the_input_count() -> None:
    all_cached = Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000)
    none_cached = Usage(input_tokens=1_000_000)

    assert token_cost(PRICES, all_cached) == 500_000
    assert token_cost(PRICES, none_cached) == 2_000_000


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (Usage(input_tokens=1), 2),
        (Usage(output_tokens=1), 8),
        (Usage(cached_input_tokens=1, input_tokens=1), 1),
        (Usage(input_tokens=3, cached_input_tokens=3), 2),
    ],
)
def test_fractions_of_a_micro_dollar_round_up(usage: Usage, expected: int) -> None:
    assert token_cost(PRICES, usage) == expected


def test_rounding_up_happens_once_on_the_total() -> None:
    prices = TokenPrices.model_validate({"input": "0.40", "output": "0.40"})

    # 0.4 + 0.4 micro-dollars is 0.8, rounded up to 1 (not 1 + 1).
    assert token_cost(prices, Usage(input_tokens=1, output_tokens=1)) == 1


def test_zero_usage_costs_nothing() -> None:
    assert token_cost(PRICES, Usage()) == 0


def test_free_model_costs_nothing() -> None:
    assert token_cost(TokenPrices(), Usage(input_tokens=10**6, output_tokens=10**6)) == 0


def test_large_usage_stays_exact_integer() -> None:
    prices = TokenPrices.model_validate({"input": "1.23", "output": "0.000001"})
    usage = Usage(input_tokens=10**12 + 1, output_tokens=3)

    cost = token_cost(prices, usage)

    assert isinstance(cost, int)
    # (10**12 + 1) * 1_230_000 + 3 * 1, divided by 10**6 and rounded up.
    assert cost == 1_230_000_000_000 + 2


def test_over_reported_cache_is_not_a_negative_input() -> None:
    usage = Usage(input_tokens=100, cached_input_tokens=150)

    # No uncached input is billed: 150 * $0.50 / 1M.
    assert token_cost(PRICES, usage) == 75


def test_price_sheet_records_the_unit_prices() -> None:
    assert price_sheet(PRICES) == {
        "input_per_1m": 2_000_000,
        "cached_input_per_1m": 500_000,
        "output_per_1m": 8_000_000,
    }
