"""Operator errors in one line: what stopped the process and which setting fixes it.

``explain`` turns the exceptions that start-up really meets (a rejected token, an unreachable
platform or database, a port in use) into ``<cause> — <what to fix>``; the CLI prints that
and exits with status 2. Anything else is unexpected: ``last_resort`` prints one line and
sends the traceback to the log at DEBUG, where the redaction filter removes every secret.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import ssl
import sys
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from urllib.parse import urlsplit

import openai
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bots.bootstrap import secrets_of
from core.errors import ConfigError, UpstreamError
from core.logs import RedactingFilter
from core.models.openai_gateway import translate
from core.settings import Settings

log = logging.getLogger("switchboard")

_PORT_IN_MESSAGE = re.compile(r"""[(\[]\s*'[^']*'\s*,\s*(\d+)\s*[)\]]|:(\d+)\b""")


def explain(error: BaseException, settings: Settings | None) -> str | None:
    """One line for a known operator error, or None when ``error`` is unexpected."""
    if isinstance(error, ConfigError):
        return _redact(str(error), settings)
    chain = list(_chain(error))
    for explainer in (_model_api, _telegram, _slack, _port, _database):
        line = explainer(chain, settings)
        if line is not None:
            return _redact(line, settings)
    return None


def _model_api(chain: list[BaseException], settings: Settings | None) -> str | None:
    """A call to the model API at start-up (a models check): its classified operator text.
    First, because the openai SDK's connection errors carry aiohttp's in their chain."""
    for error in chain:
        if isinstance(error, UpstreamError):
            return f"the model API failed: {error}"
        if isinstance(error, openai.OpenAIError):
            return f"the model API failed: {translate(error)}"
    return None


def _telegram(chain: list[BaseException], settings: Settings | None) -> str | None:
    if "telegram" not in sys.modules:
        return None  # no Telegram error without its library; not loaded for Slack alone
    from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError

    for error in chain:
        if isinstance(error, InvalidToken):
            # PTB's message quotes the token; 401 and 404 both end up here.
            custom = settings is not None and settings.telegram_base_url
            where = " (or TELEGRAM_BASE_URL does not lead to a Bot API server)" if custom else ""
            return (
                f"Telegram rejected the bot token{where} — check TELEGRAM_BOT_TOKEN "
                "(from @BotFather)"
            )
        if isinstance(error, Conflict):
            return (
                "Telegram says another process is already receiving this bot's updates — "
                "stop it, or give each process its own TELEGRAM_BOT_TOKEN"
            )
        if isinstance(error, NetworkError):
            host = _host(settings.telegram_base_url if settings else None) or "api.telegram.org"
            return (
                f"cannot reach Telegram at {host} ({_reason(chain)}) — check the network, "
                "or TELEGRAM_BASE_URL"
            )
        if isinstance(error, TelegramError):
            return f"Telegram refused start-up ({error.message}) — check the TELEGRAM_* settings"
    return None


def _slack(chain: list[BaseException], settings: Settings | None) -> str | None:
    if "slack_sdk" not in sys.modules:
        return None  # no Slack error without its library; not loaded for Telegram alone
    import aiohttp
    from slack_sdk.errors import SlackApiError

    for error in chain:
        if isinstance(error, SlackApiError):
            code = error.response.get("error") if error.response is not None else None
            app_call = "apps.connections" in str(getattr(error.response, "api_url", ""))
            setting = "SLACK_APP_TOKEN" if app_call else "SLACK_BOT_TOKEN"
            return f"Slack refused the connection ({code or 'error'}) — check {setting}"
        if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ClientConnectionError):
            host = _host(settings.slack_api_url if settings else None) or "slack.com"
            return (
                f"cannot reach Slack at {host} ({_reason(chain)}) — check the network, "
                "or SLACK_API_URL"
            )
    return None


def _port(chain: list[BaseException], settings: Settings | None) -> str | None:
    for error in chain:
        if not isinstance(error, OSError) or error.errno not in (errno.EADDRINUSE, errno.EACCES):
            continue
        match = _PORT_IN_MESSAGE.search(str(error))
        if match is not None:
            port: int | None = int(match.group(1) or match.group(2))
        elif _from_module(error, ("tornado",)) and settings is not None:
            port = settings.telegram_webhook_port  # Tornado's message leaves the port out
        else:
            port = None
        setting = _port_setting(port, settings)
        if port is None:
            return f"a port is already in use — stop what listens there, or change {setting}"
        if error.errno == errno.EACCES:
            return f"not allowed to listen on port {port} — choose a port above 1023 in {setting}"
        return f"port {port} is already in use — stop what listens there, or change {setting}"
    return None


def _port_setting(port: int | None, settings: Settings | None) -> str:
    if settings is None or port is None:
        return "the port settings"
    names = {
        getattr(settings, "http_port", None): "SWITCHBOARD_HTTP_PORT",
        settings.telegram_webhook_port: "TELEGRAM_WEBHOOK_PORT",
        settings.slack_port: "SLACK_PORT",
    }
    return names.get(port, "the port settings")


def _database(chain: list[BaseException], settings: Settings | None) -> str | None:
    through = any(_from_module(e, ("asyncpg", "aiosqlite", "sqlalchemy")) for e in chain)
    if not through and not any(isinstance(e, SQLAlchemyError) for e in chain):
        return None
    where = _database_place(settings)
    for error in chain:
        if isinstance(error, DBAPIError) and error.orig is not None:
            said = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
            if isinstance(error.orig, OSError) or not said:
                continue
            if where.startswith("file "):
                return (
                    f"the database {where} failed: {said} — check DATABASE_URL and its permissions"
                )
            return f"the database {where} refused: {said} — check DATABASE_URL"
    for error in chain:
        if isinstance(error, OSError):
            return (
                f"cannot connect to the database {where} ({_reason(chain)}) — check DATABASE_URL "
                "and that the server is running"
            )
    if any(isinstance(e, SQLAlchemyError) for e in chain):
        first = str(chain[-1]).strip().splitlines()
        said = first[0] if first else type(chain[-1]).__name__
        return f"the database {where} failed: {said} — check DATABASE_URL"
    return None


def _database_place(settings: Settings | None) -> str:
    """Host, port and database name, never the password."""
    if settings is None:
        return "(DATABASE_URL)"
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return f"file {url.database}"
    return f"at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _reason(chain: list[BaseException]) -> str:
    """Why a connection failed, in words: refused, unknown host, TLS, timed out."""
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "unknown host"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "TLS failure"
    if any(isinstance(e, TimeoutError) for e in chain):
        return "timed out"
    system = [e for e in chain if isinstance(e, OSError) and e.strerror]
    return system[-1].strerror if system and system[-1].strerror else type(chain[-1]).__name__


def _host(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        # aiohttp keeps the OS error of a failed connect beside the chain, not in it.
        inner = getattr(current, "os_error", None)
        for linked in (current.__cause__, current.__context__, inner):
            if linked is not None:
                todo.append(linked)


def _from_module(error: BaseException, prefixes: Iterable[str]) -> bool:
    """Whether ``error`` was raised in (or passed through) code of one of the packages."""
    names = tuple(prefixes)
    tb = error.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in names:
            return True
        tb = tb.tb_next
    return type(error).__module__.split(".", 1)[0] in names


def _redact(line: str, settings: Settings | None) -> str:
    return line if settings is None else RedactingFilter(secrets_of(settings)).redact(line)


def last_resort(error: BaseException, settings: Settings | None) -> str:
    """The one line for an unexpected error; its traceback goes to the log at DEBUG."""
    log.debug("unexpected error", exc_info=error)
    summary = _redact(str(error).strip().splitlines()[0] if str(error).strip() else "", settings)
    kind = type(error).__name__
    return (
        f"unexpected error: {kind}{': ' + summary[:200] if summary else ''} — "
        "run with SWITCHBOARD_LOG_LEVEL=DEBUG for the details"
    )


def quiet_uncaught(settings: Settings | None) -> None:
    """Route uncaught exceptions (main thread and others) to the log instead of a traceback
    on stderr, so that no token in an exception's text reaches the terminal."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(f"switchboard: {last_resort(error.with_traceback(tb), settings)}\n")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        name = getattr(args.thread, "name", "?")
        log.error("error in thread %s: %s: %s", name, args.exc_type.__name__, args.exc_value)
        log.debug("error in thread %s", name, exc_info=args.exc_value)

    sys.excepthook = hook
    threading.excepthook = thread_hook
