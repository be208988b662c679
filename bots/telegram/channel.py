"""The Telegram channel: python-telegram-bot's Application with Switchboard's handlers,
run by long polling or, when ``TELEGRAM_WEBHOOK_URL`` is set, as a webhook server.

Handlers only translate: text, photos (albums as one message), image files, voice notes,
audio files, video notes, commands and button presses become ``Delivery`` objects for the
core's inbound pipeline, whose reply events ``TelegramReply`` shows. The channel is also
the core's outbound port to Telegram (``reply``, ``post``, ``edit``, ``send_file``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from telegram import Bot, BotCommand, CallbackQuery, Message, Update
from telegram.constants import ChatAction
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots.pacing import FloodControl
from bots.telegram.albums import AlbumCollector
from bots.telegram.files import (
    MEGABYTE,
    TelegramFile,
    download_all,
    download_document,
    file_of,
    picture_of,
)
from bots.telegram.reply import ChatPlace, TelegramReply, telegram_limits
from bots.telegram.transport import AiohttpRequest, TolerantBot, TolerantUpdatesRequest
from bots.telegram.typing import TypingIndicators
from bots.telegram.updates import (
    CHANNEL,
    addressed_text,
    conversation_key,
    is_group,
    place_of,
    user_ref,
)
from core.conversation.channel import Outbox, OutgoingFile, Reply
from core.conversation.commands import COMMANDS, FILE_COMMANDS, Command, parse_command
from core.conversation.events import CommandAnswered, Refused, ReplyEvent
from core.conversation.messages import ConversationKey, IncomingMessage
from core.conversation.pipeline import Activity, Delivery, FetchFiles, InboundPipeline
from core.errors import ConfigError
from core.media.ports import Attachment
from core.metrics import Metrics, NullMetrics
from core.settings import Settings

if TYPE_CHECKING:
    from bots.telegram.webhook import WebhookServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
MEDIA = filters.PHOTO | filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.Document.ALL
"""The messages with a file the bot may take (other files in them are refused politely)."""

Context = ContextTypes.DEFAULT_TYPE
_ACTIONS = {Activity.WRITING: ChatAction.TYPING, Activity.DRAWING: ChatAction.UPLOAD_PHOTO}


class TelegramChannel:
    """Answers Telegram chats through the inbound pipeline, and is the core's way to post
    there; ``run`` until ``stop`` is set."""

    name = CHANNEL

    def __init__(
        self,
        pipeline: InboundPipeline,
        outbox: Outbox,
        settings: Settings,
        *,
        flood: FloodControl | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        settings.require("TELEGRAM_BOT_TOKEN")
        if settings.telegram_webhook_url and settings.telegram_webhook_secret is None:
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET is not set (required with a webhook)")
        assert settings.telegram_bot_token is not None
        updates = TolerantUpdatesRequest()
        self._requests = (AiohttpRequest(), updates)
        urls: dict[str, str] = {}
        if settings.telegram_base_url:
            urls["base_url"] = settings.telegram_base_url
        if settings.telegram_base_file_url:
            urls["base_file_url"] = settings.telegram_base_file_url
        bot = TolerantBot(
            settings.telegram_bot_token.get_secret_value(),
            request=self._requests[0],
            updates_request=updates,
            **urls,
        )
        builder = ApplicationBuilder().bot(bot).concurrent_updates(True)
        self.application: Application = builder.build()  # type: ignore[type-arg]
        self._pipeline = pipeline
        self._outbox = outbox
        self._settings = settings
        throttled = metrics or NullMetrics()
        self._flood = flood or FloodControl(
            telegram_limits(settings), on_throttled=lambda: throttled.platform_throttled(CHANNEL)
        )
        self._first_after = settings.telegram_first_message_seconds
        self.connected = False  # readiness, for the operations server
        self._grace = shutdown_grace
        self._typing = TypingIndicators(self.application.bot)
        self._albums = AlbumCollector()
        self._max_bytes = settings.max_file_mb * MEGABYTE
        self._register_handlers()

    def _register_handlers(self) -> None:
        app = self.application
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
            server: WebhookServer | None = None
            try:
                if webhook:
                    from bots.telegram.webhook import WebhookServer  # aiohttp's server

                    secret = self._settings.telegram_webhook_secret
                    assert secret is not None
                    server = WebhookServer(
                        app,
                        secret=secret.get_secret_value(),
                        path=urlparse(webhook).path,
                        port=self._settings.telegram_webhook_port,
                    )
                    await server.start()
                    await app.bot.set_webhook(
                        webhook,
                        allowed_updates=Update.ALL_TYPES,
                        secret_token=secret.get_secret_value(),
                    )
                else:
                    await updater.start_polling(allowed_updates=Update.ALL_TYPES)
            except BaseException:
                # PTB will not shut down a running application: stop it, or its complaint
                # would hide the real error (a webhook port in use).
                if server is not None:
                    await server.stop()
                await app.stop()
                raise
            log.info(
                "Telegram bot @%s is running (%s)",
                app.bot.username,
                "webhook" if webhook else "long polling",
            )
            self._outbox.attach(self)
            self.connected = True
            try:
                await stop.wait()
                self.connected = False
                if server is not None:
                    await server.stop()
                if updater.running:
                    await updater.stop()
                await self._drain()
            finally:
                self._outbox.detach(self)
            await app.stop()

    async def _drain(self) -> None:
        """Give replies in flight a moment to finish, then stop them (their text is kept);
        albums being gathered are answered with the parts that arrived, and files still
        being fetched when the grace ends get a "send it again" reply."""
        gathering = self._albums.flush()
        if gathering:
            log.info("stopping: answering %d album(s) with the parts received", gathering)
        await self._pipeline.drain(CHANNEL, self._grace)

    # --- the outbound port -------------------------------------------------------------

    def reply(self, key: ConversationKey) -> Reply:
        """A reply in the chat (and forum topic) ``key`` names."""
        return TelegramReply(self.application.bot, _chat_place(key), self._flood, self._typing)

    async def post(self, key: ConversationKey, markdown: str) -> str:
        """Post ``markdown`` in ``key``'s chat; returns the message id."""
        reply = TelegramReply(self.application.bot, _chat_place(key), self._flood)
        return str(await reply.post(markdown))

    async def edit(self, key: ConversationKey, platform_message_id: str, markdown: str) -> None:
        """Replace the text of the bot's message ``platform_message_id`` in ``key``'s chat."""
        reply = TelegramReply(self.application.bot, _chat_place(key), self._flood)
        reply.adopt(int(platform_message_id))
        await reply.post(markdown)

    async def send_file(self, key: ConversationKey, file: OutgoingFile) -> str:
        """Send ``file`` as a document in ``key``'s chat; returns the message id."""
        reply = TelegramReply(self.application.bot, _chat_place(key), self._flood)
        return str(await reply.send_file(file))

    def direct(self, user_id: str) -> ConversationKey:
        """A Telegram user's private chat with the bot has the user's id."""
        return ConversationKey(CHANNEL, place=user_id)

    # --- inbound: updates translated into deliveries -------------------------------------

    async def _text(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None:
            return
        text = addressed_text(message, context.bot.bot)
        if text is None:
            return
        await self._deliver(update, message, context.bot, text)

    async def _media(self, update: Update, context: Context) -> None:
        """A message with a file: a photo of an album waits for the album's other parts,
        and the album's first part answers for all of them."""
        message = update.message
        if message is None:
            return
        with self._pipeline.tracking(CHANNEL):
            parts = [message]
            if message.media_group_id is not None:
                gathered = await self._albums.collect(message)
                if gathered is None:
                    return
                parts = gathered
            await self._answer_files(update, parts, context.bot)

    async def _answer_files(self, update: Update, parts: Sequence[Message], bot: Bot) -> None:
        """Answer one message, or one album, with its files; the caption is the question
        (a command in it runs with the pictures)."""
        captioned = next((part for part in parts if part.caption), parts[0])
        if captioned.caption and parse_command(captioned.caption, bot.username) is not None:
            # A command in the caption runs with the pictures.
            pictures = [p for p in map(picture_of, parts) if p is not None]
            await self._command_in(
                update, captioned, captioned.caption, bot, known=None, pictures=pictures
            )
            return
        texts = {part.message_id: addressed_text(part, bot.bot) for part in parts}
        if all(text is None for text in texts.values()):
            return  # group chatter with pictures, not for us
        lead = captioned if texts[captioned.message_id] is not None else None
        lead = lead or next(part for part in parts if texts[part.message_id] is not None)
        files = [file for file in map(file_of, parts) if file is not None]
        await self._deliver(update, lead, bot, texts[lead.message_id] or "", files=files)

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
        pictures = [replied] if replied is not None else []
        await self._command_in(
            update, message, message.text, context.bot, known=known, pictures=pictures
        )

    async def _command_in(
        self,
        update: Update,
        message: Message,
        text: str,
        bot: Bot,
        *,
        known: bool | None,
        pictures: Sequence[TelegramFile],
    ) -> None:
        """The command in ``text`` (a message or a caption); ``known`` None: look it up.
        In groups, unknown commands not addressed to this bot are for another bot."""
        command = parse_command(text, bot.username)
        if command is None:
            return
        if known is None:
            known = command.name in COMMANDS
        addressed = "@" in text.split(maxsplit=1)[0]
        if not known and is_group(message.chat) and not addressed:
            return
        files: Sequence[TelegramFile] = pictures[:1] if command.name == "edit" else ()
        with_file = command.name in FILE_COMMANDS
        if with_file:
            # /batch or /finetune as a document's caption: its file (any kind; the core checks).
            document = file_of(message) if message.document else None
            files = [document] if document is not None else ()
        await self._deliver(
            update,
            message,
            bot,
            text,
            command=command,
            files=files,
            any_kind=with_file,
        )

    async def _deliver(
        self,
        update: Update,
        message: Message,
        bot: Bot,
        text: str,
        *,
        command: Command | None = None,
        files: Sequence[TelegramFile] = (),
        any_kind: bool = False,
    ) -> None:
        user = message.from_user
        if user is None:
            return
        incoming = IncomingMessage(
            conversation_key(message),
            user_ref(user),
            text,
            platform_message_id=str(message.message_id),
            event_id=str(update.update_id),
        )
        place = place_of(message)

        def open_reply(activity: Activity) -> Reply:
            return TelegramReply(
                bot,
                place,
                self._flood,
                self._typing,
                _ACTIONS[activity],
                first_after=self._first_after,
            )

        await self._pipeline.handle(
            Delivery(
                incoming,
                open_reply,
                command=command,
                fetch=self._fetch(bot, files, any_kind=any_kind),
            )
        )

    def _fetch(
        self, bot: Bot, files: Sequence[TelegramFile], *, any_kind: bool = False
    ) -> FetchFiles | None:
        """How to download ``files``; ``any_kind``: a batch's prompts file, of a kind the
        core checks itself."""
        if not files:
            return None

        async def fetch() -> tuple[Attachment, ...]:
            if any_kind:
                return (await download_document(bot, files[0], self._max_bytes),)
            return await download_all(bot, files, self._max_bytes)

        return fetch

    async def _choice(self, update: Update, context: Context) -> None:
        """A menu button: its command runs, and the menu message shows the answer."""
        query = update.callback_query
        if query is None:
            return
        command = parse_command(query.data or "")
        message = query.message
        if command is None or not isinstance(message, Message) or query.from_user is None:
            await query.answer()
            return
        incoming = IncomingMessage(
            conversation_key(message),
            user_ref(query.from_user),
            query.data or "",
            event_id=str(update.update_id),
        )
        bot = context.bot

        def open_reply(activity: Activity) -> Reply:
            reply = TelegramReply(bot, place_of(message), self._flood)
            reply.adopt(message.message_id)
            return _ButtonReply(query, reply)

        await self._pipeline.handle(Delivery(incoming, open_reply, command=command))

    async def _error(self, update: object, context: Context) -> None:
        log.error("error while handling a Telegram update", exc_info=context.error)


class _ButtonReply:
    """A button's answer: a short toast, and the menu message edited to show the answer."""

    def __init__(self, query: CallbackQuery, reply: TelegramReply) -> None:
        self._query = query
        self._reply = reply
        self._answered = False

    async def start(self) -> None:
        await self._reply.start()

    async def emit(self, event: ReplyEvent) -> None:
        if isinstance(event, CommandAnswered | Refused) and not self._answered:
            self._answered = True
            text = event.reply.text if isinstance(event, CommandAnswered) else event.text
            await self._query.answer(text[:200])
        await self._reply.emit(event)

    async def close(self) -> None:
        if not self._answered:
            self._answered = True
            await self._query.answer()
        await self._reply.close()


def _chat_place(key: ConversationKey) -> ChatPlace:
    """Where a message the core sends on its own goes: the chat and forum topic of ``key``
    (group chats have negative ids)."""
    chat_id = int(key.place)
    return ChatPlace(chat_id, group=chat_id < 0, thread_id=int(key.thread) if key.thread else None)
