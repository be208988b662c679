"""Shared benchmark helpers: the fake OpenAI server in another process, and percentiles."""

from __future__ import annotations

import contextvars
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from core.models.llm import LLMEvent, LLMGateway, LLMRequest

API_KEY = "sk-bench"

UPSTREAM: contextvars.ContextVar[list[float]] = contextvars.ContextVar("upstream")
"""The seconds the current turn spent waiting for the API, appended by the timing wrappers;
set a fresh list before each turn."""


class TimedGateway:
    """Wraps the real gateway and adds the time spent in model calls to ``UPSTREAM``."""

    def __init__(self, inner: LLMGateway) -> None:
        self._inner = inner

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        spent = UPSTREAM.get()
        iterator = self._inner.stream(request).__aiter__()
        while True:
            began = time.perf_counter()
            try:
                event = await iterator.__anext__()
            except StopAsyncIteration:
                spent.append(time.perf_counter() - began)
                return
            spent.append(time.perf_counter() - began)
            yield event


@contextmanager
def fake_process(module: str, marker: str, *args: str) -> Iterator[str]:
    """Run a fake from ``tests.fakes`` in its own process; yields the URL it announces."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(f"{marker} "):
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def fake_openai_process() -> AbstractContextManager[str]:
    """The fake OpenAI server in its own process; yields its base URL."""
    return fake_process("tests.fakes.openai_server", "FAKE_OPENAI", "--api-key", API_KEY)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain Markdown table."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, 0 for no values."""
    return statistics.fmean(values) if values else 0.0
