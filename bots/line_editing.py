"""Line editing and history for the console chat in a terminal, through the standard library's
``readline`` (GNU readline or libedit; absent on Windows, where lines are read plainly).

The console reads lines in a thread so that the event loop keeps streaming replies. Readline
owns the prompt (so that editing and history redraw it correctly), and the prompt is only shown
once the previous reply has ended: ``ready()`` says when.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

HISTORY_LINES = 1000


def history_file() -> Path:
    """Where the console keeps its history: ``~/.switchboard_history``."""
    return Path.home() / ".switchboard_history"


class LineEditor:
    """Reads one line at a time with editing and history; ``close`` saves the history and
    puts the terminal back as it was."""

    def __init__(self, readline: ModuleType, history: Path, prompt: str) -> None:
        self._readline = readline
        self._history = history
        self._prompt = prompt
        self._ready = threading.Event()
        self._terminal = _terminal_state()
        readline.set_history_length(HISTORY_LINES)
        with contextlib.suppress(OSError):
            readline.read_history_file(str(history))

    @classmethod
    def for_terminal(cls, history: Path | None = None, prompt: str = "you> ") -> LineEditor | None:
        """An editor when stdin and stdout are a terminal and readline is available."""
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return None
        try:
            import readline
        except ImportError:
            return None
        return cls(readline, history or history_file(), prompt)

    def ready(self) -> None:
        """The previous line has been answered: show the prompt and read the next one."""
        self._ready.set()

    def read_line(self) -> str:
        """The next non-blank line with its newline, or ``""`` at end of input (Ctrl+D)."""
        self._ready.wait()
        self._ready.clear()
        while True:
            try:
                line = input(self._prompt)
            except EOFError:
                return ""
            if line.strip():
                return line + "\n"

    def close(self) -> None:
        """Save the history and restore the terminal (readline may be mid-line in its thread)."""
        try:
            self._history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(str(self._history))
        except OSError as exc:
            log.debug("could not save the console history to %s: %s", self._history, exc)
        if self._terminal is not None:
            import termios

            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._terminal)


def _terminal_state() -> list[Any] | None:
    try:
        import termios
    except ImportError:  # Windows
        return None
    try:
        state: list[Any] = termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError):
        return None
    return state
