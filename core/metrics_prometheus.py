"""The ``Metrics`` port on prometheus-client, in a registry of its own (not the library's
global one), so several instances in one process (tests, benchmarks) never collide.

Metric names are part of the operator contract (README, "Operations server").
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from core.conversation.store import UsageRecord
from core.metrics import Outcome

MICRO = 1_000_000
TURN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)
FIRST_TEXT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class PrometheusMetrics:
    """Counters, gauges and histograms for the ``Metrics`` port; ``registry`` is what the
    operations server's ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)  # process_* CPU, memory and open files (Linux)
        self._turns = Counter(
            "switchboard_turns",
            "Turns by channel and how they ended (answered, cancelled, failed, interrupted).",
            ["channel", "outcome"],
            registry=registry,
        )
        self._turn_seconds = Histogram(
            "switchboard_turn_seconds",
            "Seconds from a turn's start to its final reply event.",
            ["channel"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self._first_text = Histogram(
            "switchboard_first_text_seconds",
            "Seconds from a turn's start to its first reply text.",
            ["channel"],
            buckets=FIRST_TEXT_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "switchboard_turns_in_flight", "Turns generating a reply now.", registry=registry
        )
        self._tokens = Counter(
            "switchboard_tokens",
            "Tokens used, by model and kind (input, cached_input, output).",
            ["model", "kind"],
            registry=registry,
        )
        self._cost = Counter(
            "switchboard_cost_usd",
            "Cost in US dollars by model, as charged to users' budgets.",
            ["model"],
            registry=registry,
        )
        self._upstream_errors = Counter(
            "switchboard_upstream_errors",
            "Turns failed by the model provider, by kind of error.",
            ["kind"],
            registry=registry,
        )
        self._throttled = Counter(
            "switchboard_platform_throttled",
            "HTTP 429 answers from a chat platform, by platform.",
            ["platform"],
            registry=registry,
        )
        self._open_jobs = Gauge(
            "switchboard_open_jobs", "Batch and fine-tune jobs still open.", registry=registry
        )

    def turn_started(self, channel: str) -> None:
        """One more turn in flight."""
        self._in_flight.inc()

    def turn_ended(self, channel: str, outcome: Outcome, seconds: float) -> None:
        """Count the turn by outcome and time it."""
        self._in_flight.dec()
        self._turns.labels(channel, outcome).inc()
        self._turn_seconds.labels(channel).observe(seconds)

    def first_text(self, channel: str, seconds: float) -> None:
        """Time to first text."""
        self._first_text.labels(channel).observe(seconds)

    def usage(self, records: Sequence[UsageRecord]) -> None:
        """Tokens and cost by model."""
        for record in records:
            for kind, tokens in (
                ("input", record.input_tokens),
                ("cached_input", record.cached_input_tokens),
                ("output", record.output_tokens),
            ):
                if tokens:
                    self._tokens.labels(record.model, kind).inc(tokens)
            self._cost.labels(record.model).inc(record.cost_micros / MICRO)

    def upstream_error(self, kind: str) -> None:
        """Count an upstream failure."""
        self._upstream_errors.labels(kind).inc()

    def platform_throttled(self, platform: str) -> None:
        """Count a platform 429."""
        self._throttled.labels(platform).inc()

    def open_jobs(self, count: int) -> None:
        """Set the open jobs gauge."""
        self._open_jobs.set(count)
