"""Logging set-up that keeps secrets out of every log line: plain text or one JSON object per
line (``SWITCHBOARD_LOG_FORMAT``), with the conversation and turn a line belongs to."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TextIO, TypeVar

REDACTED = "[redacted]"

# Libraries that log every request or migration step at INFO; Telegram's request URLs
# contain the bot token. They speak at WARNING and above, whatever the level.
CHATTY_LIBRARIES = (
    "alembic",
    "httpx",
    "httpx2",
    "httpcore",
    "openai",
    "aiohttp.access",
    "aiosqlite",
    "asyncio",
    "apscheduler",
    "telegram.ext.Application",
    "slack_sdk",
    "slack_bolt",
)

_turn: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "switchboard_turn", default=None
)

_Self = TypeVar("_Self")
_Message = TypeVar("_Message")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def logged_turn(
    run: Callable[Concatenate[_Self, _Message, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[_Self, _Message, _P], Coroutine[Any, Any, _R]]:
    """Decorate a method that runs one turn for a message (whose ``key`` is its conversation):
    every line logged while it runs carries the conversation and a fresh turn id."""

    @functools.wraps(run)
    async def wrapper(self: _Self, message: _Message, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        key = str(getattr(message, "key", ""))
        token = _turn.set((key, uuid.uuid4().hex[:12]))
        try:
            return await run(self, message, *args, **kwargs)
        finally:
            _turn.reset(token)

    return wrapper


class TurnFilter(logging.Filter):
    """Adds ``conversation`` and ``turn`` to a record when it was logged inside a turn."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        current = _turn.get()
        record.conversation, record.turn = current if current else (None, None)
        return True


class RedactingFilter(logging.Filter):
    """Replaces every known secret in a record's final message, exception text and stack
    with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered later by the formatter; render now to redact them too.
            # Formatters print ``exc_text`` when it is set, without ``exc_info``.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the conversation and
    turn when known."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("conversation", "turn"):
            value = getattr(record, field, None)
            if value:
                entry[field] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        conversation = getattr(record, "conversation", None)
        return f"{line} [{conversation} {getattr(record, 'turn', '')}]" if conversation else line


def configure_logging(
    level: str,
    secrets: Iterable[str],
    *,
    log_format: str = "text",
    stream: TextIO | None = None,
    stream_level: str | None = None,
) -> None:
    """Log to ``stream`` (stderr) at ``level`` as text or JSON, redacting ``secrets`` from
    every line. ``stream_level`` raises the threshold of what reaches the stream (the console
    chat shows only errors between its lines)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TurnFilter())
    handler.addFilter(RedactingFilter(secrets))
    if stream_level is not None:
        handler.setLevel(stream_level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in CHATTY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
