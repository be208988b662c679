"""``switchboard chat`` in a real pseudo-terminal: line editing and history through readline,
"file not found" for a missing picture path, and no log lines printed into the chat."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
UP = "\x1b[A"
HOME_KEY = "\x01"  # Ctrl+A: start of line, in readline's emacs mode


class Terminal:
    """A process on a pseudo-terminal: type into it, read what it shows."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True
        )
        os.close(slave)
        self.screen = ""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Read until ``text`` has been shown (counting from the start)."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never shown; screen so far:\n{self.screen}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process ended and the terminal closed
                    chunk = b""
                if not chunk:
                    assert text in self.screen, f"ended without {text!r}:\n{self.screen}"
                self.screen += chunk.decode(errors="replace")

    def prompt(self, number: int) -> None:
        """Wait until the prompt has been shown ``number`` times: keys typed before readline
        takes the terminal may be lost (an early Ctrl+D would be)."""
        deadline = time.monotonic() + 30
        while self.screen.count("you> ") < number:
            assert time.monotonic() < deadline, f"prompt {number} never shown:\n{self.screen}"
            self.wait_for("you> ")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                self.screen += os.read(self.master, 4096).decode(errors="replace")

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)


@pytest.fixture
def terminal(fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[Terminal]:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "TERM": "xterm",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
    }
    term = Terminal([SWITCHBOARD, "chat", "--user", "ada"], env, tmp_path)
    try:
        yield term
    finally:
        if term.process.poll() is None:
            term.process.kill()


def test_history_and_line_editing_in_a_terminal(
    terminal: Terminal, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    terminal.prompt(1)
    terminal.type("hello there\r")
    terminal.prompt(2)
    terminal.type(UP + "\r")  # the previous line, from the history
    terminal.prompt(3)
    terminal.type("world" + HOME_KEY + "hello \r")
    terminal.wait_for("Echo: hello world")
    terminal.prompt(4)
    terminal.type("\x04")  # Ctrl+D
    assert terminal.close() == 0
    assert terminal.screen.count("Echo: hello there") == 2
    said = [r.as_text() for r in fake_openai.model_requests()]
    assert len(said) == 3 and "hello there" in said[1] and "hello world" in said[2]
    history = (tmp_path / ".switchboard_history").read_text()
    assert "hello there" in history and "hello world" in history


def test_a_missing_picture_path_is_file_not_found(
    terminal: Terminal, fake_openai: FakeOpenAI
) -> None:
    terminal.prompt(1)
    terminal.type("holiday/beach.jpg what is in this picture?\r")
    terminal.wait_for("! file not found: holiday/beach.jpg")
    terminal.prompt(2)
    terminal.type("/quota set default 5 monthly\r")  # not an admin: refused, and logged
    terminal.wait_for("admin")
    terminal.prompt(3)
    terminal.type("\x04")
    assert terminal.close() == 0
    assert fake_openai.model_requests() == []
    assert "WARNING" not in terminal.screen and "refused /quota" not in terminal.screen
