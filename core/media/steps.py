"""The media steps of a turn: hearing voice, seeing pictures, drawing, speaking, and
talking (a voice note answered by voice in one realtime session).

Each step that calls the API reserves its exact or upper-bound price against the budgets
first — refused, without a call, when it does not fit in what a budget has left — settles
to the real cost afterwards (or releases on failure), and returns one usage row per call.
Conversion (ffmpeg, Pillow) never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from core.conversation.store import UsageRecord
from core.errors import (
    MediaTooLarge,
    ModelNotFound,
    UnsupportedMedia,
    UpstreamRejected,
    UpstreamUnavailable,
    UserInputError,
)
from core.media.ports import (
    Attachment,
    AudioConverter,
    AudioPart,
    GeneratedImage,
    ImageGenerator,
    PictureProcessor,
    PreparedImage,
    Speech,
    SpeechSynthesizer,
    Transcriber,
    Transcript,
    VoiceNote,
)
from core.media.realtime_speech import RealtimeSpeech, pcm_wav, speech_upper_bound
from core.models.lifecycle import ModelLifecycle
from core.models.realtime import (
    PCM_RATE,
    HistoryLine,
    RealtimeUsage,
    RealtimeVoice,
    pcm_seconds,
)
from core.models.registry import (
    Entry,
    ImageModelSpec,
    MediaModels,
    SpeechModelSpec,
    TranscriptionModelSpec,
)
from core.money.metering import Bill, Charge, Meter
from core.money.prices import PriceTable
from core.money.pricing import realtime_cost, realtime_price_sheet

PARALLEL_CALLS = 4
TALK_INPUT_SECONDS = 300
"""The longest voice note ``/voice talk`` sends to a realtime session (longer ones are for
``/voice on``: transcribed, split if need be, and answered)."""
TALK_ANSWER_SECONDS = 90
"""The longest spoken answer ``/voice talk`` asks for (its output tokens are capped to it)."""
AUDIO_TOKENS_PER_SECOND = 20
"""Realtime audio tokens per second, an upper bound for input (the API counts about 10) and
about what output uses."""

_M = TypeVar("_M", bound=Entry)
_R = TypeVar("_R")


@dataclass(frozen=True)
class MediaOptions:
    """The media models and choices from the registry and settings, checked at start-up."""

    image: ImageModelSpec
    image_size: str
    image_quality: str
    transcription: TranscriptionModelSpec
    speech: SpeechModelSpec
    voice: str
    speed: float = 1.0
    max_picture_bytes: int = 20 * 1024 * 1024
    models: MediaModels = field(default_factory=MediaModels)
    """The registry's media models, where the chosen ones' successors are found."""


@dataclass(frozen=True)
class MediaKit:
    """The media ports: conversion, the three APIs, and realtime voice sessions (for
    ``/voice talk``; None where the bot has none)."""

    pictures: PictureProcessor
    converter: AudioConverter
    transcriber: Transcriber
    speech: SpeechSynthesizer
    images: ImageGenerator
    realtime: RealtimeVoice | None = None


@dataclass(frozen=True)
class Talked:
    """A voice note answered by voice: what was heard, the answer's words and its voice."""

    heard: str
    answer: str
    note: VoiceNote


@dataclass(frozen=True)
class Seen:
    """Pictures of one message: as sent to the model now, and as kept in history."""

    full: tuple[PreparedImage, ...]
    kept: tuple[PreparedImage, ...]


class MediaSteps:
    """Runs the media steps against the ports, budgets and price table."""

    def __init__(
        self,
        kit: MediaKit,
        options: MediaOptions,
        prices: PriceTable,
        meter: Meter,
        lifecycle: ModelLifecycle,
    ) -> None:
        self.options = options
        self._lifecycle = lifecycle
        self._kit = kit
        self._prices = prices
        self._meter = meter
        self._calls = asyncio.Semaphore(PARALLEL_CALLS)

    async def hear(
        self, audio: Sequence[Attachment], charge: Charge, usage: list[UsageRecord]
    ) -> str:
        """Transcribe voice notes and audio files, in order; long audio is split on silence
        by the converter and its parts' transcripts are joined. A usage row is appended to
        ``usage`` as each call returns, so calls made before a failure are still charged."""
        return await self._with_successor(
            self.options.models.transcription,
            self.options.transcription,
            lambda spec: self._hear(spec, audio, charge, usage),
        )

    async def _hear(
        self,
        spec: TranscriptionModelSpec,
        audio: Sequence[Attachment],
        charge: Charge,
        usage: list[UsageRecord],
    ) -> str:
        model = spec.id
        per_minute = self._prices.transcription_per_minute.get(model, 0)
        texts: list[str] = []
        for attachment in audio:
            prepared = await self._kit.converter.for_transcription(
                attachment.data, attachment.filename
            )
            # Each part is billed on its own, in whole seconds at the most.
            estimate = sum(
                self._prices.transcription_cost(model, math.ceil(part.seconds))
                for part in prepared.parts
            )

            async def transcribe(part: AudioPart, bill: Bill) -> Transcript:
                transcript = await self._transcribe(part, model)
                seconds = transcript.billed_seconds or part.seconds
                record = UsageRecord(
                    user_id=charge.user_id,
                    conversation_id=charge.conversation_id,
                    kind="transcription",
                    model=model,
                    units=round(seconds * 1000),
                    unit="audio_ms",
                    cost_micros=self._prices.transcription_cost(model, seconds),
                    prices={"per_minute": per_minute},
                    request_id=transcript.request_id,
                )
                bill.add(record.cost_micros)
                usage.append(record)
                return transcript

            async with self._meter.reserved(
                charge.payer, estimate, "transcribing this audio"
            ) as bill:
                transcripts = await asyncio.gather(
                    *(transcribe(part, bill) for part in prepared.parts)
                )
            texts.extend(t.text for t in transcripts if t.text)
        heard = " ".join(texts).strip()
        if not heard:
            raise UnsupportedMedia("I couldn't hear any words in that audio.")
        return heard

    async def picture(self, attachment: Attachment) -> PreparedImage:
        """One picture in a format and size the API takes (converted off the event loop)."""
        return await asyncio.to_thread(
            self._kit.pictures.prepare,
            attachment.data,
            max_input_bytes=self.options.max_picture_bytes,
        )

    async def see(self, pictures: Sequence[Attachment]) -> Seen:
        """Pictures in a format and size the model takes, and small copies for history."""
        full = tuple(await asyncio.gather(*(self.picture(p) for p in pictures)))
        kept = tuple(
            await asyncio.gather(
                *(asyncio.to_thread(self._kit.pictures.history_copy, i) for i in full)
            )
        )
        return Seen(full, kept)

    async def draw(
        self, prompt: str, charge: Charge, source: PreparedImage | None = None
    ) -> tuple[GeneratedImage, PreparedImage, UsageRecord]:
        """Draw a picture for ``prompt``, or edit ``source`` as it asks; returns the picture,
        its copy for history and its usage row."""
        return await self._with_successor(
            self.options.models.images,
            self.options.image,
            lambda spec: self._draw(spec, prompt, charge, source),
        )

    async def _draw(
        self, spec: ImageModelSpec, prompt: str, charge: Charge, source: PreparedImage | None
    ) -> tuple[GeneratedImage, PreparedImage, UsageRecord]:
        prompt = prompt.strip()
        if not prompt:
            raise UserInputError("Tell me what to draw, e.g. /image a lighthouse at dawn.")
        if len(prompt) > spec.max_prompt_chars:
            raise UserInputError(
                f"That description is too long ({len(prompt):,} characters); "
                f"{spec.title or spec.id} takes up to {spec.max_prompt_chars:,}."
            )
        if source is not None and not spec.edits:
            raise UserInputError(f"{spec.title or spec.id} cannot edit pictures.")
        size, quality = self.options.image_size, self.options.image_quality
        if size not in spec.sizes or quality not in spec.qualities:  # a successor's own
            size, quality = spec.size, spec.quality
        price = self._prices.image_price(spec.id, size, quality)
        async with self._meter.reserved(charge.payer, price.micros, "this picture") as bill:
            if source is None:
                picture = await self._kit.images.generate(
                    prompt, model=spec.id, size=size, quality=quality
                )
            else:
                upload = await asyncio.to_thread(self._kit.pictures.for_edit, source)
                picture = await self._kit.images.edit(
                    upload, prompt, model=spec.id, size=size, quality=quality
                )
            bill.add(price.micros)
        kept = await asyncio.to_thread(self._kit.pictures.history_copy, picture.image)
        record = UsageRecord(
            user_id=charge.user_id,
            conversation_id=charge.conversation_id,
            kind="image_edit" if source is not None else "image",
            model=spec.id,
            units=1,
            unit="images",
            cost_micros=price.micros,
            prices={"per_image": price.micros},
            request_id=picture.request_id,
        )
        return picture, kept, record

    async def speak(self, text: str, charge: Charge, usage: list[UsageRecord]) -> VoiceNote:
        """Speak a reply: chunks within the speech API's limit, joined into one voice note.
        A usage row is appended to ``usage`` as each chunk is spoken: per character from
        the speech endpoint, per text and audio token from a realtime session."""
        return await self._with_successor(
            self.options.models.speech,
            self.options.speech,
            lambda spec: self._say(spec, text, charge, usage),
        )

    async def _say(
        self, spec: SpeechModelSpec, text: str, charge: Charge, usage: list[UsageRecord]
    ) -> VoiceNote:
        speaker = self._speaker(spec)
        limit = min(spec.max_input_chars, speaker.max_input_chars)
        chunks = speech_chunks(speakable(text), limit)
        if not chunks:
            raise UserInputError("There is nothing to say aloud in that reply.")
        if spec.prices is not None:
            estimate = sum(
                realtime_cost(spec.prices, speech_upper_bound(len(chunk))) for chunk in chunks
            )
        else:
            # Each chunk is priced on its own, as it is charged.
            estimate = sum(self._prices.speech_cost(spec.id, len(c)) for c in chunks)

        async def say(chunk: str, bill: Bill) -> Speech:
            async with self._calls:
                speech = await speaker.speak(
                    chunk, model=spec.id, voice=self._voice(spec), speed=self.options.speed
                )
            record = self._speech_record(spec, chunk, speech, charge)
            bill.add(record.cost_micros)
            usage.append(record)
            return speech

        async with self._meter.reserved(charge.payer, estimate, "saying this aloud") as bill:
            spoken = await asyncio.gather(*(say(chunk, bill) for chunk in chunks))
        return await self._kit.converter.voice_note([s.data for s in spoken])

    async def _with_successor(
        self, table: Mapping[str, _M], chosen: _M, call: Callable[[_M], Awaitable[_R]]
    ) -> _R:
        """Run ``call`` on ``chosen``, or on its successor once it is retired or the API
        answers that it does not exist."""
        spec = await self._lifecycle.use(table, chosen)
        try:
            return await call(spec)
        except ModelNotFound:
            self._lifecycle.refused(spec.id)
            successor = await self._lifecycle.use(table, spec)
            if successor is spec:
                raise
            return await call(successor)

    def _speaker(self, spec: SpeechModelSpec) -> SpeechSynthesizer:
        """The port that speaks with ``spec``: a realtime session for a realtime model (a
        speech-endpoint model's successor may be one), else the speech endpoint."""
        if not spec.realtime:
            return self._kit.speech
        if self._kit.realtime is None:
            raise UserInputError("Spoken replies need the Realtime API, which is not set up here.")
        return RealtimeSpeech(self._kit.realtime, max_input_chars=spec.max_input_chars)

    def _voice(self, spec: SpeechModelSpec) -> str:
        """The configured voice, or ``spec``'s first when it does not offer it."""
        return self.options.voice if self.options.voice in spec.voices else spec.voices[0]

    def _speech_record(
        self, spec: SpeechModelSpec, chunk: str, speech: Speech, charge: Charge
    ) -> UsageRecord:
        """The usage row of one spoken chunk, at the prices its model is billed by."""
        if spec.prices is not None:
            tokens = speech.tokens or RealtimeUsage()
            cost = realtime_cost(spec.prices, tokens)
            prices = realtime_price_sheet(spec.prices)
        else:
            tokens = RealtimeUsage()
            cost = self._prices.speech_cost(spec.id, len(chunk))
            prices = {"per_1m_characters": self._prices.speech_per_million_chars.get(spec.id, 0)}
        return UsageRecord(
            user_id=charge.user_id,
            conversation_id=charge.conversation_id,
            kind="speech",
            model=spec.id,
            input_tokens=tokens.input_tokens,
            cached_input_tokens=tokens.cached_input_tokens,
            output_tokens=tokens.output_tokens,
            units=len(chunk),
            unit="characters",
            cost_micros=cost,
            prices=prices,
            request_id=speech.request_id,
        )

    @property
    def can_talk(self) -> bool:
        """Whether voice notes can be answered voice-to-voice: the speech model is a
        realtime model and a realtime port is wired."""
        return self.options.speech.prices is not None and self._kit.realtime is not None

    async def talk(
        self,
        audio: Attachment,
        *,
        instructions: str,
        history: Sequence[HistoryLine],
        charge: Charge,
        usage: list[UsageRecord],
    ) -> Talked:
        """Answer the voice note ``audio`` by voice in one realtime session, with ``history``
        as context. The session's usage (at the realtime model's token prices) and its input
        transcription (per minute, like ``hear``) are appended to ``usage``; the estimate,
        reserved first, is the most the session may cost (its output is capped to it)."""
        spec = self.options.speech
        realtime = self._kit.realtime
        if spec.prices is None or realtime is None:
            raise UserInputError("Voice-to-voice talk needs a realtime speech model.")
        try:
            pcm = await self._kit.converter.pcm16(
                audio.data, audio.filename, rate=PCM_RATE, max_seconds=TALK_INPUT_SECONDS
            )
        except MediaTooLarge as exc:
            raise MediaTooLarge(
                f"{exc} Voice-to-voice talk takes up to {TALK_INPUT_SECONDS // 60} minutes; "
                "send /voice on to have longer recordings transcribed and answered."
            ) from None
        seconds = pcm_seconds(pcm)
        transcription = self.options.transcription.id
        max_output = TALK_ANSWER_SECONDS * AUDIO_TOKENS_PER_SECOND
        bound = RealtimeUsage(
            text_input=len(instructions) + sum(len(line.text) for line in history),
            audio_input=math.ceil(seconds * AUDIO_TOKENS_PER_SECOND),
            audio_output=max_output,
        )
        heard_cost = self._prices.transcription_cost(transcription, seconds)
        estimate = realtime_cost(spec.prices, bound) + heard_cost
        async with self._meter.reserved(charge.payer, estimate) as bill:
            async with self._calls:
                spoken = await realtime.answer(
                    pcm,
                    model=spec.id,
                    voice=self.options.voice,
                    instructions=instructions,
                    history=history,
                    transcription_model=transcription,
                    max_output_tokens=max_output,
                )
            records = (
                UsageRecord(
                    user_id=charge.user_id,
                    conversation_id=charge.conversation_id,
                    kind="talk",
                    model=spec.id,
                    input_tokens=spoken.usage.input_tokens,
                    cached_input_tokens=spoken.usage.cached_input_tokens,
                    output_tokens=spoken.usage.output_tokens,
                    cost_micros=realtime_cost(spec.prices, spoken.usage),
                    prices=realtime_price_sheet(spec.prices),
                    request_id=spoken.response_id,
                ),
                UsageRecord(
                    user_id=charge.user_id,
                    conversation_id=charge.conversation_id,
                    kind="transcription",
                    model=transcription,
                    units=round(seconds * 1000),
                    unit="audio_ms",
                    cost_micros=heard_cost,
                    prices={"per_minute": self._prices.transcription_per_minute[transcription]},
                ),
            )
            for record in records:
                bill.add(record.cost_micros)
                usage.append(record)
        if not spoken.audio:
            raise UpstreamUnavailable("the realtime session answered without audio")
        note = await self._kit.converter.voice_note([pcm_wav(spoken.audio)])
        return Talked(spoken.heard, spoken.answer, note)

    async def _transcribe(self, part: AudioPart, model: str) -> Transcript:
        async with self._calls:
            try:
                return await self._kit.transcriber.transcribe(part, model=model)
            except ModelNotFound:
                raise
            except UpstreamRejected as exc:
                # The API refused the file itself (corrupt, unsupported): say so plainly.
                raise UnsupportedMedia(
                    "The transcription service could not read that audio. Please send it "
                    "again as a voice note or a common audio file (OGG, MP3, M4A, WAV)."
                ) from exc


_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"[*~`]+|(?<!\w)_+|_+(?!\w)")  # snake_case words keep their "_"
_STRUCTURE = re.compile(r"[#>|]+")
_SPACE = re.compile(r"[ \t]+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def speakable(markdown: str) -> str:
    """Reply Markdown as text to read aloud: code blocks left to the screen, links by their
    words, formatting marks dropped."""
    text = _FENCE.sub(" (code shown in the message) ", markdown)
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    text = _STRUCTURE.sub(" ", text)
    lines = (_SPACE.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def speech_chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut between paragraphs, then
    sentences, then words, and only inside a word when one is longer than ``limit``."""
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, limit):
        joined = f"{current} {piece}" if current else piece
        if len(joined) <= limit:
            current = joined
            continue
        chunks.append(current)
        current = piece
    if current:
        chunks.append(current)
    return chunks


def _pieces(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    for paragraph in text.split("\n"):
        for sentence in _SENTENCE_END.split(paragraph.strip()):
            if len(sentence) <= limit:
                if sentence:
                    pieces.append(sentence)
                continue
            for word in sentence.split():
                pieces.extend(word[i : i + limit] for i in range(0, len(word), limit))
    return pieces
