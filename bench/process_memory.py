"""Benchmark: how heavy a ``switchboard run telegram`` process is (issue 17, item 3).

A real ``switchboard run telegram`` process (``python -m bots.cli``) is started against the
fake Bot API and the fake OpenAI, each in its own process, on a SQLite database that
``switchboard db upgrade`` migrated beforehand (so it starts as a restart does; a first
start also runs the migrations). Reported per checkout: start-up wall and CPU (user +
system) seconds until the first ``getUpdates`` reaches the fake Bot API, resident memory
(``VmRSS``) idle two seconds after that, and resident memory after ``--turns`` short
turns spread over ``--chats`` chats.

Several checkouts (``--checkout DIR``, repeatable; default: this one) are measured in the
same run, alternating, so that their figures can be compared as ratios::

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

from bench.common import API_KEY, fake_openai_process, fake_process, table

TOKEN = "123456:BENCH-token"
UNLIMITED = (
    "--private-rate",
    "1000000",
    "--private-burst",
    "1000000",
    "--group-per-minute",
    "1000000",
    "--group-burst",
    "1000000",
    "--global-per-second",
    "1000000",
    "--token",
    TOKEN,
)
RAISED = {
    "SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND": "1000000",
    "SWITCHBOARD_TELEGRAM_CHAT_BURST": "1000000",
    "SWITCHBOARD_TELEGRAM_GROUP_PER_MINUTE": "1000000",
    "SWITCHBOARD_TELEGRAM_GROUP_BURST": "1000000",
    "SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND": "1000000",
}
"""The pacer's limits raised, so that 1,000 turns take seconds, not minutes."""
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


async def measure(
    python: str, checkout: Path, fakes: tuple[str, str], turns: int, chats: int, base: int
) -> list[float]:
    """One process of ``checkout``: start-up wall, start-up CPU, idle RSS, RSS after turns."""
    telegram_url, openai_url = fakes
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
    parser.add_argument("--checkout", action="append", type=Path, help="a source tree to run")
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
    checkouts: list[Path] = [c.resolve() for c in args.checkout or [Path(".")]]
    figures: dict[Path, list[list[float]]] = {c: [] for c in checkouts}
    for checkout in checkouts:
        folders = [str(checkout / name) for name in ("bots", "core", "migrations")]
        compiling = await asyncio.create_subprocess_exec(
            args.python, "-m", "compileall", "-q", *folders
        )
        if await compiling.wait() != 0:
            raise RuntimeError(f"{checkout}: compileall failed")
    with (
        fake_openai_process() as openai_url,
        fake_process("tests.fakes.telegram_server", "FAKE_TELEGRAM", *UNLIMITED) as telegram_url,
    ):
        for run in range(args.runs):
            for index, checkout in enumerate(checkouts):  # alternating
                base = 10_000 * (1 + run * len(checkouts) + index)  # fresh chats every process
                fakes = (telegram_url, openai_url)
                figures[checkout].append(
                    await measure(args.python, checkout, fakes, args.turns, args.chats, base)
                )
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
    for checkout in checkouts:
        rows.append([str(checkout), *medians[checkout]])
    if len(checkouts) > 1:
        first, last = medians[checkouts[0]], medians[checkouts[-1]]
        rows.append(
            ["ratio last/first", *[b / a if a else 0.0 for a, b in zip(first, last, strict=True)]]
        )
    print(f"Median of {args.runs} processes per checkout, alternating; bot on {args.python}")
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
