"""Files users send in Telegram (photos, image files, voice notes, audio, video notes): which
file a message carries, the size check before ``getFile``, and the download as bytes.

Only bytes leave this module: a Telegram file URL contains the bot token, so it never
reaches the core, OpenAI or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError

from core.errors import MediaTooLarge, UnsupportedMedia, UserInputError
from core.media.ports import Attachment, media_kind

log = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0  # seconds to read one file; the Bot API's 20 MB take a while
_GENERIC_TYPES = frozenset({"application/octet-stream", "application/x-binary", ""})
DOWNLOAD_FAILED = "I couldn't fetch that file from Telegram. Please send it again."


@dataclass(frozen=True, slots=True)
class TelegramFile:
    """One file of a message, as Telegram describes it before it is downloaded."""

    file_id: str
    size: int | None
    filename: str
    mime_type: str | None

    @property
    def is_image(self) -> bool:
        """Whether the core would take this file as a picture."""
        return media_kind(self.filename, self.mime_type) == "image"

    @property
    def is_media(self) -> bool:
        """Whether the core can do anything with this file (a picture or sound)."""
        return media_kind(self.filename, self.mime_type) is not None


def file_of(message: Message) -> TelegramFile | None:
    """The file ``message`` carries, or None: the largest size of a photo; a voice note,
    audio file, video note or document as sent."""
    if message.photo:
        largest = max(
            message.photo, key=lambda size: (size.width * size.height, size.file_size or 0)
        )
        return TelegramFile(
            largest.file_id, largest.file_size, f"photo_{message.message_id}.jpg", "image/jpeg"
        )
    if message.voice:
        voice = message.voice
        return TelegramFile(voice.file_id, voice.file_size, "voice.ogg", _mime(voice.mime_type))
    if message.audio:
        audio = message.audio
        mime = _mime(audio.mime_type)
        name = audio.file_name or "audio" + _suffix_for(mime, ".mp3")
        return TelegramFile(audio.file_id, audio.file_size, name, mime)
    if message.video_note:
        note = message.video_note
        return TelegramFile(note.file_id, note.file_size, "video_note.mp4", "video/mp4")
    if message.document:
        document = message.document
        mime = _mime(document.mime_type)
        name = document.file_name or "file" + _suffix_for(mime, "")
        return TelegramFile(document.file_id, document.file_size, name, mime)
    return None


def picture_of(message: Message | None) -> TelegramFile | None:
    """The picture ``message`` carries (a photo or an image file), or None."""
    found = file_of(message) if message is not None else None
    return found if found is not None and found.is_image else None


def check(file: TelegramFile, max_bytes: int) -> None:
    """Refuse what cannot be used before fetching it: kinds the core cannot open, and files
    over ``max_bytes`` (getFile would refuse them, or they would be too big to handle)."""
    if not file.is_media:
        raise UnsupportedMedia(
            f"I can look at pictures and listen to voice notes and audio files, but I can't "
            f"open {file.filename!r}."
        )
    if file.size is not None and file.size > max_bytes:
        raise MediaTooLarge(_too_large(file.size, max_bytes))


async def download(bot: Bot, file: TelegramFile, max_bytes: int) -> Attachment:
    """Fetch ``file`` (after :func:`check`) as an attachment for the core."""
    check(file, max_bytes)
    return await download_document(bot, file, max_bytes)


async def download_document(bot: Bot, file: TelegramFile, max_bytes: int) -> Attachment:
    """Fetch a file of any kind (a batch's prompts file) up to ``max_bytes``."""
    if file.size is not None and file.size > max_bytes:
        raise MediaTooLarge(_too_large(file.size, max_bytes))
    try:
        found = await bot.get_file(file.file_id)
        data = bytes(await found.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT))
    except BadRequest as exc:
        if "too big" in str(exc).lower():
            raise MediaTooLarge(_too_large(file.size, max_bytes)) from None
        log.warning("downloading a Telegram file failed: %s", exc)
        raise UserInputError(DOWNLOAD_FAILED) from None
    except (TelegramError, RuntimeError) as exc:
        log.warning("downloading a Telegram file failed: %s: %s", type(exc).__name__, exc)
        raise UserInputError(DOWNLOAD_FAILED) from None
    if len(data) > max_bytes:
        raise MediaTooLarge(_too_large(len(data), max_bytes))
    return Attachment(data, file.filename, file.mime_type)


async def download_all(
    bot: Bot, files: Sequence[TelegramFile], max_bytes: int
) -> tuple[Attachment, ...]:
    """Fetch several files at once (an album), in order; every one is checked first, so a
    bad one costs no download."""
    for file in files:
        check(file, max_bytes)
    fetched = await asyncio.gather(
        *(download(bot, file, max_bytes) for file in files), return_exceptions=True
    )
    for outcome in fetched:
        if isinstance(outcome, BaseException):
            raise outcome
    return tuple(a for a in fetched if isinstance(a, Attachment))


def _too_large(size: int | None, max_bytes: int) -> str:
    limit = f"{max_bytes / MEGABYTE:g} MB"
    if size is None:
        return f"That file is too large; the most I can take is {limit}."
    shown = math.ceil(size * 10 / MEGABYTE) / 10
    return f"That file is too large ({shown:g} MB); the most I can take is {limit}."


def _mime(value: str | None) -> str | None:
    """The type Telegram gives, or None when it says nothing useful (the name decides)."""
    if value is None or value.lower() in _GENERIC_TYPES:
        return None
    return value.lower()


def _suffix_for(mime: str | None, default: str) -> str:
    if mime is None or "/" not in mime:
        return default
    subtype = mime.split("/", 1)[1].split(";", 1)[0]
    return "." + {"mpeg": "mp3", "jpeg": "jpg", "x-wav": "wav", "mp4": "m4a"}.get(subtype, subtype)
