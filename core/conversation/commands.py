"""Chat commands shared by every channel: parsing and the use cases they run."""

from __future__ import annotations

from dataclasses import dataclass

from core.conversation.engine import Engine
from core.conversation.messages import ConversationKey
from core.errors import UnknownChoice, UserInputError
from core.money.accounting import Accounts, Caller, allow, block, quota, usage

MAX_ARGUMENT = 200


@dataclass(frozen=True, slots=True)
class Choice:
    """A button a channel may offer: its label and the command it sends."""

    label: str
    command: str


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A command's answer, with optional choices (Telegram shows them as a keyboard)."""

    text: str
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed ``/name args`` command."""

    name: str
    args: str


COMMANDS: dict[str, str] = {
    "start": "Say hello and show what I can do",
    "help": "List the commands",
    "reset": "Start a new conversation (the old one is kept)",
    "cancel": "Stop the reply being written",
    "mode": "Show or choose the assistant's mode: /mode [name]",
    "model": "Show or choose the model: /model [name]",
    "image": "Draw a picture: /image <description>",
    "edit": "Change a picture: /edit <what to change> (with or after the picture)",
    "voice": "Also hear my replies: /voice on|off, or talk voice-to-voice: /voice talk",
    "usage": "Your spending and what is left of your budget",
    "quota": "Admins: /quota set|show|reset <who> … (budgets)",
    "allow": "Admins: let a user in: /allow <who>",
    "block": "Admins: shut a user out: /block <who>",
}


TURN_COMMANDS = frozenset({"image", "edit"})
"""Commands that run as a turn (``Engine.draw_image``/``edit_image``), streaming a picture
to the reply sink, rather than answering with a ``CommandReply``."""


def parse_command(text: str, bot_username: str | None = None) -> Command | None:
    """The command in ``text``, or None if it is not one.

    ``/mode@SomeBot coder`` is accepted when ``bot_username`` is ``SomeBot`` (Telegram groups).
    """
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    head, *rest = text[1:].split(maxsplit=1)
    args = rest[0] if rest else ""
    name, _, target = head.partition("@")
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    if not name.replace("_", "").isalnum():
        return None
    return Command(name.lower(), args.strip())


async def run_command(
    engine: Engine,
    key: ConversationKey,
    command: Command,
    *,
    caller: Caller | None = None,
    threaded: bool = False,
) -> CommandReply:
    """Run ``command`` typed by ``caller`` in the conversation ``key``; returns what to show.

    ``threaded`` says that ``key`` is a place whose threads are the conversations (a Slack
    channel): there, ``/mode`` and ``/model`` choose for new threads, ``/cancel`` stops the
    replies in every thread and ``/reset`` clears those choices.
    """
    if len(command.args) > MAX_ARGUMENT:
        return CommandReply(f"That argument is too long. {_usage(command.name)}")
    if command.name in _ACCOUNTING:
        if caller is None or engine.budgets is None:
            return CommandReply("Usage and budgets are not available here.")
        accounts = Accounts(
            engine.store, engine.budgets, engine.now(), engine.timezone, engine.access
        )
        return CommandReply(await _ACCOUNTING[command.name](accounts, key, caller, command.args))
    if command.name in TURN_COMMANDS:
        return CommandReply(f"Send /{command.name} with a description, e.g. {_usage(command.name)}")
    handler = (_THREADED_HANDLERS if threaded else {}).get(command.name) or _HANDLERS.get(
        command.name
    )
    if handler is None:
        return CommandReply(f"I don't know /{command.name[:40]}. Send /help for the commands.")
    return await handler(engine, key, command.args)


def help_text() -> str:
    """The list of commands with one line each."""
    return "\n".join(f"/{name} — {description}" for name, description in COMMANDS.items())


async def _start(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    mode, model = await engine.current_choices(key)
    return CommandReply(
        f"Hi! I'm your assistant ({mode.title or mode.id}, on {model.title or model.id}). "
        f"Send me a message to start.\n\n{help_text()}"
    )


async def _help(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    return CommandReply(help_text())


async def _reset(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    await engine.reset_conversation(key)
    return CommandReply("Started a new conversation. The previous one is kept.")


async def _cancel(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    if engine.cancel(key):
        return CommandReply("Stopped. What was written so far is kept.")
    return CommandReply("There is no reply in progress.")


async def _reset_threads(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    await engine.reset_conversation(key)
    return CommandReply(
        "Each thread here is its own conversation: mention me in a new message to start a "
        "fresh one. New threads here now start with the default mode and model."
    )


async def _cancel_threads(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    stopped = engine.cancel_place(key)
    if stopped:
        replies = "reply" if stopped == 1 else "replies"
        return CommandReply(f"Stopped {stopped} {replies} here. What was written so far is kept.")
    return CommandReply("There is no reply in progress here.")


async def _mode(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    if args:
        try:
            mode = await engine.set_mode(key, args)
        except UnknownChoice as exc:
            return CommandReply(str(exc), _mode_choices(engine))
        return CommandReply(f"Mode set to {mode.title or mode.id}.")
    current, _ = await engine.current_choices(key)
    lines = [f"Current mode: {current.title or current.id}. Choose one:"]
    lines += [
        f"• {mode.id} — {mode.description or mode.title}" for mode in engine.registry.modes.values()
    ]
    return CommandReply("\n".join(lines), _mode_choices(engine))


async def _model(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    if args:
        try:
            model = await engine.set_model(key, args)
        except UnknownChoice as exc:
            return CommandReply(str(exc), _model_choices(engine))
        return CommandReply(f"Model set to {model.title or model.id}.")
    _, current = await engine.current_choices(key)
    lines = [f"Current model: {current.title or current.id}. Choose one:"]
    lines += [f"• {model.id}" for model in engine.registry.models.values()]
    return CommandReply("\n".join(lines), _model_choices(engine))


async def _voice(engine: Engine, key: ConversationKey, args: str) -> CommandReply:
    choice = args.lower()
    if choice in ("on", "off", "talk"):
        try:
            await engine.set_voice(key, choice != "off", talk=choice == "talk")
        except UserInputError as exc:
            return CommandReply(str(exc))
        return CommandReply(_VOICE_STATES[choice])
    if args:
        return CommandReply(
            f"Say /voice on, /voice off or /voice talk. {_usage('voice')}", _VOICE_CHOICES
        )
    if await engine.voice_talking(key):
        return CommandReply(_VOICE_STATES["talk"], _VOICE_CHOICES)
    state = "on" if await engine.voice_enabled(key) else "off"
    return CommandReply(f"Spoken replies are {state}.", _VOICE_CHOICES)


_VOICE_STATES = {
    "on": "Spoken replies are on: each answer also comes as a voice note.",
    "off": "Spoken replies are off.",
    "talk": (
        "Talk mode is on: send a voice note and I answer by voice, with both transcripts "
        "shown. Text messages get spoken replies too."
    ),
}
_VOICE_CHOICES = (
    Choice("Voice on", "/voice on"),
    Choice("Voice off", "/voice off"),
    Choice("Talk", "/voice talk"),
)


def _mode_choices(engine: Engine) -> tuple[Choice, ...]:
    return tuple(
        Choice(mode.title or mode.id, f"/mode {mode.id}") for mode in engine.registry.modes.values()
    )


def _model_choices(engine: Engine) -> tuple[Choice, ...]:
    return tuple(
        Choice(model.title or model.id, f"/model {model.id}")
        for model in engine.registry.models.values()
    )


def _usage(name: str) -> str:
    return f"Usage: /{name} — {COMMANDS[name]}" if name in COMMANDS else "Send /help."


_HANDLERS = {
    "start": _start,
    "help": _help,
    "reset": _reset,
    "cancel": _cancel,
    "mode": _mode,
    "model": _model,
    "voice": _voice,
}

_ACCOUNTING = {"usage": usage, "quota": quota, "allow": allow, "block": block}
_THREADED_HANDLERS = {"reset": _reset_threads, "cancel": _cancel_threads}
