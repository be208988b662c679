"""The console channel: talk to the core in a terminal, or script it through a pipe.

Lines are read as they come; each message is answered before the next is taken, except
``/cancel`` (and Ctrl+C in a terminal), which stops the reply in progress at once. A line
may start with paths of pictures or audio files (``photo.jpg what is this?``,
``/edit "my photo.png" add a hat``); pictures drawn and spoken replies are saved as files in
the media folder and their paths printed.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import mimetypes
import shlex
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TextIO

from bots.line_editing import LineEditor
from core.access.policy import AccessPolicy
from core.conversation.commands import TURN_COMMANDS, Command, parse_command, run_command
from core.conversation.engine import Engine
from core.conversation.events import (
    ImageReady,
    Notice,
    ReplyEvent,
    ReplyFailed,
    ReplyFinished,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Transcribed,
    VoiceReady,
)
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.media.ports import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Attachment
from core.money.accounting import Caller

CHANNEL = "console"


class ConsoleSink:
    """Writes reply events to a terminal: text as it streams, tool activity on stderr,
    pictures and voice notes as files in ``media_dir``."""

    def __init__(self, out: TextIO, err: TextIO, media_dir: Path | None = None) -> None:
        self._out = out
        self._err = err
        self._media_dir = media_dir or Path("switchboard-media")
        self._streamed = False

    async def emit(self, event: ReplyEvent) -> None:
        """Show one event."""
        if isinstance(event, TextDelta):
            self._streamed = True
            self._out.write(event.text)
            self._out.flush()
        elif isinstance(event, Transcribed):
            self._out.write(f"(heard) {event.text}\n")
        elif isinstance(event, ImageReady):
            path = self._save("picture", event.image.image.suffix, event.image.image.data)
            caption = f" — {event.caption}" if event.caption else ""
            self._out.write(f"[picture saved to {path}]{caption}\n")
            self._out.flush()
        elif isinstance(event, VoiceReady):
            path = self._save("voice", ".ogg", event.note.data)
            self._out.write(f"[voice reply ({event.note.seconds:.1f} s) saved to {path}]\n")
            self._out.flush()
        elif isinstance(event, Notice):
            self._out.write(f"! {event.text}\n")
            self._out.flush()
        elif isinstance(event, ToolStarted):
            self._err.write(f"[tool {event.name} {event.arguments}]\n")
        elif isinstance(event, ToolFinished):
            self._err.write(f"[tool {event.name} {'done' if event.ok else 'failed'}]\n")
        elif isinstance(event, ReplyFinished):
            if not self._streamed and not event.text and not event.cancelled:
                return  # a picture was the answer
            if not self._streamed:
                self._out.write(event.text)
            self._out.write("\n[stopped]\n" if event.cancelled else "\n")
            self._out.flush()
        elif isinstance(event, ReplyFailed):
            self._out.write(("\n" if self._streamed else "") + f"! {event.message}\n")
            self._out.flush()

    def _save(self, kind: str, suffix: str, data: bytes) -> Path:
        self._media_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for number in range(1, 10_000):
            path = self._media_dir / f"{kind}-{stamp}-{number}{suffix}"
            try:
                with path.open("xb") as file:
                    file.write(data)
            except FileExistsError:
                continue
            return path
        raise FileExistsError(f"no free file name in {self._media_dir}")


def split_files(line: str) -> tuple[list[Path], str]:
    """The picture and audio files a line starts with, and the rest of it as text. Words with
    a picture or audio suffix count, whether or not the file exists (a missing one is then
    reported instead of reaching the model as text); quotes allow spaces."""
    stream = io.StringIO(line)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    files: list[Path] = []
    rest = 0
    while True:
        try:
            word = lexer.get_token()
        except ValueError:  # an unbalanced quote: the text from here on is not a file
            break
        if not word:
            break
        path = Path(word).expanduser()
        if path.suffix.lower() not in IMAGE_SUFFIXES | AUDIO_SUFFIXES:
            break
        files.append(path)
        rest = stream.tell()
    return files, line[rest:].strip() if files else line


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
        media_dir: Path | None = None,
        max_file_bytes: int = 20 * 1024 * 1024,
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
        # Line editing and history only for the real terminal: readline serves input().
        self._editor = LineEditor.for_terminal() if stdin is sys.stdin else None
        self._media_dir = media_dir
        self._max_file_bytes = max_file_bytes

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
            if self._editor is not None:
                self._editor.close()

    def _read(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        self._prompt_threadsafe(loop)
        read = self._editor.read_line if self._editor else self._stdin.readline
        while raw := read():
            line = raw.rstrip("\n")
            command = parse_command(line.strip())
            if command is not None and command.name == "cancel":
                # Run now rather than queued, so that it reaches the reply being written.
                asyncio.run_coroutine_threadsafe(self._cancel(), loop)
                if self._editor is not None:
                    self._prompt_threadsafe(loop)  # the loop skips it: no reply to wait for
            if line.strip():
                loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async def _cancel(self) -> None:
        reply = await run_command(self._engine, self._key, Command("cancel", ""))
        self._out.write(f"{reply.text}\n")
        self._out.flush()

    def _prompt(self) -> None:
        if self._editor is not None:
            self._editor.ready()
        elif self._interactive:
            self._out.write("you> ")
            self._out.flush()

    def _prompt_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._prompt)

    async def _handle(self, line: str) -> None:
        command = parse_command(line.strip())
        sink = ConsoleSink(self._out, self._err, self._media_dir)
        if command is not None and command.name in TURN_COMMANDS:
            files, prompt = split_files(command.args)
            message = self._message(prompt, files)
            if message is None:
                return
            draw = self._engine.edit_image if command.name == "edit" else self._engine.draw_image
            await draw(message, sink)
            return
        if command is not None:
            reply = await run_command(self._engine, self._key, command, caller=self._caller)
            self._out.write(f"{reply.text}\n")
            self._out.flush()
            return
        files, text = split_files(line)
        message = self._message(text if files else line, files)
        if message is not None:
            await self._engine.answer_message(message, sink)

    def _message(self, text: str, files: list[Path]) -> IncomingMessage | None:
        """The message with the files read in, or None (and a line said) if one cannot be."""
        attachments: list[Attachment] = []
        for path in files:
            try:
                size = path.stat().st_size
                if size > self._max_file_bytes:
                    limit = self._max_file_bytes // (1024 * 1024)
                    self._out.write(f"! {path.name} is too large; the limit is {limit} MB.\n")
                    return None
                data = path.read_bytes()
            except FileNotFoundError:
                self._out.write(f"! file not found: {path}\n")
                return None
            except OSError as exc:
                self._out.write(f"! I could not read {path}: {exc.strerror}\n")
                return None
            mime, _ = mimetypes.guess_type(path.name)
            attachments.append(Attachment(data, path.name, mime))
        return IncomingMessage(self._key, self._user, text, attachments=tuple(attachments))

    def _interrupt(self) -> None:
        if not self._engine.cancel(self._key):
            raise KeyboardInterrupt
