"""The ``switchboard`` command line: running channels, the console chat, budgets and usage,
the model registry, and database migrations."""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bots.bootstrap import (
    App,
    Storage,
    bootstrap,
    open_storage,
    run_loop,
    secrets_of,
    user_directory,
)
from bots.console import ConsoleChannel
from bots.failures import explain, last_resort, quiet_uncaught
from bots.models_cli import (
    HEADERS,
    LEGEND,
    catalogue,
    check_report,
    format_table,
    offered_models,
    registry_table,
)
from bots.scheduler import RECOVERY_SECONDS, PeriodicJob, poll_jobs, scheduled
from core.access.quota_args import QuotaSyntaxError, parse_quota
from core.clock import SystemClock
from core.conversation.messages import ConversationKey, UserRef
from core.errors import ConfigError
from core.jobs.finetunes import KIND as FINETUNE
from core.jobs.polling import job_age
from core.jobs.sql_jobs import SqlJobStore
from core.logs import configure_logging
from core.money.accounting import (
    ACCESS_GRAMMAR,
    SHELL,
    Accounts,
    Caller,
    access_report,
    allow,
    block,
    clear_access,
    quota,
)
from core.money.money import format_usd
from core.money.periods import Period, window
from core.settings import Settings, load_settings, unknown_variables
from core.storage.database import check, upgrade

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

USAGE_ROWS = 10_000
SHELL_KEY = ConversationKey(SHELL, place="shell")
DEMO_HELP = "answer with the demo model built into Switchboard (no OPENAI_API_KEY needed)"
DEMO_BANNER = (
    "Demo mode: replies come from a stand-in model built into Switchboard, not from OpenAI. "
    "It understands no language but shows every feature; set OPENAI_API_KEY and drop --demo "
    "for a real model."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``switchboard`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Self-hosted OpenAI assistant for chat platforms."
    )
    parser.add_argument(
        "--env-file", help="settings file (default: .env in the current folder, if there is one)"
    )
    parser.add_argument("--version", action="version", version=f"switchboard {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a chat channel")
    run.add_argument(
        "channel",
        choices=["telegram", "slack", "all"],
        help="which channel to serve (all: every channel whose credentials are set)",
    )
    run.add_argument("--demo", action="store_true", help=DEMO_HELP)
    chat = commands.add_parser("chat", help="talk to the assistant in this terminal")
    chat.add_argument("--user", help="who you are in the conversation (default: login name)")
    chat.add_argument("--demo", action="store_true", help=DEMO_HELP)
    quota = commands.add_parser(
        "quota",
        help="set, show or reset budgets: set <who> <usd> <period> | show [<who>] | reset <who>",
    )
    quota.add_argument("words", nargs=argparse.REMAINDER, help="as after /quota in a chat")
    access = commands.add_parser(
        "access", help="runtime access rules: list | allow <who> | block <who> | clear <who>"
    )
    access.add_argument("action", choices=["list", "allow", "block", "clear"])
    access.add_argument("who", nargs="?", default="", help="user id, @username or Slack id")
    usage = commands.add_parser("usage", help="spending per user in the current period")
    usage.add_argument(
        "--period",
        choices=[p.value for p in Period],
        default=Period.MONTHLY.value,
        help="which current period to report (default: monthly)",
    )
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    models = commands.add_parser(
        "models",
        help="the model registry with shutdown dates and successors; "
        "check: compare it with the account's models",
    )
    models.add_argument("action", nargs="?", choices=["check"], help="compare with GET /v1/models")
    models.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="show the lifecycle as on this day (default: today)",
    )
    jobs = commands.add_parser("jobs", help="batch jobs: list [<who>] | cancel <number>")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_list = jobs_commands.add_parser("list", help="the newest jobs, of everyone or of one user")
    jobs_list.add_argument("who", nargs="?", help="a user as <channel>:<id> (telegram:123)")
    jobs_cancel = jobs_commands.add_parser("cancel", help="cancel a job (needs OPENAI_API_KEY)")
    jobs_cancel.add_argument("number", type=int, help="the job's number, as listed")
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply all migrations")
    db_commands.add_parser("check", help="fail if the models and migrations have drifted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status: 0, 1 for a failed check or an
    unexpected error, 2 for an operator error (printed as one line naming the setting)."""
    # Opt into python-telegram-bot's timedelta time periods (its announced default).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    quiet_uncaught(None)
    try:
        env_file = _env_file(args.env_file)
        demo = {"SWITCHBOARD_DEMO": True} if getattr(args, "demo", False) else {}
        settings = load_settings(env_file, **demo)
        quiet_uncaught(settings)
        for warning in unknown_variables(os.environ, env_file):
            print(f"switchboard: warning: {warning}", file=sys.stderr)
        _configure_logging(settings, chat=args.command == "chat")
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = explain(exc, settings)
        if line is None:
            print(f"switchboard: {last_resort(exc, settings)}", file=sys.stderr)
            return 1
        print(f"switchboard: {line}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "chat":
        run_loop(_chat(settings, args.user))
    elif args.command == "run":
        run_loop(_run(settings, args.channel))
    elif args.command == "quota":
        return run_loop(_quota(settings, " ".join(args.words)))
    elif args.command == "access":
        return run_loop(_access(settings, args.action, args.who))
    elif args.command == "usage":
        run_loop(_usage(settings, Period(args.period), as_csv=args.csv))
    elif args.command == "jobs":
        if args.jobs_command == "list":
            run_loop(_jobs_list(settings, args.who))
            return 0
        return run_loop(_jobs_cancel(settings, args.number))
    elif args.command == "models":
        return _models(settings, args.action, args.date)
    elif args.db_command == "upgrade":
        run_loop(upgrade(settings.database_url))
        print("database is up to date")
    else:
        from alembic.util.exc import AutogenerateDiffsDetected  # Alembic only for its commands

        try:
            check(settings.database_url)
        except AutogenerateDiffsDetected as exc:
            print(f"switchboard: {exc}", file=sys.stderr)
            return 1
        print("models and migrations agree")
    return 0


def _models(settings: Settings, action: str | None, on: date | None) -> int:
    found = catalogue(settings)
    today = on or SystemClock().now().date()
    if action is None:
        print(format_table(HEADERS, registry_table(found, today)))
        print(f"\n{LEGEND}")
        return 0
    report, ok = check_report(found, run_loop(offered_models(settings)), today)
    print(report)
    return 0 if ok else 1


def _env_file(given: str | None) -> Path | None:
    """The settings file to read: one named on the command line must exist."""
    if given is None:
        default = Path(".env")
        return default if default.is_file() else None
    path = Path(given).expanduser()
    if not path.is_file():
        raise ConfigError(f"--env-file {given}: no such file")
    return path


def _configure_logging(settings: Settings, *, chat: bool) -> None:
    """The chat's terminal is the conversation: between its lines only errors are shown,
    unless SWITCHBOARD_LOG_LEVEL asks for more."""
    quiet = chat and "log_level" not in settings.model_fields_set
    configure_logging(
        settings.log_level,
        secrets_of(settings),
        log_format=settings.log_format,
        stream_level="ERROR" if quiet else None,
    )


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class Channel(Protocol):
    """What the run command needs of a channel."""

    @property
    def connected(self) -> bool:
        """Whether it serves its platform now (for ``/readyz``)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down cleanly."""


async def _run(settings: Settings, which: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    wanted = {"telegram", "slack"} if which == "all" else {which}
    if which == "all":
        wanted = {
            name
            for name, token in (
                ("telegram", settings.telegram_bot_token),
                ("slack", settings.slack_bot_token),
            )
            if token is not None
        }
        if not wanted:
            raise ConfigError("no channel is configured: set TELEGRAM_BOT_TOKEN or SLACK_BOT_TOKEN")
    async with bootstrap(settings) as app:
        if settings.demo:
            log.warning("%s", DEMO_BANNER)
        channels: dict[str, Channel] = {
            name: _channel(name, app) for name in ("telegram", "slack") if name in wanted
        }
        # What start-up built lives as long as the process: keeping it out of the garbage
        # collector's passes takes ~100 ms pauses off the event loop under load.
        gc.freeze()
        try:
            async with (
                _operations(app, channels),
                scheduled(
                    [
                        PeriodicJob("turn-recovery", app.recovery.run_once, RECOVERY_SECONDS),
                        jobs_poll(app),
                    ]
                ),
                asyncio.TaskGroup() as group,
            ):
                for channel in channels.values():
                    group.create_task(_until_stopped(channel, stop))
        except ExceptionGroup as errors:
            # A channel that cannot start stops the others; report its own error (with its
            # causes, which say why).
            raise errors.exceptions[0]  # noqa: B904


def _channel(name: str, app: App) -> Channel:
    """The channel ``name``, its platform's library imported only now: a process serves the
    channels it runs, and each library costs memory and start-up time (issue 17)."""
    if name == "telegram":
        from bots.telegram.channel import TelegramChannel

        return TelegramChannel(app.pipeline, app.outbox, app.settings, metrics=app.metrics)
    from bots.slack.channel import SlackChannel

    return SlackChannel(app.pipeline, app.outbox, app.settings, metrics=app.metrics)


def _operations(app: App, channels: Mapping[str, Channel]) -> AbstractAsyncContextManager[object]:
    """The operations server on ``SWITCHBOARD_HTTP_PORT`` (with ``POST /openai/webhooks``
    when ``OPENAI_WEBHOOK_SECRET`` is set); nothing, and aiohttp's server never imported,
    when the port is unset."""
    settings = app.settings
    if settings.http_port is None:
        return nullcontext()
    from bots.ops import operations_server
    from core.metrics_prometheus import PrometheusMetrics

    assert isinstance(app.metrics, PrometheusMetrics)  # bootstrap's, as the port is set
    routes: Sequence[web.RouteDef] = ()
    if settings.openai_webhook_secret is not None:
        from bots.openai_webhooks import webhook_routes

        routes = webhook_routes(app.batches, app.finetunes)
    database = app.storage.database
    return operations_server(settings.http_port, database, app.metrics.registry, channels, routes)


def jobs_poll(app: App) -> PeriodicJob:
    """The scheduler's poll of open batch and fine-tune jobs, every
    ``SWITCHBOARD_JOBS_POLL_SECONDS``."""
    return PeriodicJob(
        "jobs-poll", poll_jobs(app.batches, app.finetunes), app.settings.jobs_poll_seconds
    )


async def _until_stopped(channel: Channel, stop: asyncio.Event) -> None:
    try:
        await channel.run(stop)
    except BaseException:
        stop.set()
        raise


async def _quota(settings: Settings, words: str) -> int:
    try:
        parse_quota(words, SHELL, user_directory())
    except QuotaSyntaxError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    async with open_storage(settings) as storage:
        print(await quota(_accounts(storage), SHELL_KEY, _operator(), words))
    return 0


_ACCESS_ACTIONS = {"allow": allow, "block": block, "clear": clear_access}


async def _access(settings: Settings, action: str, who: str) -> int:
    if action != "list" and not who.strip():
        print(f"switchboard: name a user. {ACCESS_GRAMMAR}", file=sys.stderr)
        return 2
    async with open_storage(settings) as storage:
        if action == "list":
            print(access_report(storage.access))
        else:
            print(await _ACCESS_ACTIONS[action](_accounts(storage), SHELL_KEY, _operator(), who))
    return 0


async def _usage(settings: Settings, period: Period, *, as_csv: bool) -> None:
    async with open_storage(settings) as storage:
        accounts = _accounts(storage)
        since = window(period, accounts.now, accounts.zone).start
        total, *users = await storage.store.spending(since, top=USAGE_ROWS)
    rows = [
        [s.user.principal, s.user.username or "", str(s.calls), format_usd(s.cost_micros)]
        for s in users
        if s.user is not None
    ]
    rows.append(["total", "", str(total.calls), format_usd(total.cost_micros)])
    headers = ["user", "username", "calls", "cost"]
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([*headers, "cost_micros"])
        micros = [s.cost_micros for s in users if s.user is not None] + [total.cost_micros]
        writer.writerows([*row, str(m)] for row, m in zip(rows, micros, strict=True))
        return
    print(f"Spending since {since.astimezone(accounts.zone):%Y-%m-%d %H:%M %Z} ({period.value})")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def _jobs_list(settings: Settings, who: str | None) -> None:
    async with open_storage(settings) as storage:
        jobs = await SqlJobStore(storage.database).jobs(None, limit=USAGE_ROWS)
        now = storage.clock.now()
    rows = [
        [
            f"#{job.id}",
            job.kind,
            job.status,
            str(job.payload.get("user", "")),
            str(job.payload.get("requests", "")),
            f"{job.created_at:%Y-%m-%d %H:%M}",
            job_age(now - job.created_at),
            job.error or "",
        ]
        for job in jobs
        if who is None or job.payload.get("user") == who
    ]
    if not rows:
        print("no jobs")
        return
    headers = ["job", "kind", "state", "user", "prompts", "created (UTC)", "age", "problem"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def _jobs_cancel(settings: Settings, number: int) -> int:
    async with bootstrap(settings) as app:
        job = await SqlJobStore(app.storage.database).job(number)
        if job is not None and job.kind == FINETUNE:
            print(await app.finetunes.cancel(number))
        else:
            print(await app.batches.cancel(number, SHELL, admin=True))
    return 0


def _accounts(storage: Storage) -> Accounts:
    return Accounts(
        storage.store,
        storage.budgets,
        storage.clock.now(),
        storage.settings.zone,
        storage.access,
        storage.names,
    )


def _operator() -> Caller:
    """Whoever runs the shell commands administers the bot."""
    return Caller(UserRef(SHELL, getpass.getuser()), admin=True)


async def _chat(settings: Settings, user: str | None) -> None:
    async with bootstrap(settings) as app:
        if settings.demo:
            print(DEMO_BANNER, file=sys.stderr)
        console = ConsoleChannel(
            app.pipeline,
            app.commands,
            app.turns,
            user=user,
            media_dir=settings.media_dir,
            max_file_bytes=settings.max_file_mb * 1024 * 1024,
        )
        app.outbox.attach(console)
        try:
            await app.recovery.run_once()  # what a previous session left unanswered
            async with scheduled([jobs_poll(app)]):  # the console's own batches
                await console.run()
        finally:
            app.outbox.detach(console)


if __name__ == "__main__":
    sys.exit(main())
