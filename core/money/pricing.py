"""Turning reported usage into integer micro-dollars with the registry's price table."""

from __future__ import annotations

from core.models.llm import Usage
from core.models.registry import TokenPrices

PER_MILLION = 1_000_000


def token_cost(prices: TokenPrices, usage: Usage) -> int:
    """Cost of ``usage`` in micro-dollars, rounded up to the next whole micro-dollar."""
    uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
    scaled = (
        uncached * prices.input
        + usage.cached_input_tokens * prices.cached_input
        + usage.output_tokens * prices.output
    )
    return -(-scaled // PER_MILLION)


def price_sheet(prices: TokenPrices) -> dict[str, int]:
    """The unit prices used, as stored on each usage row (micro-dollars per 1M tokens)."""
    return {
        "input_per_1m": prices.input,
        "cached_input_per_1m": prices.cached_input,
        "output_per_1m": prices.output,
    }
