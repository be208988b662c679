"""Parsing ``/command args`` text the same way for every channel (SPEC §3)."""

from __future__ import annotations

import pytest

from core.conversation.commands import Command, parse_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/mode coder", Command("mode", "coder")),
        ("/start", Command("start", "")),
        ("/mode   coder  ", Command("mode", "coder")),
        ("/image a cat on a mat", Command("image", "a cat on a mat")),
        ("/MODE Coder", Command("mode", "Coder")),
        ("/Reset", Command("reset", "")),
        ("/jobs cancel 42", Command("jobs", "cancel 42")),
        ("/set_quota 1", Command("set_quota", "1")),
    ],
)
def test_commands(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    "text",
    ["hello", "", "/", "/ weird", " /mode coder", "/usr/bin/env python", "/-x", "//"],
)
def test_not_commands(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize("bot_username", ["MyBot", "mybot"])
def test_command_addressed_to_this_bot(bot_username: str) -> None:
    assert parse_command("/mode@MyBot coder", bot_username) == Command("mode", "coder")
    assert parse_command("/reset@MyBot", bot_username) == Command("reset", "")


def test_command_addressed_to_another_bot_is_ignored() -> None:
    assert parse_command("/mode@OtherBot coder", "MyBot") is None


def test_addressed_command_without_a_known_username_is_accepted() -> None:
    assert parse_command("/mode@MyBot coder") == Command("mode", "coder")
