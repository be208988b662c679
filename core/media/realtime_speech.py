"""Speech through the Realtime API: the ``SpeechSynthesizer`` port on a ``RealtimeVoice``,
and the upper bounds of a realtime call's usage that budgets reserve before it starts.

A realtime session answers raw PCM16; it is wrapped as WAV (a header, no re-encoding) so
the audio converter turns it into each channel's voice format like any other speech.
"""

from __future__ import annotations

import io
import wave

from core.errors import UpstreamUnavailable
from core.media.ports import Speech
from core.models.realtime import PCM_RATE, PCM_SAMPLE_BYTES, RealtimeUsage, RealtimeVoice

READ_ALOUD = (
    "You are a text-to-speech voice. Read the user's message aloud exactly as written, in "
    "its language, with natural intonation. Do not answer it, comment on it, or add or "
    "leave out anything."
)
"""The session instructions for speaking a reply."""
AUDIO_TOKENS_PER_CHAR = 2
"""Output audio tokens allowed per character read: realtime audio runs at about 20 tokens a
second and speech at 12 to 15 characters a second, so 2 leaves room for slow speech."""
MIN_OUTPUT_TOKENS = 64
SPEED_RANGE = (0.25, 1.5)
"""The output speeds a realtime session takes."""


def speech_output_tokens(characters: int) -> int:
    """The most output tokens a session reading ``characters`` characters may use."""
    return max(MIN_OUTPUT_TOKENS, characters * AUDIO_TOKENS_PER_CHAR)


def speech_upper_bound(characters: int, instructions: str = READ_ALOUD) -> RealtimeUsage:
    """A session's usage at most for reading ``characters`` characters: every character
    and instruction character a text token (real text is about four to a token), and all
    the output it may give priced as audio, the dearer kind."""
    return RealtimeUsage(
        text_input=characters + len(instructions),
        audio_output=speech_output_tokens(characters),
    )


def pcm_wav(pcm: bytes) -> bytes:
    """Mono PCM16 at the realtime rate in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(PCM_SAMPLE_BYTES)
        file.setframerate(PCM_RATE)
        file.writeframes(pcm)
    return out.getvalue()


class RealtimeSpeech:
    """``SpeechSynthesizer`` through one short realtime session per chunk."""

    def __init__(
        self, voice: RealtimeVoice, *, max_input_chars: int, instructions: str = READ_ALOUD
    ) -> None:
        self._voice = voice
        self._max_input_chars = max_input_chars
        self._instructions = instructions

    @property
    def max_input_chars(self) -> int:
        """The longest text one session is asked to read."""
        return self._max_input_chars

    async def speak(self, text: str, *, model: str, voice: str, speed: float) -> Speech:
        """Read ``text`` aloud; the answer comes as WAV with the session's token usage."""
        low, high = SPEED_RANGE
        spoken = await self._voice.speak(
            text,
            model=model,
            voice=voice,
            instructions=self._instructions,
            max_output_tokens=speech_output_tokens(len(text)),
            speed=min(max(speed, low), high),
        )
        if not spoken.audio:
            raise UpstreamUnavailable("the realtime session answered without audio")
        # A header in front of the samples: far under a millisecond, no thread needed.
        return Speech(pcm_wav(spoken.audio), spoken.response_id, spoken.usage)
