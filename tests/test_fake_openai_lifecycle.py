"""The fake OpenAI's model lifecycle, through the real SDK: from its "today" on, a shut-down
model is refused with OpenAI's 404 ``model_not_found`` on every endpoint that takes a model,
and leaves ``GET /v1/models``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.make_audio import tone_segments


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=fake_openai.api_key, base_url=fake_openai.base_url, max_retries=0
    ) as client:
        yield client


def refused(error: openai.NotFoundError, model: str) -> bool:
    """Whether ``error`` is OpenAI's answer for a shut-down model, to the letter."""
    expected = {
        "message": f"The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    return error.status_code == 404 and error.body == expected


async def test_without_a_today_no_model_is_refused(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    answer = await client.responses.create(model="gpt-4.1-mini", input="hello")
    assert answer.output_text == "Echo: hello"
    listed = {m.id async for m in client.models.list()}
    assert {"gpt-4.1-mini", "gpt-5", "gpt-image-1", "gpt-6-luna"} <= listed


async def test_every_endpoint_refuses_a_model_past_its_shutdown(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.today = date(2027, 3, 1)
    calls = {
        "gpt-4.1-mini": lambda: client.responses.create(model="gpt-4.1-mini", input="hi"),
        "gpt-4o": lambda: client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ),
        "whisper-1": lambda: client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", tone_segments([(440, 0.5)], fmt="wav"))
        ),
        "tts-1": lambda: client.audio.speech.create(model="tts-1", voice="alloy", input="hi"),
        "gpt-image-1": lambda: client.images.generate(model="gpt-image-1", prompt="a cat"),
        "gpt-5": lambda: client.models.retrieve("gpt-5"),
    }
    for model, call in calls.items():
        with pytest.raises(openai.NotFoundError) as raised:
            await call()
        assert refused(raised.value, model), (model, raised.value.body)
    # The current models still answer.
    answer = await client.responses.create(model="gpt-6-luna", input="hello")
    assert answer.output_text == "Echo: hello"
    heard = await client.audio.transcriptions.create(
        model="gpt-transcribe", file=("a.wav", tone_segments([(440, 0.5)], fmt="wav"))
    )
    assert heard.text == "tone440"
    drawn = await client.images.generate(model="gpt-image-2.6-sunburst", prompt="a cat")
    assert drawn.data and drawn.data[0].b64_json


async def test_the_model_list_leaves_out_what_has_shut_down(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.today = date(2027, 1, 15)
    listed = {m.id async for m in client.models.list()}
    assert "gpt-6-luna" in listed and "gpt-transcribe" in listed and "whisper-1" in listed
    assert not listed & {"gpt-4.1-mini", "gpt-4o", "gpt-5", "tts-1", "gpt-image-1"}

    fake_openai.offered = ["gpt-6-luna", "gpt-4o", "my-fine-tune"]
    assert [m.id async for m in client.models.list()] == ["gpt-6-luna", "my-fine-tune"]


async def test_a_model_can_be_refused_before_its_announced_date(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.today = date(2026, 12, 7)
    await client.responses.create(model="gpt-4.1", input="still here")
    fake_openai.shutdowns["gpt-4.1"] = date(2026, 12, 1)
    with pytest.raises(openai.NotFoundError) as raised:
        await client.responses.create(model="gpt-4.1", input="gone early")
    assert refused(raised.value, "gpt-4.1")
