"""Benchmark: how heavy a ``switchboard run telegram`` process is (issue 17, item 3).

A real ``switchboard run telegram`` process (``python -m bots.cli``) is started against the
fake Bot API and the fake OpenAI, each in its own process, on a SQLite database that
``switchboard db upgrade`` migrated beforehand (so it starts as a restart does; a first
start also runs the migrations). Reported per checkout: start-up wall and CPU (user +
system) seconds until the first ``getUpdates`` reaches the fake Bot API, resident memory
(``VmRSS``) idle two seconds after that, and resident memory after ``--turns`` short
turns spread over ``--chats`` chats.

Several checkouts (``--checkout DIR``, repeatable; default: this one) are measured in the
same run, alternating, so that their figures can be compared as ratios (a checkout may
name its own interpreter and environment variables, e.g. an allocator setting:
``--checkout '.;python=/tmp/venv/bin/python;MALLOC_ARENA_MAX=2'``)::

    git worktree add /tmp/light_base <sha>
    python -m bench.process_memory --checkout /tmp/light_base --checkout . [--runs 3]

Each checkout's ``bots`` and ``core`` are put first on ``PYTHONPATH`` and compiled to
bytecode first (as ``pip install`` does for a deployment; otherwise every start would
compile them again where ``PYTHONDONTWRITEBYTECODE`` is set); the fakes and this file come
from the current checkout, the installed libraries from ``--python``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import (
    API_KEY,
    RAISED,
    TOKEN,
    UNLIMITED,
    fake_openai_process,
    fake_process,
    table,
)

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


class Variant:
    """A ``--checkout`` value: ``DIR[;python=PATH][;NAME=VALUE]...``."""

    def __init__(self, spec: str, python: str) -> None:
        self.spec = spec
        folder, *options = spec.split(";")
        self.checkout = Path(folder).resolve()
        self.python = python
        self.env: dict[str, str] = {}
        for option in options:
            name, _, value = option.partition("=")
            if name == "python":
                self.python = value
            else:
                self.env[name] = value


async def measure(
    variant: Variant, fakes: tuple[str, str], turns: int, chats: int, base: int
) -> list[float]:
    """One process of ``checkout``: start-up wall, start-up CPU, idle RSS, RSS after turns."""
    telegram_url, openai_url = fakes
    python, checkout = variant.python, variant.checkout
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("OPENAI_", "SWITCHBOARD_", "TELEGRAM_", "SLACK_"))
            },
            "PYTHONPATH": str(checkout),
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'bot.db'}",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_BASE_URL": f"{telegram_url}/bot",
            "TELEGRAM_BASE_FILE_URL": f"{telegram_url}/file/bot",
            "SWITCHBOARD_USER_MESSAGES_PER_MINUTE": "0",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            **RAISED,
            **variant.env,
        }
        async with aiohttp.ClientSession(telegram_url) as fake:

            async def calls(method: str, at_least: int) -> int:
                query = {"method": method, "at_least": str(at_least), "timeout": "120"}
                async with fake.get("/_fake/calls", params=query) as response:
                    return int((await response.json()).get(method, 0))

            migrate = await asyncio.create_subprocess_exec(
                python, "-m", "bots.cli", "db", "upgrade", env=env, cwd=folder,
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            if await migrate.wait() != 0:
                raise RuntimeError(f"{checkout}: db upgrade failed")
            polls = await calls("getUpdates", 0)
            sent = await calls("sendMessage", 0)
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "bots.cli",
                "run",
                "telegram",
                env=env,
                cwd=folder,
                stdout=asyncio.subprocess.DEVNULL,
            )
            try:
                await calls("getUpdates", polls + 1)
                wall = time.perf_counter() - started
                cpu = cpu_seconds(process.pid)
                await asyncio.sleep(2)
                idle = rss_mb(process.pid)
                for first in range(0, turns, chats):
                    body = [
                        {"chat_id": base + n, "text": f"question {first + n}"}
                        for n in range(min(chats, turns - first))
                    ]
                    async with fake.post("/_fake/private_messages", json=body) as response:
                        response.raise_for_status()
                    if await calls("sendMessage", sent + first + len(body)) < sent + first + len(
                        body
                    ):
                        raise RuntimeError(f"{checkout}: turns were not answered")
                await asyncio.sleep(2)
                busy = rss_mb(process.pid)
            finally:
                process.terminate()
                await process.wait()
    return [wall, cpu, idle, busy]


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.process_memory", description=__doc__)
    parser.add_argument(
        "--checkout",
        action="append",
        help="a source tree to run, optionally with ';python=PATH' and ';NAME=VALUE' "
        "(environment variables) appended",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter (and so the installed libraries) the bot runs on "
        "(default: this one; a venv with only the runtime dependencies, without the dev "
        "tools, measures what a deployment loads)",
    )
    parser.add_argument("--runs", type=int, default=3, help="processes per checkout")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=100)
    args = parser.parse_args()
    checkouts = [Variant(spec, args.python) for spec in args.checkout or ["."]]
    figures: dict[int, list[list[float]]] = {i: [] for i in range(len(checkouts))}
    for variant in checkouts:
        folders = [str(variant.checkout / name) for name in ("bots", "core", "migrations")]
        compiling = await asyncio.create_subprocess_exec(
            variant.python, "-m", "compileall", "-q", *folders
        )
        if await compiling.wait() != 0:
            raise RuntimeError(f"{variant.spec}: compileall failed")
    with (
        fake_openai_process() as openai_url,
        fake_process("tests.fakes.telegram_server", "FAKE_TELEGRAM", *UNLIMITED) as telegram_url,
    ):
        for run in range(args.runs):
            for index, variant in enumerate(checkouts):  # alternating
                base = 10_000 * (1 + run * len(checkouts) + index)  # fresh chats every process
                fakes = (telegram_url, openai_url)
                figures[index].append(await measure(variant, fakes, args.turns, args.chats, base))
    headers = [
        "checkout",
        "start-up wall s",
        "start-up CPU s",
        "idle RSS MB",
        f"RSS after {args.turns} turns MB",
    ]
    rows: list[list[object]] = []
    medians = {
        c: [statistics.median(col) for col in zip(*figures[c], strict=True)] for c in figures
    }
    for index, variant in enumerate(checkouts):
        rows.append([variant.spec, *medians[index]])
    if len(checkouts) > 1:
        first, last = medians[0], medians[len(checkouts) - 1]
        rows.append(
            ["ratio last/first", *[b / a if a else 0.0 for a, b in zip(first, last, strict=True)]]
        )
    print(
        f"Median of {args.runs} processes per checkout, alternating; "
        f"bot on {args.python} unless the checkout names its own"
    )
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
