"""Images and audio as the core sees them, and the ports that prepare, transcribe, speak
and draw them. Implementations: ``core.media.pillow_images`` (Pillow),
``core.media.ffmpeg_audio`` (ffmpeg + pydub),
``core.media.openai_media`` (the OpenAI audio and image APIs),
``core.media.realtime_speech`` (speech through the Realtime API)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from core.models.realtime import RealtimeUsage

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
AUDIO_SUFFIXES = frozenset(
    {
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".m4a",
        ".mp4",
        ".wav",
        ".flac",
        ".webm",
        ".aac",
        ".amr",
        ".mpga",
        ".mpeg",
        ".mov",
        ".3gp",
    }
)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file the user sent with a message, downloaded from the platform by the adapter."""

    data: bytes
    filename: str
    mime_type: str | None = None

    @property
    def is_image(self) -> bool:
        """Whether the platform or the name says this is a picture."""
        return media_kind(self.filename, self.mime_type) == "image"

    @property
    def is_audio(self) -> bool:
        """Whether the platform or the name says this is sound (video notes included)."""
        return media_kind(self.filename, self.mime_type) == "audio"


def media_kind(filename: str, mime_type: str | None) -> Literal["image", "audio"] | None:
    """What the core makes of a file of this name and type, before downloading it: a
    picture, sound (video included: its sound track), or neither. The platform's type wins
    over the name's suffix."""
    if mime_type:
        if mime_type.startswith("image/"):
            return "image"
        return "audio" if mime_type.startswith(("audio/", "video/")) else None
    suffix = _suffix(filename)
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return "audio" if suffix in AUDIO_SUFFIXES else None


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image in a format and size the OpenAI APIs take."""

    data: bytes
    mime_type: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        """The image inline as a ``data:`` URL, the only way images are sent to the model."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    @property
    def suffix(self) -> str:
        """A file name suffix matching ``mime_type``."""
        return "." + self.mime_type.removeprefix("image/").replace("jpeg", "jpg")


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One uploadable piece of audio, in order, with its real duration."""

    data: bytes
    filename: str
    seconds: float


@dataclass(frozen=True, slots=True)
class PreparedAudio:
    """Audio converted for the transcription API: one part, or several split on silence."""

    parts: tuple[AudioPart, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """Spoken audio ready to send: OGG/Opus, mono, with its duration."""

    data: bytes
    seconds: float
    filename: str = "reply.ogg"
    mime_type: str = "audio/ogg"


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the transcription API heard in one part, and the seconds it billed (if said)."""

    text: str
    billed_seconds: float | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Speech:
    """One chunk of synthesised speech: audio ffmpeg reads (OGG/Opus from the speech
    endpoint, WAV from a realtime session) and, from a realtime session, its token usage."""

    data: bytes
    request_id: str | None = None
    tokens: RealtimeUsage | None = None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """A picture the image API drew, with the prompt it actually used when it says."""

    image: PreparedImage
    revised_prompt: str | None = None
    request_id: str | None = None


class PictureProcessor(Protocol):
    """Checks and converts pictures (blocking work: callers run it in a thread)."""

    def prepare(self, data: bytes, *, max_input_bytes: int) -> PreparedImage:
        """A picture the user sent, in a format and size OpenAI vision takes."""
        ...

    def history_copy(self, image: PreparedImage) -> PreparedImage:
        """A small copy of ``image`` to keep in conversation history."""
        ...

    def for_edit(self, image: PreparedImage) -> PreparedImage:
        """``image`` as the image edit API wants it."""
        ...


class AudioConverter(Protocol):
    """Converts audio with ffmpeg, off the event loop."""

    async def for_transcription(self, data: bytes, filename: str) -> PreparedAudio:
        """Convert ``data`` for the transcription API, split on silence when too big.

        Raises ``UnsupportedMedia`` for corrupt, empty or unreadable audio.
        """

    async def voice_note(self, parts: Sequence[bytes]) -> VoiceNote:
        """Join speech chunks, in order, into one OGG/Opus voice note."""

    async def pcm16(
        self, data: bytes, filename: str, *, rate: int, max_seconds: float | None = None
    ) -> bytes:
        """``data`` as raw mono PCM16 at ``rate`` Hz (a realtime session's input).

        Raises ``UnsupportedMedia`` for corrupt, empty or unreadable audio and
        ``MediaTooLarge`` for audio longer than ``max_seconds``.
        """


class Transcriber(Protocol):
    """Speech to text (``OpenAITranscriber``)."""

    async def transcribe(self, part: AudioPart, *, model: str) -> Transcript:
        """Transcribe one part; raises ``core.errors`` upstream errors."""


class SpeechSynthesizer(Protocol):
    """Text to speech (``OpenAISpeech``, ``RealtimeSpeech``)."""

    @property
    def max_input_chars(self) -> int:
        """The longest text one call accepts."""

    async def speak(self, text: str, *, model: str, voice: str, speed: float) -> Speech:
        """Speak ``text`` (at most ``max_input_chars``) as OGG/Opus."""


class ImageGenerator(Protocol):
    """Draws and edits pictures (``OpenAIImages``)."""

    async def generate(self, prompt: str, *, model: str, size: str, quality: str) -> GeneratedImage:
        """Draw a picture for ``prompt``."""

    async def edit(
        self, image: PreparedImage, prompt: str, *, model: str, size: str, quality: str
    ) -> GeneratedImage:
        """Change ``image`` as ``prompt`` asks."""


def _suffix(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot >= 0 else ""
