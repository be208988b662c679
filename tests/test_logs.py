"""Secrets never appear in logs (SPEC §10): in messages, arguments or tracebacks."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest

from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.logs import CHATTY_LIBRARIES, REDACTED, RedactingFilter, configure_logging, logged_turn

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
    noisy = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
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
        logging.getLogger("core.conversation.assistant").exception("turn failed")

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


class _Turns:
    """Stands in for the engine: one method that runs a turn for a message."""

    @logged_turn
    async def run(self, message: IncomingMessage, fail: bool) -> str:
        logging.getLogger("core.conversation.assistant").info("answering with key %s", SECRET)
        if fail:
            try:
                raise RuntimeError(f"upstream said {BOT_TOKEN}")
            except RuntimeError:
                logging.getLogger("core.conversation.assistant").exception("turn failed")
        return message.text


async def test_json_logs_are_one_object_per_line_with_the_turn(
    root_logging: logging.Logger,
) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", [SECRET, BOT_TOKEN], log_format="json", stream=buffer)
    key = ConversationKey("telegram", place="42", thread="7")
    turns = _Turns()

    logging.getLogger("bots.telegram").info("before any turn")
    first = await turns.run(IncomingMessage(key, UserRef("telegram", "1"), "hi"), fail=False)
    second = await turns.run(IncomingMessage(key, UserRef("telegram", "1"), "yo"), fail=True)
    logging.getLogger("bots.telegram").warning("after the turns")

    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert (first, second) == ("hi", "yo")
    assert [e["message"] for e in entries] == [
        "before any turn",
        f"answering with key {REDACTED}",
        f"answering with key {REDACTED}",
        "turn failed",
        "after the turns",
    ]
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert entries[0]["level"] == "INFO" and entries[0]["logger"] == "bots.telegram"
    assert datetime.fromisoformat(entries[0]["time"]).tzinfo is not None
    assert "conversation" not in entries[0] and "turn" not in entries[-1]
    assert {e["conversation"] for e in entries[1:4]} == {str(key)}
    assert entries[1]["turn"] != entries[2]["turn"] == entries[3]["turn"]
    assert f"RuntimeError: upstream said {REDACTED}" in entries[3]["exception"]
    assert entries[3]["exception"].startswith("Traceback")
    assert SECRET not in buffer.getvalue() and BOT_TOKEN not in buffer.getvalue()


async def test_text_logs_name_the_turn_too(root_logging: logging.Logger) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", [], stream=buffer)
    key = ConversationKey("console", place="ada")

    await _Turns().run(IncomingMessage(key, UserRef("console", "ada"), "hi"), fail=False)

    (line,) = buffer.getvalue().splitlines()
    assert line.endswith("]") and f"[{key} " in line


def test_library_chatter_is_quiet_at_info(root_logging: logging.Logger) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", [], stream=buffer)

    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0001 -> 0002")
    logging.getLogger("aiohttp.access").info("127.0.0.1 POST /slack/events 200")
    logging.getLogger("alembic.runtime.migration").warning("a real problem")

    assert buffer.getvalue().count("\n") == 1 and "a real problem" in buffer.getvalue()


def test_a_stream_threshold_keeps_warnings_out_of_the_chat(root_logging: logging.Logger) -> None:
    buffer = io.StringIO()
    configure_logging("WARNING", [], stream=buffer, stream_level="ERROR")

    logging.getLogger("core.money.accounting").warning("refused /quota for console:ada")
    logging.getLogger("core").error("the database went away")

    assert "refused" not in buffer.getvalue() and "went away" in buffer.getvalue()
