"""Chat commands shared by every channel: parsing and the use cases they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from core.access.names import UserDirectory
from core.access.policy import AccessPolicy
from core.clock import Clock
from core.conversation.choices import ConversationChoices
from core.conversation.events import Choice, CommandReply
from core.conversation.messages import ConversationKey
from core.conversation.store import ConversationStore
from core.conversation.turns import TurnRunner
from core.errors import UnknownChoice, UserInputError
from core.models.lifecycle import offered
from core.models.registry import ModelSpec, Registry
from core.money.accounting import Accounts, Caller, allow, block, quota, usage
from core.money.budgets import BudgetLedger

MAX_ARGUMENT = 200


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
    "batch": "Answer many prompts at half price: /batch then one prompt a line, or with a file",
    "jobs": "Your batch jobs: /jobs, or /jobs cancel <number>",
    "finetune": "Admins: train a model on example chats: /finetune with a .jsonl file, or status",
}


ADMIN_COMMANDS = frozenset({"quota", "allow", "block", "finetune"})
"""Commands only admins may run: the command refuses anyone else, and the pipeline fetches
no file sent with one from anyone else."""

FILE_COMMANDS = frozenset({"batch", "finetune"})
"""Commands whose message may carry a file for them (a caption, a shared file, a path)."""

TURN_COMMANDS = frozenset({"image", "edit"})
"""Commands that run as a turn (``Assistant.draw_image``/``edit_image``), streaming a picture
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


def help_text() -> str:
    """The list of commands with one line each."""
    return "\n".join(f"/{name} — {description}" for name, description in COMMANDS.items())


class Commands:
    """Runs the chat commands that answer with a ``CommandReply`` (``/image`` and
    ``/edit`` are turns, run by the assistant)."""

    def __init__(
        self,
        *,
        choices: ConversationChoices,
        turns: TurnRunner,
        store: ConversationStore,
        ledger: BudgetLedger,
        access: AccessPolicy,
        names: UserDirectory,
        clock: Clock,
        timezone: ZoneInfo,
    ) -> None:
        self._choices = choices
        self._turns = turns
        self._store = store
        self._ledger = ledger
        self._access = access
        self._names = names
        self._clock = clock
        self._timezone = timezone

    async def run(
        self,
        key: ConversationKey,
        command: Command,
        *,
        caller: Caller | None = None,
        threaded: bool = False,
    ) -> CommandReply:
        """Run ``command`` typed by ``caller`` in the conversation ``key``; returns what to
        show.

        ``threaded`` says that ``key`` is a place whose threads are the conversations (a
        Slack channel): there, ``/mode`` and ``/model`` choose for new threads, ``/cancel``
        stops the replies in every thread and ``/reset`` clears those choices.
        """
        if len(command.args) > MAX_ARGUMENT:
            return CommandReply(f"That argument is too long. {_usage(command.name)}")
        accounting = _ACCOUNTING.get(command.name)
        if accounting is not None:
            if caller is None:
                return CommandReply("Usage and budgets are not available here.")
            accounts = Accounts(
                self._store,
                self._ledger,
                self._clock.now(),
                self._timezone,
                self._access,
                self._names,
            )
            return CommandReply(await accounting(accounts, key, caller, command.args))
        if command.name in TURN_COMMANDS:
            return CommandReply(
                f"Send /{command.name} with a description, e.g. {_usage(command.name)}"
            )
        handlers = {**self._handlers(), **(self._threaded_handlers() if threaded else {})}
        handler = handlers.get(command.name)
        if handler is None:
            return CommandReply(f"I don't know /{command.name[:40]}. Send /help for the commands.")
        return await handler(key, command.args)

    def cancel(self, key: ConversationKey) -> CommandReply:
        """``/cancel`` at once, outside any queue (the console reads it while a reply runs)."""
        if self._turns.cancel(key):
            return CommandReply("Stopped. What was written so far is kept.")
        return CommandReply("There is no reply in progress.")

    def _handlers(self) -> dict[str, _Handler]:
        return {
            "start": self._start,
            "help": self._help,
            "reset": self._reset,
            "cancel": self._cancel,
            "mode": self._mode,
            "model": self._model,
            "voice": self._voice,
        }

    def _threaded_handlers(self) -> dict[str, _Handler]:
        return {"reset": self._reset_threads, "cancel": self._cancel_threads}

    async def _start(self, key: ConversationKey, args: str) -> CommandReply:
        mode, model = await self._choices.current(key)
        return CommandReply(
            f"Hi! I'm your assistant ({mode.title or mode.id}, on {model.title or model.id}). "
            f"Send me a message to start.\n\n{help_text()}"
        )

    async def _help(self, key: ConversationKey, args: str) -> CommandReply:
        return CommandReply(help_text())

    async def _reset(self, key: ConversationKey, args: str) -> CommandReply:
        await self._choices.reset(key)
        return CommandReply("Started a new conversation. The previous one is kept.")

    async def _cancel(self, key: ConversationKey, args: str) -> CommandReply:
        return self.cancel(key)

    async def _reset_threads(self, key: ConversationKey, args: str) -> CommandReply:
        await self._choices.reset(key)
        return CommandReply(
            "Each thread here is its own conversation: mention me in a new message to start a "
            "fresh one. New threads here now start with the default mode and model."
        )

    async def _cancel_threads(self, key: ConversationKey, args: str) -> CommandReply:
        stopped = self._turns.cancel_place(key)
        if stopped:
            replies = "reply" if stopped == 1 else "replies"
            return CommandReply(
                f"Stopped {stopped} {replies} here. What was written so far is kept."
            )
        return CommandReply("There is no reply in progress here.")

    async def _mode(self, key: ConversationKey, args: str) -> CommandReply:
        registry = self._choices.registry
        if args:
            try:
                mode = await self._choices.set_mode(key, args)
            except UnknownChoice as exc:
                return CommandReply(str(exc), _mode_choices(registry))
            return CommandReply(f"Mode set to {mode.title or mode.id}.")
        current, _ = await self._choices.current(key)
        lines = [f"Current mode: {current.title or current.id}. Choose one:"]
        lines += [
            f"• {mode.id} — {mode.description or mode.title}" for mode in registry.modes.values()
        ]
        return CommandReply("\n".join(lines), _mode_choices(registry))

    async def _model(self, key: ConversationKey, args: str) -> CommandReply:
        registry = self._choices.registry
        if args:
            try:
                model = await self._choices.set_model(key, args)
            except UnknownChoice as exc:
                models = offered(registry.models, self._clock.now().date())
                return CommandReply(str(exc), _model_choices(models))
            return CommandReply(f"Model set to {model.title or model.id}.")
        _, current = await self._choices.current(key)
        models = offered(registry.models, self._clock.now().date())
        lines = [f"Current model: {current.title or current.id}. Choose one:"]
        lines += [f"• {model.id}{f' ({note})' if note else ''}" for model, note in models]
        return CommandReply("\n".join(lines), _model_choices(models))

    async def _voice(self, key: ConversationKey, args: str) -> CommandReply:
        choice = args.lower()
        if choice in ("on", "off", "talk"):
            try:
                await self._choices.set_voice(key, choice != "off", talk=choice == "talk")
            except UserInputError as exc:
                return CommandReply(str(exc))
            return CommandReply(_VOICE_STATES[choice])
        if args:
            return CommandReply(
                f"Say /voice on, /voice off or /voice talk. {_usage('voice')}", _VOICE_CHOICES
            )
        if await self._choices.voice_talking(key):
            return CommandReply(_VOICE_STATES["talk"], _VOICE_CHOICES)
        state = "on" if await self._choices.voice_enabled(key) else "off"
        return CommandReply(f"Spoken replies are {state}.", _VOICE_CHOICES)


_Handler = Callable[[ConversationKey, str], Awaitable[CommandReply]]


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


def _mode_choices(registry: Registry) -> tuple[Choice, ...]:
    return tuple(
        Choice(mode.title or mode.id, f"/mode {mode.id}") for mode in registry.modes.values()
    )


def _model_choices(models: Sequence[tuple[ModelSpec, str]]) -> tuple[Choice, ...]:
    """The models offered now as buttons; a model near its shutdown is marked."""
    return tuple(
        Choice(f"{model.title or model.id}{' ⚠' if note else ''}", f"/model {model.id}")
        for model, note in models
    )


def _usage(name: str) -> str:
    return f"Usage: /{name} — {COMMANDS[name]}" if name in COMMANDS else "Send /help."


_ACCOUNTING = {"usage": usage, "quota": quota, "allow": allow, "block": block}
