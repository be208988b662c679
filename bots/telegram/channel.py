"""The Telegram channel: python-telegram-bot's Application with Switchboard's handlers,
run by long polling or, when ``TELEGRAM_WEBHOOK_URL`` is set, as a webhook server.

Text, photos (albums as one message), image files, voice notes, audio files and video notes
become core turns; ``/image`` and ``/edit`` (as commands or photo captions) draw; every other
command runs through ``core.conversation.commands``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import urlparse

from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatAction
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bots.pacing import FloodControl, FloodLimits
from bots.telegram.albums import AlbumCollector
from bots.telegram.files import MEGABYTE, TelegramFile, download_all, file_of, picture_of
from bots.telegram.render import escape
from bots.telegram.reply import TelegramReply
from bots.telegram.transport import AiohttpRequest, TolerantUpdatesRequest
from bots.telegram.typing import TypingIndicators
from bots.telegram.updates import (
    CHANNEL,
    addressed_text,
    conversation_key,
    is_group,
    place_of,
    user_ref,
)
from core.access.policy import AccessPolicy
from core.conversation.commands import (
    COMMANDS,
    TURN_COMMANDS,
    CommandReply,
    parse_command,
    run_command,
)
from core.conversation.engine import Engine
from core.conversation.events import ReplyFailed, ReplySink
from core.conversation.messages import IncomingMessage
from core.errors import ConfigError, SwitchboardError, user_message
from core.money.accounting import Caller
from core.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
CALLBACK_DATA_LIMIT = 64  # bytes Telegram keeps for an inline button's callback data
REFUSAL = (
    "Sorry, this assistant is only available to approved users. "
    "Ask an admin to add you (your id: {user_id})."
)
RESTARTING = "I'm restarting right now. Please send that again in a minute."
MEDIA = filters.PHOTO | filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.Document.ALL
"""The messages with a file the bot may take (other files in them are refused politely)."""

Context = ContextTypes.DEFAULT_TYPE
Turn = Callable[[IncomingMessage, ReplySink], Awaitable[None]]


class TelegramChannel:
    """Answers Telegram chats through the engine; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        access: AccessPolicy,
        *,
        flood: FloodControl | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        settings.require("TELEGRAM_BOT_TOKEN")
        if settings.telegram_webhook_url and settings.telegram_webhook_secret is None:
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET is not set (required with a webhook)")
        assert settings.telegram_bot_token is not None
        self._requests = (AiohttpRequest(), TolerantUpdatesRequest())
        builder = (
            ApplicationBuilder()
            .token(settings.telegram_bot_token.get_secret_value())
            .concurrent_updates(True)
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
        )
        if settings.telegram_base_url:
            builder = builder.base_url(settings.telegram_base_url)
        if settings.telegram_base_file_url:
            builder = builder.base_file_url(settings.telegram_base_file_url)
        self.application: Application = builder.build()  # type: ignore[type-arg]
        self._engine = engine
        self._settings = settings
        self._access = access
        self._flood = flood or FloodControl(FloodLimits())
        self._grace = shutdown_grace
        self._refused: set[int] = set()
        self._typing = TypingIndicators(self.application.bot)
        self._albums = AlbumCollector()
        self._max_bytes = settings.max_file_mb * MEGABYTE
        self._busy: set[asyncio.Task[object]] = set()
        self._closing = False
        self._register_handlers()

    def _register_handlers(self) -> None:
        app = self.application
        # Middleware first: each update once, then only allowed users.
        app.add_handler(TypeHandler(Update, self._once), group=-2)
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        app.add_handler(CommandHandler(list(COMMANDS), self._command))
        app.add_handler(CallbackQueryHandler(self._choice))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & MEDIA, self._media))
        app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, self._text)
        )
        app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND, self._unknown_command)
        )
        app.add_error_handler(self._error)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish or cleanly stop the replies in flight."""
        try:
            await self._serve(stop)
        finally:
            # A start that failed (bad token, no network) leaves PTB's sessions open.
            for request in self._requests:
                await request.shutdown()

    async def _serve(self, stop: asyncio.Event) -> None:
        app = self.application
        async with app:
            await app.bot.set_my_commands(
                [BotCommand(name, description) for name, description in COMMANDS.items()]
            )
            await app.start()
            updater = app.updater
            assert updater is not None
            webhook = self._settings.telegram_webhook_url
            try:
                if webhook:
                    secret = self._settings.telegram_webhook_secret
                    assert secret is not None
                    await updater.start_webhook(
                        listen="0.0.0.0",
                        port=self._settings.telegram_webhook_port,
                        url_path=urlparse(webhook).path.lstrip("/"),
                        webhook_url=webhook,
                        secret_token=secret.get_secret_value(),
                        allowed_updates=Update.ALL_TYPES,
                    )
                else:
                    await updater.start_polling(allowed_updates=Update.ALL_TYPES)
            except BaseException:
                # PTB will not shut down a running application: stop it, or its complaint
                # would hide the real error (a webhook port in use).
                await app.stop()
                raise
            log.info(
                "Telegram bot @%s is running (%s)",
                app.bot.username,
                "webhook" if webhook else "long polling",
            )
            await stop.wait()
            await updater.stop()
            await self._drain()
            await app.stop()

    async def _drain(self) -> None:
        """Give replies in flight a moment to finish, then stop them (their text is kept).

        Albums being gathered are answered with the parts that arrived; files still being
        fetched when the grace ends get a "send it again" reply instead of a late answer.
        """
        gathering = self._albums.flush()
        if gathering:
            log.info("stopping: answering %d album(s) with the parts received", gathering)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._grace):
                while self._busy:
                    await asyncio.wait(set(self._busy))
                await self._engine.wait_idle()
        self._closing = True
        stopped = self._engine.cancel_all()
        if stopped:
            log.info("stopped %d replies in flight for shutdown", stopped)

    async def _once(self, update: Update, context: Context) -> None:
        if not await self._engine.first_delivery(CHANNEL, str(update.update_id)):
            log.info("dropping redelivered update %s", update.update_id)
            raise ApplicationHandlerStop

    async def _gate(self, update: Update, context: Context) -> None:
        user = update.effective_user
        if user is None or self._access.is_allowed(user_ref(user)):
            return
        addressed = update.message is not None and (
            update.message.chat.type == "private"
            or addressed_text(update.message, context.bot.bot) is not None
        )
        if addressed and user.id not in self._refused and update.message is not None:
            # Logged and answered once per user; their group chatter is simply not for us.
            log.warning("refused Telegram user %s (@%s): not allowed", user.id, user.username)
            self._refused.add(user.id)
            reply = TelegramReply(context.bot, place_of(update.message), self._flood)
            await reply.show(escape(REFUSAL.format(user_id=user.id)))
        raise ApplicationHandlerStop

    async def _text(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None:
            return
        text = addressed_text(message, context.bot.bot)
        if text is None:
            return
        await self._turn(message, context.bot, text, (), self._engine.answer_message)

    async def _media(self, update: Update, context: Context) -> None:
        """A message with a file: a photo of an album waits for the album's other parts."""
        message = update.message
        if message is None:
            return
        async with self._tracked():
            parts = [message]
            if message.media_group_id is not None:
                gathered = await self._albums.collect(message)
                if gathered is None:
                    return  # the album's first part answers for all of them
                parts = gathered
            await self._answer_files(parts, context.bot)

    async def _answer_files(self, parts: Sequence[Message], bot: Bot) -> None:
        """Answer one message, or one album, with its files; the caption is the question
        (a command in it runs with the pictures)."""
        captioned = next((part for part in parts if part.caption), parts[0])
        if captioned.caption and parse_command(captioned.caption, bot.username) is not None:
            pictures = [p for p in map(picture_of, parts) if p is not None]
            await self._run_command(
                captioned, captioned.caption, bot, known=None, pictures=pictures
            )
            return
        texts = {part.message_id: addressed_text(part, bot.bot) for part in parts}
        if all(text is None for text in texts.values()):
            return  # group chatter with pictures, not for us
        lead = captioned if texts[captioned.message_id] is not None else None
        lead = lead or next(part for part in parts if texts[part.message_id] is not None)
        files = [file for file in map(file_of, parts) if file is not None]
        await self._turn(
            lead, bot, texts[lead.message_id] or "", files, self._engine.answer_message
        )

    async def _turn(
        self,
        message: Message,
        bot: Bot,
        text: str,
        files: Sequence[TelegramFile],
        run: Turn,
        *,
        action: str = ChatAction.TYPING,
    ) -> None:
        """Fetch ``files`` and run one core turn for ``message``, shown as it streams."""
        user = message.from_user
        if user is None:
            return
        reply = TelegramReply(bot, place_of(message), self._flood, self._typing)
        await reply.start(action)
        try:
            try:
                attachments = await download_all(bot, files, self._max_bytes)
            except SwitchboardError as exc:
                await reply.emit(ReplyFailed(user_message(exc)))
                return
            if self._closing:
                await reply.emit(ReplyFailed(RESTARTING))
                return
            request = IncomingMessage(
                conversation_key(message),
                user_ref(user),
                text,
                platform_message_id=str(message.message_id),
                attachments=attachments,
            )
            await run(request, reply)
        finally:
            await reply.close()

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        """Mark the current handler as working on files, so shutdown waits for it."""
        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._busy.discard(task)

    async def _command(self, update: Update, context: Context) -> None:
        await self._answer_command(update, context, known=True)

    async def _unknown_command(self, update: Update, context: Context) -> None:
        await self._answer_command(update, context, known=False)

    async def _answer_command(self, update: Update, context: Context, *, known: bool) -> None:
        message = update.message
        if message is None or message.text is None:
            return
        # /edit in reply to a picture edits that picture.
        replied = picture_of(message.reply_to_message)
        async with self._tracked():
            await self._run_command(
                message,
                message.text,
                context.bot,
                known=known,
                pictures=[replied] if replied is not None else [],
            )

    async def _run_command(
        self,
        message: Message,
        text: str,
        bot: Bot,
        *,
        known: bool | None,
        pictures: Sequence[TelegramFile],
    ) -> None:
        """Run the command in ``text`` (a message or a caption); ``known`` None: look it up."""
        command = parse_command(text, bot.username)
        if command is None:
            return
        if known is None:
            known = command.name in COMMANDS
        addressed = "@" in text.split(maxsplit=1)[0]
        if not known and is_group(message.chat) and not addressed:
            return  # in groups, unknown commands are likely meant for another bot
        if command.name in TURN_COMMANDS and command.args:
            edit = command.name == "edit"
            await self._turn(
                message,
                bot,
                command.args,
                pictures[:1] if edit else (),
                self._engine.edit_image if edit else self._engine.draw_image,
                action=ChatAction.UPLOAD_PHOTO,
            )
            return
        answer = await run_command(
            self._engine, conversation_key(message), command, caller=self._caller(message)
        )
        reply = TelegramReply(bot, place_of(message), self._flood)
        await reply.show(escape(answer.text), _keyboard(answer))

    def _caller(self, source: Update | Message) -> Caller | None:
        user = source.effective_user if isinstance(source, Update) else source.from_user
        if user is None:
            return None
        ref = user_ref(user)
        return Caller(ref, self._access.is_admin(ref))

    async def _choice(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None:
            return
        command = parse_command(query.data or "")
        message = query.message
        if command is None or not isinstance(message, Message):
            await query.answer()
            return
        answer = await run_command(
            self._engine, conversation_key(message), command, caller=self._caller(update)
        )
        await query.answer(answer.text[:200])
        reply = TelegramReply(context.bot, place_of(message), self._flood)
        reply.adopt(message.message_id)
        await reply.show(escape(answer.text), _keyboard(answer))

    async def _error(self, update: object, context: Context) -> None:
        log.error("error while handling a Telegram update", exc_info=context.error)


def _keyboard(answer: CommandReply) -> InlineKeyboardMarkup | None:
    buttons = [
        InlineKeyboardButton(choice.label, callback_data=choice.command)
        for choice in answer.choices
        if len(choice.command.encode()) <= CALLBACK_DATA_LIMIT
    ]
    if not buttons:
        return None
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    return InlineKeyboardMarkup(rows)
