"""The console channel: talk to the core in a terminal, or script it through a pipe.

Lines are read as they come; each message is answered before the next is taken, except
``/cancel`` (and Ctrl+C in a terminal), which stops the reply in progress at once.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys
import threading
from typing import TextIO

from core.access import AccessPolicy
from core.accounting import Caller
from core.commands import Command, parse_command, run_command
from core.engine import Engine
from core.events import (
    ReplyEvent,
    ReplyFailed,
    ReplyFinished,
    TextDelta,
    ToolFinished,
    ToolStarted,
)
from core.messages import ConversationKey, IncomingMessage, UserRef

CHANNEL = "console"


class ConsoleSink:
    """Writes reply events to a terminal: text as it streams, tool activity on stderr."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out = out
        self._err = err
        self._streamed = False

    async def emit(self, event: ReplyEvent) -> None:
        """Show one event."""
        if isinstance(event, TextDelta):
            self._streamed = True
            self._out.write(event.text)
            self._out.flush()
        elif isinstance(event, ToolStarted):
            self._err.write(f"[tool {event.name} {event.arguments}]\n")
        elif isinstance(event, ToolFinished):
            self._err.write(f"[tool {event.name} {'done' if event.ok else 'failed'}]\n")
        elif isinstance(event, ReplyFinished):
            if not self._streamed:
                self._out.write(event.text)
            self._out.write("\n[stopped]\n" if event.cancelled else "\n")
            self._out.flush()
        elif isinstance(event, ReplyFailed):
            self._out.write(("\n" if self._streamed else "") + f"! {event.message}\n")
            self._out.flush()


class ConsoleChannel:
    """Reads lines from ``stdin`` and answers them through the engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr,
        user: str | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._stdin = stdin
        self._out = stdout
        self._err = stderr
        name = user or getpass.getuser()
        self._user = UserRef(CHANNEL, name, username=name)
        self._caller = Caller(self._user, (access or AccessPolicy()).is_admin(self._user))
        self._key = ConversationKey(CHANNEL, place=name)
        self._interactive = stdin.isatty()

    async def run(self) -> None:
        """Talk until end of input (Ctrl+D) or ``/quit``."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        # A daemon thread, not the default executor: a blocked readline must not hold up exit.
        threading.Thread(target=self._read, args=(loop, lines), daemon=True).start()
        if self._interactive:
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            self._out.write("Switchboard console. /help lists commands, Ctrl+D quits.\n")
        try:
            while (line := await lines.get()) is not None:
                command = parse_command(line.strip())
                if command is not None and command.name in ("quit", "exit"):
                    return
                if command is not None and command.name == "cancel":
                    continue  # already handled when it was read
                await self._handle(line)
                self._prompt()
        finally:
            if self._interactive:
                loop.remove_signal_handler(signal.SIGINT)

    def _read(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        self._prompt_threadsafe(loop)
        while raw := self._stdin.readline():
            line = raw.rstrip("\n")
            command = parse_command(line.strip())
            if command is not None and command.name == "cancel":
                # Run now rather than queued, so that it reaches the reply being written.
                asyncio.run_coroutine_threadsafe(self._cancel(), loop)
            if line.strip():
                loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async def _cancel(self) -> None:
        reply = await run_command(self._engine, self._key, Command("cancel", ""))
        self._out.write(f"{reply.text}\n")
        self._out.flush()

    def _prompt(self) -> None:
        if self._interactive:
            self._out.write("you> ")
            self._out.flush()

    def _prompt_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._prompt)

    async def _handle(self, line: str) -> None:
        command = parse_command(line.strip())
        if command is not None:
            reply = await run_command(self._engine, self._key, command, caller=self._caller)
            self._out.write(f"{reply.text}\n")
            self._out.flush()
            return
        message = IncomingMessage(self._key, self._user, line)
        await self._engine.answer_message(message, ConsoleSink(self._out, self._err))

    def _interrupt(self) -> None:
        if not self._engine.cancel(self._key):
            raise KeyboardInterrupt
