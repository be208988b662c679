"""Transcription, speech and image generation on the official ``openai`` SDK, with the same
retries and error translation as the model gateway (``core.models.openai_gateway``).

Nothing here sends a platform URL: audio and pictures go up as bytes, and pictures come back
as inline base64, never as a link to fetch.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI

from core.errors import EndpointNotFound, UpstreamError, UpstreamRejected, UpstreamUnavailable
from core.media.ports import AudioPart, GeneratedImage, PreparedImage, Speech, Transcript
from core.models.openai_gateway import Deadline, RetryPolicy, retry_delay, translate

_T = TypeVar("_T")


class _Retrying:
    """Runs one SDK call, retrying 429s and 5xx as ``RetryPolicy`` says, within its total."""

    def __init__(
        self, retry: RetryPolicy | None, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    async def call(self, what: str, make: Callable[[], Awaitable[_T]]) -> _T:
        attempt = 0
        deadline = Deadline(self._retry.total)
        while True:
            try:
                async with asyncio.timeout(deadline.left()):
                    result = await make()
            except TimeoutError:
                error: UpstreamError = deadline.expired(what)
            except openai.OpenAIError as exc:
                error = translate(exc)
            else:
                if isinstance(result, str):
                    # The SDK hands back the body as text when it is not JSON: a web page.
                    raise EndpointNotFound(
                        f"the {what} endpoint answered with text, not the API — check "
                        "OPENAI_BASE_URL (an OpenAI-compatible API, usually ending in /v1)"
                    )
                return result
            delay = retry_delay(self._retry, error, attempt, what, deadline.left())
            if delay is None:
                raise error
            attempt += 1
            await self._sleep(delay)


class OpenAITranscriber:
    """``Transcriber`` over ``audio.transcriptions``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._calls = _Retrying(retry, sleep)

    async def transcribe(self, part: AudioPart, *, model: str) -> Transcript:
        """Transcribe one part; the billed seconds are the API's when it reports them."""
        result = await self._calls.call(
            "transcription",
            lambda: self._client.audio.transcriptions.create(
                file=(part.filename, part.data), model=model, response_format="json"
            ),
        )
        usage = getattr(result, "usage", None)
        seconds = getattr(usage, "seconds", None) if usage is not None else None
        return Transcript(
            text=result.text.strip(),
            billed_seconds=float(seconds) if isinstance(seconds, int | float) else None,
            request_id=_request_id(result),
        )


class OpenAISpeech:
    """``SpeechSynthesizer`` over ``audio.speech``, asking for OGG/Opus."""

    def __init__(
        self,
        client: AsyncOpenAI,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        max_input_chars: int = 4096,
    ) -> None:
        self._client = client
        self._calls = _Retrying(retry, sleep)
        self._max_input_chars = max_input_chars

    @property
    def max_input_chars(self) -> int:
        """The longest text one call accepts."""
        return self._max_input_chars

    async def speak(self, text: str, *, model: str, voice: str, speed: float) -> Speech:
        """Speak ``text`` as OGG/Opus."""
        response = await self._calls.call(
            "speech",
            lambda: self._client.audio.speech.create(
                model=model,
                voice=voice,  # the registry's voices, checked at start-up
                input=text,
                response_format="opus",
                speed=speed,
            ),
        )
        return Speech(response.content, response.response.headers.get("x-request-id"))


class OpenAIImages:
    """``ImageGenerator`` over ``images.generate`` and ``images.edit``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        ask_for_b64: frozenset[str] = frozenset(),
    ) -> None:
        self._client = client
        self._calls = _Retrying(retry, sleep)
        self._ask_for_b64 = ask_for_b64

    async def generate(self, prompt: str, *, model: str, size: str, quality: str) -> GeneratedImage:
        """Draw one picture for ``prompt``."""
        params = self._params(model, size, quality)
        result = await self._calls.call(
            "image generation", lambda: self._client.images.generate(prompt=prompt, **params)
        )
        return _picture(result)

    async def edit(
        self, image: PreparedImage, prompt: str, *, model: str, size: str, quality: str
    ) -> GeneratedImage:
        """Change ``image`` (a PNG) as ``prompt`` asks."""
        params = self._params(model, size, quality)
        upload = ("image" + image.suffix, image.data, image.mime_type)
        result = await self._calls.call(
            "image edit",
            lambda: self._client.images.edit(image=upload, prompt=prompt, **params),
        )
        return _picture(result)

    def _params(self, model: str, size: str, quality: str) -> dict[str, Any]:
        # Sizes and qualities are the registry's strings, checked at start-up.
        params: dict[str, Any] = {"model": model, "size": size, "quality": quality, "n": 1}
        if model in self._ask_for_b64:
            params["response_format"] = "b64_json"
        return params


def _picture(result: Any) -> GeneratedImage:
    request_id = _request_id(result)
    data = result.data[0] if result.data else None
    if data is None or not data.b64_json:
        raise UpstreamRejected("the image API returned no picture", request_id=request_id)
    raw = base64.b64decode(data.b64_json)
    from PIL import Image  # only once a picture was drawn: most processes never draw one

    try:
        with Image.open(io.BytesIO(raw)) as picture:
            width, height = picture.size
            mime = Image.MIME.get(picture.format or "", "image/png")
    except (OSError, ValueError) as exc:
        raise UpstreamUnavailable(
            f"the image API returned an unreadable picture: {exc}", request_id=request_id
        ) from None
    return GeneratedImage(
        PreparedImage(raw, mime, width, height),
        revised_prompt=data.revised_prompt or None,
        request_id=request_id,
    )


def _request_id(result: object) -> str | None:
    value = getattr(result, "_request_id", None)
    return value if isinstance(value, str) else None
