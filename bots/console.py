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
import itertools
import mimetypes
import re
import shlex
import signal
import sys
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

from bots.line_editing import LineEditor
from core.conversation.channel import OutgoingFile, Reply
from core.conversation.commands import FILE_COMMANDS, Commands, parse_command
from core.conversation.events import (
    CommandAnswered,
    ImageReady,
    Notice,
    Refused,
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
from core.conversation.pipeline import Activity, Delivery, InboundPipeline
from core.conversation.turns import TurnRunner
from core.jobs.prompts import SUFFIXES
from core.media.ports import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Attachment

CHANNEL = "console"
SHUTDOWN_GRACE_SECONDS = 10.0
BATCH_SUFFIXES = frozenset(SUFFIXES)
"""What ``/batch`` takes as a leading path in the console."""
_LOGIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


class ConsoleNames:
    """``UserNames`` for the console: a user is a login name, written ``console:<login>``
    (a bare word is taken as an @username elsewhere, so the console has no syntax of its own)."""

    channel = CHANNEL
    hint = "use <channel>:<id>, like console:alice, or an @username."

    def user_id(self, word: str) -> str | None:
        """The console has no bare form: ``console:<login>`` is read by the directory."""
        return None

    def valid_id(self, user_id: str) -> bool:
        """A login name."""
        return _LOGIN.fullmatch(user_id) is not None


class ConsoleSink:
    """A ``Reply`` in a terminal: text as it streams, tool activity on stderr, pictures
    and voice notes as files in ``media_dir``."""

    def __init__(self, out: TextIO, err: TextIO, media_dir: Path | None = None) -> None:
        self._out = out
        self._err = err
        self._media_dir = media_dir or Path("switchboard-media")
        self._streamed = False

    async def start(self) -> None:
        """Nothing to show before the first words."""

    async def close(self) -> None:
        """Everything was written as it came."""
        self._out.flush()

    async def emit(self, event: ReplyEvent) -> None:
        """Show one event."""
        if isinstance(event, CommandAnswered | Refused):
            text = event.reply.text if isinstance(event, CommandAnswered) else event.text
            self._out.write(f"{text}\n")
            self._out.flush()
        elif isinstance(event, TextDelta):
            self._streamed = True
            self._out.write(event.text)
            self._out.flush()
        elif isinstance(event, Transcribed):
            self._out.write(f"(heard) {event.text}\n")
        elif isinstance(event, ImageReady):
            path = self.save("picture", event.image.image.suffix, event.image.image.data)
            caption = f" — {event.caption}" if event.caption else ""
            self._out.write(f"[picture saved to {path}]{caption}\n")
            self._out.flush()
        elif isinstance(event, VoiceReady):
            path = self.save("voice", ".ogg", event.note.data)
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

    def save(self, kind: str, suffix: str, data: bytes) -> Path:
        """Write ``data`` to a new file in the media folder; returns its path."""
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


def split_files(
    line: str, suffixes: frozenset[str] = IMAGE_SUFFIXES | AUDIO_SUFFIXES
) -> tuple[list[Path], str]:
    """The picture and audio files (or files of other ``suffixes``) a line starts with, and
    the rest of it as text. Words with such a suffix count, whether or not the file exists
    (a missing one is then reported instead of reaching the model as text); quotes allow
    spaces."""
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
        if path.suffix.lower() not in suffixes:
            break
        files.append(path)
        rest = stream.tell()
    return files, line[rest:].strip() if files else line


class ConsoleChannel:
    """Reads lines from ``stdin`` and hands them to the inbound pipeline; also the console's
    outbound ``Channel`` (posts and files the core sends on its own are printed and saved)."""

    name = CHANNEL

    def __init__(
        self,
        pipeline: InboundPipeline,
        commands: Commands,
        turns: TurnRunner,
        *,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr,
        user: str | None = None,
        media_dir: Path | None = None,
        max_file_bytes: int = 20 * 1024 * 1024,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self._pipeline = pipeline
        self._commands = commands
        self._turns = turns
        self._stdin = stdin
        self._out = stdout
        self._err = stderr
        name = user or getpass.getuser()
        self._user = UserRef(CHANNEL, name, username=name)
        self._key = ConversationKey(CHANNEL, place=name)
        self._interactive = stdin.isatty()
        # Line editing and history only for the real terminal: readline serves input().
        self._editor = LineEditor.for_terminal() if stdin is sys.stdin else None
        self._media_dir = media_dir
        self._max_file_bytes = max_file_bytes
        self._grace = shutdown_grace
        self._posted = itertools.count(1)

    def reply(self, key: ConversationKey) -> Reply:
        """A reply printed here (the console has one conversation per user)."""
        return ConsoleSink(self._out, self._err, self._media_dir)

    async def post(self, key: ConversationKey, markdown: str) -> str:
        """Print ``markdown`` as a numbered message; returns its number."""
        number = str(next(self._posted))
        self._out.write(f"[#{number}] {markdown}\n")
        self._out.flush()
        return number

    async def edit(self, key: ConversationKey, platform_message_id: str, markdown: str) -> None:
        """A terminal cannot change what it printed: print the new text under its number."""
        self._out.write(f"[#{platform_message_id} updated] {markdown}\n")
        self._out.flush()

    async def send_file(self, key: ConversationKey, file: OutgoingFile) -> str:
        """Save ``file`` in the media folder and print where."""
        sink = ConsoleSink(self._out, self._err, self._media_dir)
        path = sink.save(Path(file.filename).stem or "file", Path(file.filename).suffix, file.data)
        return await self.post(
            key, f"[file saved to {path}]" + (f" {file.caption}" if file.caption else "")
        )

    def direct(self, user_id: str) -> ConversationKey:
        """The console has one conversation per user: their own."""
        return ConversationKey(CHANNEL, place=user_id)

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
            await self._pipeline.drain(CHANNEL, self._grace)

    def _read(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        self._prompt_threadsafe(loop)
        read = self._editor.read_line if self._editor else self._stdin.readline
        while raw := read():
            line = raw.rstrip("\n")
            command = parse_command(line.strip())
            if command is not None and command.name == "cancel":
                # Run now rather than queued, so that it reaches the reply being written.
                loop.call_soon_threadsafe(self._cancel)
                if self._editor is not None:
                    self._prompt_threadsafe(loop)  # the loop skips it: no reply to wait for
            if line.strip():
                loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    def _cancel(self) -> None:
        self._out.write(f"{self._commands.cancel(self._key).text}\n")
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
        text = command.args if command is not None else line
        # /batch and /finetune take their file the same way pictures are given: a leading path.
        batch = command is not None and command.name in FILE_COMMANDS
        files, rest = split_files(
            text, BATCH_SUFFIXES if batch else IMAGE_SUFFIXES | AUDIO_SUFFIXES
        )
        attachments = self._read_files(files)
        if attachments is None:
            return
        if command is not None:
            command = replace(command, args=rest if files else command.args)
        message = IncomingMessage(
            self._key, self._user, rest if files else line, attachments=attachments
        )
        await self._pipeline.handle(Delivery(message, self._open_reply, command=command))

    def _open_reply(self, activity: Activity) -> Reply:
        return ConsoleSink(self._out, self._err, self._media_dir)

    def _read_files(self, files: list[Path]) -> tuple[Attachment, ...] | None:
        """The files read in, or None (and a line said) if one cannot be."""
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
        return tuple(attachments)

    def _interrupt(self) -> None:
        if not self._turns.cancel(self._key):
            raise KeyboardInterrupt
