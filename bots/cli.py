"""The ``switchboard`` command line: the console chat and database migrations."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bots.bootstrap import bootstrap, secrets_of
from bots.console import ConsoleChannel
from core.database import upgrade
from core.errors import ConfigError
from core.logs import configure_logging
from core.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``switchboard`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Self-hosted OpenAI assistant for chat platforms."
    )
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="talk to the assistant in this terminal")
    chat.add_argument("--user", help="who you are in the conversation (default: login name)")
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply all migrations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
        configure_logging(settings.log_level, secrets_of(settings))
        if args.command == "chat":
            asyncio.run(_chat(settings, args.user))
        elif args.command == "db":
            asyncio.run(upgrade(settings.database_url))
            print("database is up to date")
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _chat(settings: Settings, user: str | None) -> None:
    async with bootstrap(settings) as app:
        await ConsoleChannel(app.engine, user=user).run()


if __name__ == "__main__":
    sys.exit(main())
