"""Benchmark: fine-tune jobs.

Part 1 — checking a training file: ``core.jobs.training.check_training_file`` (what
``/finetune`` runs before anything is uploaded, in a worker thread) on files of 1,000 to
50,000 three-message examples, counting tokens with the shipped default base model's
counter. Wall time and the Python heap's peak (tracemalloc) beyond the file's bytes.

Part 2 — what every polling round adds in every process: ``offer_fine_tuned`` (each round
of ``FineTuneJobs.poll_once``) reads the ``fine_tuned_models`` table to offer models other
processes made (SQLite), with 0, 10 and 100 stored models, after the first round has added
them (the steady state).

    python -m bench.finetune_jobs
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import tracemalloc

from bench.common import percentile, table
from core.conversation.tokens import TokenCounters
from core.jobs.training import check_training_file
from core.models.fine_tuned import FineTunedModel, offer_fine_tuned
from core.models.registry import load_registry
from core.models.sql_fine_tuned import SqlFineTunedModels
from core.storage.database import create_engine, upgrade

SIZES = (1_000, 10_000, 50_000)
STORED = (0, 10, 100)
ROUNDS = 200


def training_file(examples: int) -> bytes:
    lines = []
    for n in range(examples):
        example = {
            "messages": [
                {"role": "system", "content": "You are a terse assistant for a bicycle shop."},
                {"role": "user", "content": f"Do you have inner tubes for size {n % 30} wheels?"},
                {"role": "assistant", "content": "Yes: 26, 27.5 and 29 inch, Presta or Schrader."},
            ]
        }
        lines.append(json.dumps(example) + "\n")
    return "".join(lines).encode()


def checking() -> list[list[object]]:
    registry = load_registry(None, None)
    base = registry.models[registry.default_fine_tune]
    counters = TokenCounters()
    counters.preload([base.encoding])
    count = counters.for_encoding(base.encoding).count
    rows: list[list[object]] = []
    for size in SIZES:
        data = training_file(size)
        tracemalloc.start()
        started = time.perf_counter()
        checked = check_training_file(data, count, max_example_tokens=base.context_window)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append(
            [
                f"{size:,}",
                f"{len(data) / 1e6:.1f}",
                f"{checked.tokens:,}",
                f"{seconds:.2f}",
                f"{peak / 1e6:.1f}",
            ]
        )
    return rows


async def refreshing() -> list[list[object]]:
    rows: list[list[object]] = []
    for stored in STORED:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{folder}/bench.db"
            await upgrade(url)
            engine = create_engine(url)
            try:
                models = SqlFineTunedModels(engine)
                for n in range(stored):
                    await models.add(
                        FineTunedModel(f"ft:gpt-4.1-mini:org:m{n}:{n:08x}", "gpt-4.1-mini"), None
                    )
                registry = load_registry(None, None)
                assert len(await offer_fine_tuned(registry, models)) == stored
                seconds: list[float] = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    await offer_fine_tuned(registry, models)
                    seconds.append(time.perf_counter() - started)
            finally:
                await engine.dispose()
        rows.append(
            [
                str(stored),
                f"{percentile(seconds, 0.5) * 1000:.2f}",
                f"{percentile(seconds, 0.99) * 1000:.2f}",
            ]
        )
    return rows


async def main() -> None:
    print("Checking a training file (before anything is uploaded)\n")
    print(table(["examples", "file MB", "tokens", "check s", "peak MB"], checking()))
    print("\nWhat each polling round adds: offering models made elsewhere (SQLite)\n")
    print(table(["stored models", "p50 ms", "p99 ms"], await refreshing()))


if __name__ == "__main__":
    asyncio.run(main())
