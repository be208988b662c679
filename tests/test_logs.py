"""Secrets never appear in logs (SPEC §10): in messages, arguments or tracebacks."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from core.logs import REDACTED, RedactingFilter, configure_logging

SECRET = "sk-test-secret-0123456789"
BOT_TOKEN = "123456:telegram-bot-token"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger whose only handler writes, through the filter, to a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter([SECRET, BOT_TOKEN]))
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, buffer
    logger.removeHandler(handler)


def test_secret_in_the_message_is_redacted(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture

    logger.warning(f"calling with key {SECRET} now")

    assert buffer.getvalue() == f"WARNING calling with key {REDACTED} now\n"


def test_secret_in_the_arguments_is_redacted(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture

    logger.info("GET https://api.telegram.org/bot%s/getUpdates -> %d", BOT_TOKEN, 200)

    assert (
        buffer.getvalue() == f"INFO GET https://api.telegram.org/bot{REDACTED}/getUpdates -> 200\n"
    )


def test_secret_split_across_arguments_is_redacted(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture

    logger.info("%s%s", SECRET[:10], SECRET[10:])

    assert SECRET not in buffer.getvalue()
    assert REDACTED in buffer.getvalue()


def test_secret_in_a_traceback_is_redacted(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture

    try:
        try:
            raise KeyError(BOT_TOKEN)
        except KeyError as exc:
            raise ValueError(f"bad key {SECRET}") from exc
    except ValueError:
        logger.exception("request failed")

    output = buffer.getvalue()
    assert SECRET not in output
    assert BOT_TOKEN not in output
    assert "Traceback (most recent call last)" in output
    assert f"ValueError: bad key {REDACTED}" in output
    assert output.startswith("ERROR request failed\n")


def test_records_without_secrets_are_untouched(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture

    logger.debug("%d tokens for %s", 42, "user:7")

    assert buffer.getvalue() == "DEBUG 42 tokens for user:7\n"


def test_longest_secret_is_redacted_first() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactingFilter(["abcdef", "abcdef-longer"]))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "x abcdef-longer y", None, None)

    handler.handle(record)

    assert buffer.getvalue() == f"x {REDACTED} y\n"


def test_empty_and_tiny_secrets_do_not_mangle_logs() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactingFilter(["", "a"]))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "a plain line", None, None)

    handler.handle(record)

    assert buffer.getvalue() == "a plain line\n"


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """Restore the root logger (and pytest's handlers) after ``configure_logging``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "openai")}
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


def test_configure_logging_redacts_every_logger(root_logging: logging.Logger) -> None:
    configure_logging("INFO", [SECRET, BOT_TOKEN])
    (handler,) = root_logging.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)

    logging.getLogger("some.library").warning("token=%s", BOT_TOKEN)
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        logging.getLogger("core.conversation.engine").exception("turn failed")

    output = buffer.getvalue()
    assert SECRET not in output
    assert BOT_TOKEN not in output
    assert f"token={REDACTED}" in output
    assert f"RuntimeError: {REDACTED}" in output


def test_configure_logging_sets_levels(root_logging: logging.Logger) -> None:
    configure_logging("DEBUG", [SECRET])

    assert root_logging.level == logging.DEBUG
    # Client libraries log request URLs (with the Telegram token) below WARNING.
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("openai").level == logging.WARNING
