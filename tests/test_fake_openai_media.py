"""Tests for the fake OpenAI server's media endpoints (audio, images, vision), driven
through the official ``openai`` SDK with real media made by ffmpeg and Pillow."""

from __future__ import annotations

import base64
import io
import math
import struct
import subprocess
import tempfile
import wave
from pathlib import Path

import httpx
import imageio_ffmpeg
import openai
import pytest
from openai.types.responses import EasyInputMessageParam, ResponseInputContentParam
from PIL import Image

from tests.conftest import API_KEY
from tests.fakes.openai_server import (
    AUDIO_UPLOAD_LIMIT,
    SPEECH_INPUT_LIMIT,
    VISION_PAYLOAD_LIMIT,
    FakeOpenAI,
    ImageRecord,
    SeenImage,
    SpeechRecord,
    TranscriptionRecord,
)

RATE = 16_000
MODEL = "gpt-4o-mini"
FORMATS_ERROR = (
    "Invalid file format. Supported formats: "
    "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
)
ENCODERS: dict[str, tuple[str, ...]] = {
    "ogg": ("-c:a", "libopus", "-f", "ogg"),
    "oga": ("-c:a", "libopus", "-f", "ogg"),
    "webm": ("-c:a", "libopus", "-f", "webm"),
    "mp3": ("-c:a", "libmp3lame", "-f", "mp3"),
    "m4a": ("-c:a", "aac", "-f", "mp4"),
    "wav": ("-c:a", "pcm_s16le", "-f", "wav"),
    "flac": ("-c:a", "flac", "-f", "flac"),
}


# --------------------------------------------------------------------------- media makers


def tone_pcm(*parts: tuple[float | None, float]) -> bytes:
    """16 kHz mono s16le: ``(frequency, seconds)`` parts, ``None`` for silence."""
    samples: list[int] = []
    for frequency, seconds in parts:
        count = round(seconds * RATE)
        if frequency is None:
            samples.extend([0] * count)
        else:
            step = 2 * math.pi * frequency / RATE
            samples.extend(round(16000 * math.sin(step * i)) for i in range(count))
    return struct.pack(f"<{len(samples)}h", *samples)


def ffmpeg(args: list[str], data: bytes = b"") -> bytes:
    """Run the bundled ffmpeg; returns what it wrote to stdout."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", *args]
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def encode_audio(pcm: bytes, extension: str) -> bytes:
    """Encode 16 kHz mono PCM into a file of the given type."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / f"audio.{extension}"
        source = ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0"]
        ffmpeg([*source, *ENCODERS[extension], str(target)], pcm)
        return target.read_bytes()


def decoded_seconds(audio: bytes, extension: str) -> float:
    """Duration of an audio file, decoded by ffmpeg (not by the fake)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"audio.{extension}"
        source.write_bytes(audio)
        pcm = ffmpeg(["-i", str(source), "-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1"])
    return len(pcm) / 2 / RATE


def picture(
    size: tuple[int, int] = (64, 64),
    fmt: str = "PNG",
    mode: str = "RGB",
    color: tuple[int, ...] = (255, 0, 0),
) -> bytes:
    """A solid-colour picture encoded by Pillow."""
    buffer = io.BytesIO()
    Image.new(mode, size, color[: len(mode)]).save(buffer, fmt)
    return buffer.getvalue()


def animated_gif() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_b64_image(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


@pytest.fixture(scope="module")
def two_tones() -> bytes:
    """440 Hz for 1 s, 0.6 s of silence, 660 Hz for 1 s."""
    return tone_pcm((440, 1.0), (None, 0.6), (660, 1.0))


@pytest.fixture(scope="module")
def two_tones_ogg(two_tones: bytes) -> bytes:
    return encode_audio(two_tones, "ogg")


def client_for(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)


# --------------------------------------------------------------------------- transcriptions


@pytest.mark.asyncio
async def test_transcription_hears_tones_in_order(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    async with client_for(fake_openai) as client:
        result = await client.audio.transcriptions.create(
            file=("voice.ogg", two_tones_ogg), model="whisper-1"
        )
    assert result.text == "tone440 tone660"
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds == 3  # 2.6 s, rounded up
    [record] = fake_openai.transcriptions
    assert isinstance(record, TranscriptionRecord)
    assert (record.model, record.filename, record.text) == ("whisper-1", "voice.ogg", result.text)
    assert record.duration_seconds == pytest.approx(2.6, abs=0.05)
    request = fake_openai.requests[-1]
    assert request.body == {"model": "whisper-1"}
    [upload] = request.files
    assert (upload.name, upload.filename, upload.content_type) == ("file", "voice.ogg", "audio/ogg")
    assert upload.size == len(two_tones_ogg) and upload.data == two_tones_ogg


@pytest.mark.asyncio
@pytest.mark.parametrize("extension", ["mp3", "wav", "m4a", "webm", "flac", "oga"])
async def test_transcription_decodes_every_accepted_container(
    fake_openai: FakeOpenAI, two_tones: bytes, extension: str
) -> None:
    audio = encode_audio(two_tones, extension)
    async with client_for(fake_openai) as client:
        result = await client.audio.transcriptions.create(
            file=(f"clip.{extension}", audio), model="whisper-1"
        )
    assert result.text == "tone440 tone660"


@pytest.mark.asyncio
async def test_split_audio_transcribed_separately_keeps_each_part(
    fake_openai: FakeOpenAI,
) -> None:
    first = encode_audio(tone_pcm((300, 0.5), (None, 0.4), (500, 0.5)), "ogg")
    second = encode_audio(tone_pcm((None, 0.2), (800, 0.5)), "mp3")
    async with client_for(fake_openai) as client:
        texts = [
            (await client.audio.transcriptions.create(file=(name, data), model="whisper-1")).text
            for name, data in (("part1.ogg", first), ("part2.mp3", second))
        ]
    assert " ".join(texts) == "tone300 tone500 tone800"
    assert [r.filename for r in fake_openai.transcriptions] == ["part1.ogg", "part2.mp3"]


@pytest.mark.asyncio
async def test_short_silences_do_not_split_a_word_and_silence_is_empty(
    fake_openai: FakeOpenAI,
) -> None:
    gap = encode_audio(tone_pcm((440, 0.5), (None, 0.2), (440, 0.5)), "ogg")
    silence = encode_audio(tone_pcm((None, 1.5)), "ogg")
    async with client_for(fake_openai) as client:
        one_word = await client.audio.transcriptions.create(file=("a.ogg", gap), model="whisper-1")
        quiet = await client.audio.transcriptions.create(file=("b.ogg", silence), model="whisper-1")
    assert one_word.text == "tone440"
    assert quiet.text == ""
    assert quiet.usage is not None and quiet.usage.type == "duration"
    assert quiet.usage.seconds == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
async def test_gpt4o_transcription_reports_token_usage(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes, model: str
) -> None:
    async with client_for(fake_openai) as client:
        result = await client.audio.transcriptions.create(
            file=("a.ogg", two_tones_ogg), model=model, prompt="tones"
        )
        text = await client.audio.transcriptions.create(
            file=("a.ogg", two_tones_ogg), model=model, response_format="text"
        )
    assert result.text == "tone440 tone660"
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    details = usage.input_token_details
    assert details is not None
    assert details.audio_tokens == math.ceil(2.6 * 1000 / 60)
    assert details.text_tokens == tokens(len("tones"))
    assert usage.input_tokens == details.audio_tokens + details.text_tokens
    assert usage.output_tokens == tokens(len("tone440 tone660"))
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert text == "tone440 tone660\n"


@pytest.mark.asyncio
async def test_whisper_verbose_json_and_subtitles(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    async with client_for(fake_openai) as client:
        verbose = await client.audio.transcriptions.create(
            file=("a.ogg", two_tones_ogg),
            model="whisper-1",
            response_format="verbose_json",
            language="de",
            timestamp_granularities=["word", "segment"],
        )
        srt = await client.audio.transcriptions.create(
            file=("a.ogg", two_tones_ogg), model="whisper-1", response_format="srt"
        )
        vtt = await client.audio.transcriptions.create(
            file=("a.ogg", two_tones_ogg), model="whisper-1", response_format="vtt"
        )
    assert verbose.text == "tone440 tone660"
    assert verbose.language == "german"
    assert verbose.duration == pytest.approx(2.6, abs=0.05)
    assert verbose.segments is not None
    assert [s.text for s in verbose.segments] == [" tone440", " tone660"]
    assert [s.id for s in verbose.segments] == [0, 1]
    first, second = verbose.segments
    assert first.start == pytest.approx(0.0, abs=0.05)
    assert first.end == pytest.approx(1.0, abs=0.05)
    assert second.start == pytest.approx(1.6, abs=0.05)
    assert second.end == pytest.approx(2.6, abs=0.05)
    assert verbose.words is not None and [w.word for w in verbose.words] == ["tone440", "tone660"]
    assert verbose.usage is not None and verbose.usage.seconds == 3
    assert fake_openai.requests[-3].body == {
        "model": "whisper-1",
        "response_format": "verbose_json",
        "language": "de",
        "timestamp_granularities[]": ["word", "segment"],
    }
    assert srt.startswith("1\n00:00:00,0")
    assert "\ntone440\n\n2\n00:00:01,6" in srt and srt.endswith("tone660\n")
    assert vtt.startswith("WEBVTT\n\n00:00:00.0") and "tone660" in vtt


@pytest.mark.asyncio
async def test_enqueued_transcripts_override_what_is_heard(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    fake_openai.enqueue_transcript("hello world", "second")
    assert fake_openai.pending_transcripts == 2
    async with client_for(fake_openai) as client:
        texts = [
            (
                await client.audio.transcriptions.create(
                    file=("a.ogg", two_tones_ogg), model="whisper-1"
                )
            ).text
            for _ in range(3)
        ]
    assert texts == ["hello world", "second", "tone440 tone660"]
    assert fake_openai.pending_transcripts == 0
    fake_openai.enqueue_transcript("left over")
    fake_openai.reset()
    assert fake_openai.pending_transcripts == 0
    assert fake_openai.transcriptions == []


@pytest.mark.asyncio
async def test_transcription_size_limit_is_25_mb(fake_openai: FakeOpenAI) -> None:
    # A WAV of exactly 25 MB (mostly silence, one tone at the end) is accepted ...
    frames = (AUDIO_UPLOAD_LIMIT - 44) // 2
    tail = tone_pcm((500, 0.5))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames * 2 - len(tail)) + tail)
    at_limit = buffer.getvalue()
    assert len(at_limit) == AUDIO_UPLOAD_LIMIT
    over_limit = at_limit + b"\0"
    async with client_for(fake_openai) as client:
        accepted = await client.audio.transcriptions.create(
            file=("long.wav", at_limit), model="whisper-1"
        )
        # ... one byte more is refused before anything is decoded.
        with pytest.raises(openai.APIStatusError) as info:
            await client.audio.transcriptions.create(
                file=("long.wav", over_limit), model="whisper-1"
            )
    assert accepted.text == "tone500"
    assert accepted.usage is not None and accepted.usage.type == "duration"
    assert accepted.usage.seconds == math.ceil(frames / RATE)
    exc = info.value
    assert exc.status_code == 413
    assert exc.body == {
        "message": (
            f"Maximum content size limit (26214400) exceeded ({AUDIO_UPLOAD_LIMIT + 1} bytes read)"
        ),
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert len(fake_openai.transcriptions) == 1


@pytest.mark.asyncio
async def test_transcription_rejects_unsupported_extension_and_corrupt_audio(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as wrong_name:
            await client.audio.transcriptions.create(
                file=("voice.opus", two_tones_ogg), model="whisper-1"
            )
        with pytest.raises(openai.BadRequestError) as no_name:
            await client.audio.transcriptions.create(
                file=("voice", two_tones_ogg), model="whisper-1"
            )
        with pytest.raises(openai.BadRequestError) as corrupt:
            await client.audio.transcriptions.create(
                file=("voice.mp3", b"definitely not audio" * 100), model="gpt-4o-transcribe"
            )
        with pytest.raises(openai.BadRequestError) as short:
            await client.audio.transcriptions.create(
                file=("blip.ogg", encode_audio(tone_pcm((440, 0.05)), "ogg")), model="whisper-1"
            )
    assert wrong_name.value.body == {
        "message": FORMATS_ERROR,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert no_name.value.message.endswith(FORMATS_ERROR)
    assert corrupt.value.body == {
        "message": "Audio file might be corrupted or unsupported",
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_value",
    }
    assert short.value.code == "audio_too_short"
    assert fake_openai.transcriptions == []


@pytest.mark.asyncio
async def test_transcription_model_and_option_errors(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    audio = ("a.ogg", two_tones_ogg)
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.audio.transcriptions.create(file=audio, model="whisper-2")
        with pytest.raises(openai.BadRequestError) as verbose:
            await client.audio.transcriptions.create(
                file=audio, model="gpt-4o-transcribe", response_format="verbose_json"
            )
        with pytest.raises(openai.BadRequestError) as srt:
            await client.audio.transcriptions.create(
                file=audio, model="gpt-4o-mini-transcribe", response_format="srt"
            )
        with pytest.raises(openai.BadRequestError) as language:
            await client.audio.transcriptions.create(file=audio, model="whisper-1", language="eng")
        with pytest.raises(openai.BadRequestError) as temperature:
            await client.audio.transcriptions.create(file=audio, model="whisper-1", temperature=2)
    assert unknown.value.code == "model_not_found"
    assert "The model `whisper-2` does not exist" in unknown.value.message
    assert verbose.value.body == {
        "message": (
            "response_format 'verbose_json' is not compatible with model 'gpt-4o-transcribe'. "
            "Use 'json' or 'text' instead."
        ),
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "unsupported_value",
    }
    assert srt.value.code == "unsupported_value"
    assert language.value.param == "language"
    assert temperature.value.code == "decimal_above_max_value"
    assert fake_openai.transcriptions == []


# --------------------------------------------------------------------------- speech


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("response_format", "extension", "content_type", "magic"),
    [
        ("mp3", "mp3", "audio/mpeg", b"ID3"),
        ("opus", "ogg", "audio/ogg", b"OggS"),
        ("aac", "aac", "audio/aac", b"\xff\xf1"),
        ("flac", "flac", "audio/flac", b"fLaC"),
        ("wav", "wav", "audio/wav", b"RIFF"),
    ],
)
async def test_speech_returns_real_audio_in_each_format(
    fake_openai: FakeOpenAI, response_format: str, extension: str, content_type: str, magic: bytes
) -> None:
    text = "x" * 30  # 2 seconds at 15 characters a second
    async with client_for(fake_openai) as client:
        speech = await client.audio.speech.create(
            model="gpt-4o-mini-tts",
            voice="coral",
            input=text,
            response_format=response_format,  # type: ignore[arg-type]
            instructions="Speak cheerfully.",
        )
    audio = speech.content
    assert speech.response.headers["content-type"] == content_type
    assert speech.response.headers["x-request-id"].startswith("req_")
    assert audio.startswith(magic)
    if response_format == "opus":
        assert b"OpusHead" in audio[:200]
    assert decoded_seconds(audio, extension) == pytest.approx(2.0, abs=0.1)
    assert fake_openai.speeches == [
        SpeechRecord("gpt-4o-mini-tts", "coral", response_format, text, 2.0)
    ]


@pytest.mark.asyncio
async def test_speech_defaults_speed_minimum_and_distinct_tones(fake_openai: FakeOpenAI) -> None:
    async with client_for(fake_openai) as client:
        default = await client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 30)
        fast = await client.audio.speech.create(
            model="tts-1-hd", voice="nova", input="x" * 30, speed=4.0, response_format="pcm"
        )
        short = await client.audio.speech.create(
            model="tts-1", voice="onyx", input="Hi", response_format="wav"
        )
        heard = [
            (await client.audio.transcriptions.create(file=(name, audio), model="whisper-1")).text
            for name, audio in (("a.mp3", default.read()), ("c.wav", short.read()))
        ]
    assert default.response.headers["content-type"] == "audio/mpeg"
    pcm = fast.read()
    assert fast.response.headers["content-type"] == "audio/pcm"
    assert len(pcm) == round(0.5 * 24_000) * 2  # 24 kHz mono s16le
    assert [s.seconds for s in fake_openai.speeches] == [2.0, 0.5, 0.3]
    assert [s.response_format for s in fake_openai.speeches] == ["mp3", "pcm", "wav"]
    # Each speech request gets the next pitch, so joined chunks stay distinguishable.
    assert heard == ["tone220", "tone440"]


@pytest.mark.asyncio
async def test_speech_input_limit_is_4096_characters(fake_openai: FakeOpenAI) -> None:
    async with client_for(fake_openai) as client:
        longest = await client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="x" * SPEECH_INPUT_LIMIT,
            response_format="pcm",
            speed=4.0,
        )
        with pytest.raises(openai.BadRequestError) as too_long:
            await client.audio.speech.create(
                model="tts-1", voice="alloy", input="x" * (SPEECH_INPUT_LIMIT + 1)
            )
        with pytest.raises(openai.BadRequestError) as empty:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="")
    seconds = round(SPEECH_INPUT_LIMIT / 15 / 4, 3)
    assert len(longest.read()) == round(seconds * 24_000) * 2
    assert too_long.value.body == {
        "message": (
            "Invalid 'input': string too long. Expected a string with maximum length 4096, "
            "but got a string with length 4097 instead."
        ),
        "type": "invalid_request_error",
        "param": "input",
        "code": "string_above_max_length",
    }
    assert empty.value.param == "input"
    assert empty.value.code == "empty_string"
    assert len(fake_openai.speeches) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "param", "code", "text"),
    [
        ({"voice": "bob"}, "voice", "invalid_value", "Invalid value: 'bob'. Supported values"),
        ({"speed": 4.5}, "speed", "decimal_above_max_value", "Expected a value <= 4"),
        ({"speed": 0.2}, "speed", "decimal_below_min_value", "Expected a value >= 0.25"),
        ({"instructions": "Whisper."}, "instructions", "unsupported_parameter", "instructions"),
        ({"response_format": "ogg"}, "response_format", "invalid_value", "'ogg'"),
    ],
)
async def test_speech_rejects_bad_options(
    fake_openai: FakeOpenAI, options: dict[str, object], param: str, code: str, text: str
) -> None:
    request: dict[str, object] = {"model": "tts-1", "voice": "alloy", "input": "Hello"}
    request.update(options)
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.audio.speech.create(**request)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.audio.speech.create(model="tts-2", voice="alloy", input="Hello")
    assert (info.value.param, info.value.code) == (param, code)
    assert text in info.value.message
    assert unknown.value.code == "model_not_found"
    assert fake_openai.speeches == []


# --------------------------------------------------------------------------- image generation


@pytest.mark.asyncio
async def test_gpt_image_generation_returns_png_and_usage(fake_openai: FakeOpenAI) -> None:
    async with client_for(fake_openai) as client:
        result = await client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk")
        wide = await client.images.generate(
            model="gpt-image-1-mini",
            prompt="a wide harbour",
            size="1536x1024",
            quality="low",
            output_format="webp",
            background="transparent",
            n=2,
        )
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].url is None and result.data[0].revised_prompt is None
    image = decode_b64_image(result.data[0].b64_json)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert (result.size, result.quality, result.output_format, result.background) == (
        "1024x1024",
        "high",
        "png",
        "opaque",
    )
    usage = result.usage
    assert usage is not None
    assert usage.input_tokens_details.text_tokens == tokens(len("a lighthouse at dusk"))
    assert usage.input_tokens_details.image_tokens == 0
    assert usage.output_tokens == 4160
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens

    assert wide.data is not None and len(wide.data) == 2
    webp = decode_b64_image(wide.data[1].b64_json)
    assert (webp.format, webp.size, webp.mode) == ("WEBP", (1536, 1024), "RGBA")
    assert wide.usage is not None and wide.usage.output_tokens == 2 * 400
    assert (wide.quality, wide.background, wide.output_format) == ("low", "transparent", "webp")
    assert fake_openai.images == [
        ImageRecord("generations", "gpt-image-1", "a lighthouse at dusk", "1024x1024", "high"),
        ImageRecord("generations", "gpt-image-1-mini", "a wide harbour", "1536x1024", "low"),
    ]


@pytest.mark.asyncio
async def test_gpt_image_jpeg_output(fake_openai: FakeOpenAI) -> None:
    async with client_for(fake_openai) as client:
        result = await client.images.generate(
            model="gpt-image-1", prompt="x", size="1024x1536", output_format="jpeg"
        )
    assert result.data is not None
    image = decode_b64_image(result.data[0].b64_json)
    assert (image.format, image.size) == ("JPEG", (1024, 1536))


@pytest.mark.asyncio
async def test_dall_e_answers_urls_served_by_the_fake(fake_openai: FakeOpenAI) -> None:
    async with client_for(fake_openai) as client:
        three = await client.images.generate(model="dall-e-3", prompt="a fox", size="1792x1024")
        three_b64 = await client.images.generate(
            model="dall-e-3", prompt="a fox", quality="hd", response_format="b64_json"
        )
        two = await client.images.generate(model="dall-e-2", prompt="a bee", size="256x256", n=2)
    assert three.data is not None and two.data is not None and three_b64.data is not None
    assert three.data[0].b64_json is None
    assert three.data[0].revised_prompt == "A detailed picture of: a fox"
    assert three.usage is None
    assert three_b64.data[0].url is None
    assert decode_b64_image(three_b64.data[0].b64_json).size == (1024, 1024)
    assert len(two.data) == 2 and two.data[0].revised_prompt is None
    urls = [three.data[0].url, *(d.url for d in two.data)]
    async with httpx.AsyncClient() as http:  # no API key, like the real image CDN
        pictures = [await http.get(str(url)) for url in urls]
        missing = await http.get(f"{fake_openai.base_url}/_fake/images/nope.png")
    for url, response in zip(urls, pictures, strict=True):
        assert str(url).startswith(f"{fake_openai.base_url}/_fake/images/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
    sizes = [Image.open(io.BytesIO(r.content)).size for r in pictures]
    assert sizes == [(1792, 1024), (256, 256), (256, 256)]
    assert missing.status_code == 404
    assert [(r.model, r.size, r.quality) for r in fake_openai.images] == [
        ("dall-e-3", "1792x1024", "standard"),
        ("dall-e-3", "1024x1024", "hd"),
        ("dall-e-2", "256x256", "standard"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "param", "code", "text"),
    [
        ({"model": "gpt-image-1", "size": "512x512"}, "size", "invalid_value", "'auto'"),
        ({"model": "dall-e-3", "size": "1024x1536"}, "size", "invalid_value", "'1792x1024'"),
        ({"model": "dall-e-2", "size": "1792x1024"}, "size", "invalid_value", "'256x256'"),
        ({"model": "gpt-image-1", "quality": "hd"}, "quality", "invalid_value", "'medium'"),
        ({"model": "dall-e-3", "quality": "high"}, "quality", "invalid_value", "'standard'"),
        ({"model": "dall-e-2", "quality": "hd"}, "quality", "invalid_value", "'hd'"),
        (
            {"model": "gpt-image-1", "response_format": "b64_json"},
            "response_format",
            "unknown_parameter",
            "Unknown parameter: 'response_format'.",
        ),
        (
            {"model": "gpt-image-1-mini", "response_format": "url"},
            "response_format",
            "unknown_parameter",
            "Unknown parameter: 'response_format'.",
        ),
        (
            {"model": "dall-e-3", "output_format": "png"},
            "output_format",
            "unknown_parameter",
            "Unknown parameter: 'output_format'.",
        ),
        ({"model": "dall-e-3", "n": 2}, "n", "integer_above_max_value", "<= 1"),
        ({"model": "dall-e-2", "n": 11}, "n", "integer_above_max_value", "<= 10"),
        (
            {"model": "gpt-image-1", "prompt": "p" * 32001},
            "prompt",
            "string_above_max_length",
            "maximum length 32000",
        ),
        (
            {"model": "dall-e-3", "prompt": "p" * 4001},
            "prompt",
            "string_above_max_length",
            "maximum length 4000",
        ),
        (
            {"model": "dall-e-2", "prompt": "p" * 1001},
            "prompt",
            "string_above_max_length",
            "maximum length 1000",
        ),
    ],
)
async def test_image_generation_validates_like_the_api(
    fake_openai: FakeOpenAI, options: dict[str, object], param: str, code: str, text: str
) -> None:
    request: dict[str, object] = {"prompt": "a cat"}
    request.update(options)
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.images.generate(**request)  # type: ignore[call-overload]
    exc = info.value
    assert (exc.param, exc.code, exc.type) == (param, code, "invalid_request_error")
    assert text in exc.message
    assert fake_openai.images == []


@pytest.mark.asyncio
async def test_image_prompt_limits_are_inclusive_and_unknown_model_is_404(
    fake_openai: FakeOpenAI,
) -> None:
    async with client_for(fake_openai) as client:
        ok = await client.images.generate(model="dall-e-2", prompt="p" * 1000, size="256x256")
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.images.generate(model="dall-e-4", prompt="a cat")
    assert ok.data is not None and ok.data[0].url is not None
    assert unknown.value.code == "model_not_found"


@pytest.mark.asyncio
async def test_forbidden_prompts_are_rejected_by_the_safety_system(
    fake_openai: FakeOpenAI,
) -> None:
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as dall_e:
            await client.images.generate(model="dall-e-3", prompt="something Forbidden here")
        with pytest.raises(openai.BadRequestError) as gpt_image:
            await client.images.generate(model="gpt-image-1", prompt="a forbidden picture")
    assert dall_e.value.body == {
        "message": (
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system."
        ),
        "type": "image_generation_user_error",
        "param": None,
        "code": "content_policy_violation",
    }
    assert gpt_image.value.type == "image_generation_user_error"
    assert gpt_image.value.code == "moderation_blocked"
    assert "rejected by the safety system" in gpt_image.value.message
    assert str(gpt_image.value.request_id) in gpt_image.value.message
    assert fake_openai.images == []


# --------------------------------------------------------------------------- image edits


@pytest.mark.asyncio
async def test_gpt_image_edit_inverts_and_resizes(fake_openai: FakeOpenAI) -> None:
    source = picture((300, 200), "PNG", "RGB", (255, 0, 0))
    async with client_for(fake_openai) as client:
        result = await client.images.edit(
            model="gpt-image-1", image=("photo.png", source), prompt="make it cyan"
        )
    assert result.data is not None
    edited = decode_b64_image(result.data[0].b64_json)
    assert (edited.format, edited.size) == ("PNG", (1536, 1024))  # auto follows the aspect
    assert edited.convert("RGB").getpixel((10, 10)) == (0, 255, 255)
    assert result.size == "1536x1024"
    usage = result.usage
    assert usage is not None
    assert usage.input_tokens_details.image_tokens == 85 + 170  # one 512 px tile
    assert usage.input_tokens_details.text_tokens == tokens(len("make it cyan"))
    assert usage.output_tokens == 6208
    request = fake_openai.requests[-1]
    assert request.body == {"model": "gpt-image-1", "prompt": "make it cyan"}
    assert [(f.name, f.filename, f.content_type) for f in request.files] == [
        ("image", "photo.png", "image/png")
    ]
    assert fake_openai.images == [
        ImageRecord("edits", "gpt-image-1", "make it cyan", "1536x1024", "high")
    ]


@pytest.mark.asyncio
async def test_gpt_image_edit_accepts_several_jpeg_and_webp_images(
    fake_openai: FakeOpenAI,
) -> None:
    images = [
        ("a.jpg", picture((1024, 1024), "JPEG")),
        ("b.webp", picture((64, 64), "WEBP")),
    ]
    async with client_for(fake_openai) as client:
        result = await client.images.edit(
            model="gpt-image-1-mini",
            image=images,
            prompt="combine",
            size="1024x1024",
            quality="medium",
        )
    assert result.data is not None
    assert decode_b64_image(result.data[0].b64_json).size == (1024, 1024)
    assert result.usage is not None
    assert result.usage.input_tokens_details.image_tokens == 765 + 255
    assert result.usage.output_tokens == 1056
    assert [f.name for f in fake_openai.requests[-1].files] == ["image[]", "image[]"]


@pytest.mark.asyncio
async def test_dall_e_2_edit_needs_square_rgba_png_under_4_mb(fake_openai: FakeOpenAI) -> None:
    rgba = picture((256, 256), "PNG", "RGBA", (0, 0, 255, 255))
    async with client_for(fake_openai) as client:
        result = await client.images.edit(
            model="dall-e-2", image=("a.png", rgba), prompt="p", size="512x512"
        )
        b64 = await client.images.edit(
            model="dall-e-2",
            image=("a.png", rgba),
            mask=("mask.png", picture((256, 256), "PNG", "RGBA", (0, 0, 0, 0))),
            prompt="p",
            response_format="b64_json",
        )
        with pytest.raises(openai.BadRequestError) as rgb:
            await client.images.edit(
                model="dall-e-2", image=("a.png", picture((256, 256))), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as wide:
            await client.images.edit(
                model="dall-e-2", image=("a.png", picture((300, 200), mode="RGBA")), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as jpeg:
            await client.images.edit(
                model="dall-e-2", image=("a.jpg", picture((256, 256), "JPEG")), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as big:
            await client.images.edit(
                model="dall-e-2", image=("a.png", rgba + bytes(4 * 1024 * 1024)), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as mask:
            await client.images.edit(
                model="dall-e-2",
                image=("a.png", rgba),
                mask=("mask.png", picture((128, 128), "PNG", "RGBA")),
                prompt="p",
            )
        with pytest.raises(openai.BadRequestError) as dall_e_3:
            await client.images.edit(model="dall-e-3", image=("a.png", rgba), prompt="p")
    assert result.data is not None and result.data[0].url is not None
    assert result.usage is None
    async with httpx.AsyncClient() as http:
        served = await http.get(result.data[0].url)
    edited = Image.open(io.BytesIO(served.content))
    assert edited.size == (512, 512)
    assert edited.convert("RGB").getpixel((0, 0)) == (255, 255, 0)
    assert b64.data is not None and decode_b64_image(b64.data[0].b64_json).size == (1024, 1024)
    assert rgb.value.message.endswith(
        "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB."
    )
    invalid = "Invalid image file or mode for image 1, please check your image file."
    for info in (wide, jpeg, big):
        assert info.value.message.endswith(invalid)
        assert info.value.param == "image"
    assert mask.value.param == "mask"
    assert dall_e_3.value.param == "model"
    assert len(fake_openai.images) == 2


@pytest.mark.asyncio
async def test_gpt_image_edit_rejects_bad_images(fake_openai: FakeOpenAI) -> None:
    good = picture((64, 64))
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as garbage:
            await client.images.edit(
                model="gpt-image-1", image=("a.png", b"not a picture"), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as gif:
            await client.images.edit(
                model="gpt-image-1", image=[("a.png", good), ("b.gif", animated_gif())], prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as huge:
            await client.images.edit(
                model="gpt-image-1", image=("a.png", good + bytes(50 * 1024 * 1024)), prompt="p"
            )
        with pytest.raises(openai.BadRequestError) as response_format:
            await client.images.edit(
                model="gpt-image-1", image=("a.png", good), prompt="p", response_format="url"
            )
        with pytest.raises(openai.BadRequestError) as forbidden:
            await client.images.edit(model="gpt-image-1", image=("a.png", good), prompt="forbidden")
    assert garbage.value.body == {
        "message": "Invalid image file or mode for image 1, please check your image file.",
        "type": "invalid_request_error",
        "param": "image",
        "code": "invalid_image_file",
    }
    assert "for image 2," in gif.value.message
    assert "for image 1," in huge.value.message
    assert response_format.value.code == "unknown_parameter"
    assert forbidden.value.code == "moderation_blocked"
    assert fake_openai.images == []


# --------------------------------------------------------------------------- vision


@pytest.mark.asyncio
async def test_responses_input_images_are_decoded_and_charged(fake_openai: FakeOpenAI) -> None:
    square = data_url(picture((1024, 1024)))
    small = data_url(picture((300, 200), "JPEG"), "image/jpeg")
    question = "what is this?"
    async with client_for(fake_openai) as client:
        response = await client.responses.create(
            model=MODEL,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": question},
                        {"type": "input_image", "image_url": square, "detail": "high"},
                        {"type": "input_image", "image_url": small, "detail": "low"},
                    ],
                }
            ],
        )
    assert response.output_text == "Echo: what is this? [2 images]"
    assert response.usage is not None
    assert response.usage.input_tokens == tokens(len(question)) + 765 + 85
    expected = [
        SeenImage("image/png", 1024, 1024, "high", 765),
        SeenImage("image/jpeg", 300, 200, "low", 85),
    ]
    assert fake_openai.images_seen() == expected
    assert fake_openai.images_seen(fake_openai.model_requests()[-1]) == expected


@pytest.mark.asyncio
async def test_chat_image_url_parts_and_large_image_tiles(fake_openai: FakeOpenAI) -> None:
    tall = data_url(picture((2048, 4096)))
    gif = data_url(picture((100, 100), "GIF", "P", (3,)), "image/gif")
    async with client_for(fake_openai) as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "earlier question"},
                {"role": "assistant", "content": "earlier answer"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": tall}},
                        {"type": "image_url", "image_url": {"url": gif, "detail": "auto"}},
                    ],
                },
            ],
        )
        text_only = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "plain"}]
        )
    assert completion.choices[0].message.content == "Echo: [2 images]"
    assert completion.usage is not None
    chars = len("earlier question") + len("earlier answer")
    # 2048x4096 -> 768x1536: 2x3 tiles; 100x100 -> one tile.
    assert completion.usage.prompt_tokens == tokens(chars) + (85 + 170 * 6) + (85 + 170)
    assert [(i.mime, i.tokens) for i in fake_openai.images_seen()] == [
        ("image/png", 1105),
        ("image/gif", 255),
    ]
    assert text_only.choices[0].message.content == "Echo: plain"
    assert fake_openai.model_requests()[-1].images == []


@pytest.mark.asyncio
async def test_http_image_urls_are_not_fetched(fake_openai: FakeOpenAI) -> None:
    url = "https://api.telegram.org/file/bot123:SECRET/photos/file_1.jpg"
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as chat:
            await client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
                ],
            )
        with pytest.raises(openai.BadRequestError) as responses:
            await client.responses.create(
                model=MODEL,
                input=[
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": url, "detail": "auto"}],
                    }
                ],
            )
    expected = {
        "message": f"Error while downloading {url}.",
        "type": "invalid_request_error",
        "param": "url",
        "code": "invalid_image_url",
    }
    assert chat.value.body == expected
    assert responses.value.body == expected
    assert fake_openai.images_seen() == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "code", "text"),
    [
        ("data:image/png;base64,bm90IGFuIGltYWdl", "invalid_image_format", "not represent"),
        ("data:image/png;base64,%%%notbase64", "invalid_image_format", "not represent"),
        (data_url(picture((8, 8), "BMP"), "image/bmp"), "invalid_image_format", "unsupported"),
        (data_url(animated_gif(), "image/gif"), "invalid_image_format", "unsupported"),
        (data_url(picture((8, 8)), "text/plain"), "invalid_value", "MIME type 'text/plain'"),
        ("ftp://example.com/a.png", "invalid_value", "Invalid image URL"),
    ],
)
@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_invalid_images_are_rejected(
    fake_openai: FakeOpenAI, api: str, url: str, code: str, text: str
) -> None:
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as info:
            if api == "responses":
                await client.responses.create(
                    model=MODEL,
                    input=[
                        {
                            "role": "user",
                            "content": [{"type": "input_image", "image_url": url, "detail": "low"}],
                        }
                    ],
                )
            else:
                await client.chat.completions.create(
                    model=MODEL,
                    messages=[
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": url}}],
                        }
                    ],
                )
    assert info.value.code == code
    assert info.value.param == ("input" if api == "responses" else "messages")
    assert text in info.value.message


@pytest.mark.asyncio
async def test_vision_payload_over_50_mb_is_rejected(fake_openai: FakeOpenAI) -> None:
    prefix = "data:image/png;base64,"
    half = prefix + "A" * (VISION_PAYLOAD_LIMIT // 2 - len(prefix) + 4)
    parts: list[ResponseInputContentParam] = [
        {"type": "input_image", "image_url": half, "detail": "auto"} for _ in range(2)
    ]
    message: EasyInputMessageParam = {"role": "user", "content": parts}
    async with client_for(fake_openai) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(model=MODEL, input=[message])
    assert info.value.param == "input"
    assert "exceeds the limit of 52428800 bytes (50 MB)" in info.value.message


# --------------------------------------------------------------------------- request text


@pytest.mark.asyncio
async def test_all_request_text_shows_what_reached_openai(
    fake_openai: FakeOpenAI, two_tones_ogg: bytes
) -> None:
    async with client_for(fake_openai) as client:
        await client.audio.transcriptions.create(
            file=("voice-note.ogg", two_tones_ogg), model="whisper-1", prompt="a tone"
        )
        await client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": data_url(picture())}},
                    ],
                }
            ],
        )
        await client.images.generate(model="dall-e-2", prompt="a tiny bee", size="256x256")
    text = fake_openai.all_request_text()
    assert "POST /v1/audio/transcriptions" in text
    assert "file: voice-note.ogg (audio/ogg, " in text
    assert '"prompt": "a tone"' in text
    assert "data:image/png;base64," in text
    assert '"prompt": "a tiny bee"' in text
    assert f"authorization: Bearer {API_KEY}" in text
    assert "telegram.org" not in text
    assert "OggS" not in text  # file contents are not part of the text
