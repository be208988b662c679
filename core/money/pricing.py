"""Turning reported usage into integer micro-dollars with the registry's price table, and
the cost of a call whose output is not yet known, for capping it to the money left."""

from __future__ import annotations

from dataclasses import dataclass

from core.models.llm import Usage
from core.models.realtime import RealtimeUsage
from core.models.registry import RealtimePrices, TokenPrices

PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class LinearCost:
    """The price of a call that grows with what it produces: ``fixed`` plus ``per_unit`` for
    each unit, over ``scale``, rounded up to the next micro-dollar (a chat call: its input,
    then each output token, in micro-dollars per million tokens)."""

    fixed: int
    per_unit: int
    scale: int = 1

    def of(self, units: int) -> int:
        """The cost of the call producing ``units`` units, in micro-dollars."""
        return -(-(self.fixed + units * self.per_unit) // self.scale)

    def units_within(self, micros: int, most: int) -> int:
        """The most units, up to ``most``, that ``micros`` pays for with the fixed part; -1
        when not even the fixed part fits."""
        room = micros * self.scale - self.fixed  # ceil(x / scale) <= micros iff this >= 0
        if room < 0:
            return -1
        if self.per_unit == 0:
            return most
        return min(most, room // self.per_unit)


def token_cost(prices: TokenPrices, usage: Usage) -> int:
    """Cost of ``usage`` in micro-dollars, rounded up to the next whole micro-dollar."""
    uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
    scaled = (
        uncached * prices.input
        + usage.cached_input_tokens * prices.cached_input
        + usage.output_tokens * prices.output
    )
    return -(-scaled // PER_MILLION)


def output_cost(prices: TokenPrices, input_tokens: int) -> LinearCost:
    """The cost of a call with ``input_tokens`` of uncached input, by the output tokens it
    produces (equal to ``token_cost`` of that usage)."""
    return LinearCost(input_tokens * prices.input, prices.output, PER_MILLION)


def price_sheet(prices: TokenPrices) -> dict[str, int]:
    """The unit prices used, as stored on each usage row (micro-dollars per 1M tokens)."""
    return {
        "input_per_1m": prices.input,
        "cached_input_per_1m": prices.cached_input,
        "output_per_1m": prices.output,
    }


def realtime_cost(prices: RealtimePrices, usage: RealtimeUsage) -> int:
    """Cost of one realtime response in micro-dollars, text and audio at their own prices,
    cached input at the cached prices; rounded up to the next whole micro-dollar."""
    scaled = (
        max(usage.text_input - usage.cached_text_input, 0) * prices.text_input
        + usage.cached_text_input * prices.cached_text_input
        + max(usage.audio_input - usage.cached_audio_input, 0) * prices.audio_input
        + usage.cached_audio_input * prices.cached_audio
        + usage.text_output * prices.text_output
        + usage.audio_output * prices.audio_output
    )
    return -(-scaled // PER_MILLION)


def realtime_price_sheet(prices: RealtimePrices) -> dict[str, int]:
    """A realtime model's unit prices as stored on each usage row (micro-dollars per 1M)."""
    return {
        "text_input_per_1m": prices.text_input,
        "cached_text_input_per_1m": prices.cached_text_input,
        "text_output_per_1m": prices.text_output,
        "audio_input_per_1m": prices.audio_input,
        "cached_audio_input_per_1m": prices.cached_audio,
        "audio_output_per_1m": prices.audio_output,
    }
