"""The realtime voice port: short Realtime API sessions that speak a text, or answer a
spoken question with speech. Implementation: ``core.models.openai_realtime``.

Audio crosses this port as raw PCM16: mono, 24 kHz, little-endian, the Realtime API's own
format; converting it for a channel is the media steps' work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

PCM_RATE = 24_000
"""Samples per second of the PCM16 audio a realtime session takes and gives."""
PCM_SAMPLE_BYTES = 2


def pcm_seconds(pcm: bytes) -> float:
    """The duration of mono PCM16 audio at ``PCM_RATE``."""
    return len(pcm) // PCM_SAMPLE_BYTES / PCM_RATE


@dataclass(frozen=True, slots=True)
class RealtimeUsage:
    """The tokens one realtime response used, as the API reported them. Cached tokens are
    part of the input counts, as in the API."""

    text_input: int = 0
    cached_text_input: int = 0
    audio_input: int = 0
    cached_audio_input: int = 0
    text_output: int = 0
    audio_output: int = 0

    @property
    def input_tokens(self) -> int:
        """Every input token, text and audio, cached included."""
        return self.text_input + self.audio_input

    @property
    def cached_input_tokens(self) -> int:
        """The cached part of ``input_tokens``."""
        return self.cached_text_input + self.cached_audio_input

    @property
    def output_tokens(self) -> int:
        """Every output token, text and audio."""
        return self.text_output + self.audio_output


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One earlier message of the conversation, given to the model as context."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class SpokenText:
    """A text read aloud: the audio (PCM16), what the model said it spoke, and its usage."""

    audio: bytes
    transcript: str
    usage: RealtimeUsage
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpokenAnswer:
    """A spoken question answered by voice: what was heard (by the session's transcription
    model), the answer's transcript and audio (PCM16), and the response's usage."""

    heard: str
    answer: str
    audio: bytes
    usage: RealtimeUsage
    response_id: str | None = None


class RealtimeVoice(Protocol):
    """Speaks and listens through one short Realtime session per call, always closed.

    Raises the ``core.errors`` upstream errors; ``SessionCut`` when the session ends before
    the answer is complete (nothing reported, so nothing is charged).
    """

    async def speak(
        self,
        text: str,
        *,
        model: str,
        voice: str,
        instructions: str,
        max_output_tokens: int,
        speed: float = 1.0,
    ) -> SpokenText:
        """Read ``text`` aloud as ``instructions`` say, at ``speed`` (0.25 to 1.5)."""

    async def answer(
        self,
        audio: bytes,
        *,
        model: str,
        voice: str,
        instructions: str,
        history: Sequence[HistoryLine],
        transcription_model: str,
        max_output_tokens: int,
    ) -> SpokenAnswer:
        """Answer the question spoken in ``audio`` (PCM16), after ``history``, by voice."""
