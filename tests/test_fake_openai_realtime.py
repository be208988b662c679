"""The fake OpenAI's Realtime WebSocket protocol, driven by the real ``openai`` SDK client
(``client.realtime.connect``), so the fake keeps speaking what the SDK and the product expect."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import make_audio
from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI

MODEL = "gpt-realtime-2.1-mini"
SESSION: Any = {
    "type": "realtime",
    "instructions": "Read it aloud.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
    },
}


def client(fake: FakeOpenAI, key: str = API_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=fake.base_url, max_retries=0)


async def events_until(connection: AsyncRealtimeConnection, last: str) -> list[Any]:
    """Every event up to and including the first of type ``last``."""
    seen = []
    while True:
        event = await connection.recv()
        seen.append(event)
        if event.type == last:
            return seen


def pcm_of(events: list[Any]) -> bytes:
    return b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )


def tone_pcm(frequency: float, seconds: float) -> bytes:
    samples = make_audio.decode(make_audio.tone_segments([(frequency, seconds)]))
    # 16 kHz from the helper, resampled to 24 kHz by repeating every second sample.
    out = []
    for index, sample in enumerate(samples):
        out.append(sample)
        if index % 2:
            out.append(sample)
    return b"".join(int(s).to_bytes(2, "little", signed=True) for s in out)


@pytest.fixture
async def connection(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncRealtimeConnection]:
    async with client(fake_openai).realtime.connect(model=MODEL) as opened:
        yield opened


async def test_a_session_starts_created_and_takes_its_settings(
    connection: AsyncRealtimeConnection, fake_openai: FakeOpenAI
) -> None:
    created = await connection.recv()
    await connection.session.update(session=SESSION)
    updated = await connection.recv()
    assert created.type == "session.created"
    assert updated.type == "session.updated"
    assert updated.session.audio.output.voice == "marin"  # type: ignore[union-attr]
    [session] = fake_openai.realtime.sessions
    assert (session.model, session.voice, session.instructions) == (
        MODEL,
        "marin",
        "Read it aloud.",
    )
    recorded = fake_openai.requests[-1]
    assert recorded.path == "/v1/realtime" and f"model={MODEL}" in recorded.query


async def test_a_text_is_spoken_as_real_audio_with_its_transcript_and_usage(
    connection: AsyncRealtimeConnection, fake_openai: FakeOpenAI
) -> None:
    text = "Thirty characters of speech!!"
    await connection.session.update(session=SESSION)
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()
    events = await events_until(connection, "response.done")

    kinds = [e.type for e in events]
    assert kinds.index("response.created") < kinds.index("response.output_audio.delta")
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert transcript == text
    pcm = pcm_of(events)
    seconds = len(pcm) / 2 / 24_000
    assert seconds == pytest.approx(len(text) / fake_openai.realtime.chars_per_second, abs=0.01)
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, 4800, 2)]
    # make_audio.frequency assumes 16 kHz samples; these are 24 kHz.
    assert make_audio.frequency(samples) * 24_000 / 16_000 == pytest.approx(220, abs=10)
    done = events[-1].response
    assert done.status == "completed"
    usage = done.usage
    instructions_and_text = math.ceil(len("Read it aloud.") / 4) + math.ceil(len(text) / 4)
    assert usage.input_token_details.text_tokens == instructions_and_text
    assert usage.input_token_details.audio_tokens == 0
    assert usage.output_token_details.text_tokens == math.ceil(len(text) / 4)
    assert usage.output_token_details.audio_tokens == math.ceil(seconds * 20)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_input_audio_is_heard_transcribed_and_answered(
    connection: AsyncRealtimeConnection, fake_openai: FakeOpenAI
) -> None:
    session = {**SESSION, "audio": {**SESSION["audio"]}}
    session["audio"]["input"] = {
        **SESSION["audio"]["input"],
        "transcription": {"model": "gpt-transcribe"},
    }
    await connection.session.update(session=session)
    audio = tone_pcm(440, 0.8) + bytes(24_000) + tone_pcm(660, 0.8)
    for start in range(0, len(audio), 32_000):
        chunk = base64.b64encode(audio[start : start + 32_000]).decode()
        await connection.input_audio_buffer.append(audio=chunk)
    await connection.input_audio_buffer.commit()
    await connection.response.create()
    events = await events_until(connection, "response.done")
    heard = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert [e.transcript for e in heard] == ["tone440 tone660"]
    assert heard[0].usage.type == "duration"
    assert any(e.type == "input_audio_buffer.committed" for e in events)
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert transcript == "You said: tone440 tone660."
    input_seconds = len(audio) / 2 / 24_000
    usage = events[-1].response.usage
    assert usage.input_token_details.audio_tokens == math.ceil(input_seconds * 10)
    assert fake_openai.realtime.sessions[0].items == [("user", "<audio: tone440 tone660>")]


async def test_too_little_audio_is_an_error_event_and_the_session_goes_on(
    connection: AsyncRealtimeConnection,
) -> None:
    await connection.session.update(session=SESSION)
    await connection.input_audio_buffer.append(audio=base64.b64encode(bytes(960)).decode())
    await connection.input_audio_buffer.commit()
    error = (await events_until(connection, "error"))[-1]
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert "Expected at least 100ms" in error.error.message
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    )
    await connection.response.create()
    assert (await events_until(connection, "response.done"))[-1].response.status == "completed"


async def test_an_unknown_voice_is_refused(connection: AsyncRealtimeConnection) -> None:
    session = {**SESSION, "audio": {**SESSION["audio"], "output": {"voice": "robot"}}}
    await connection.session.update(session=session)
    error = (await events_until(connection, "error"))[-1]
    assert error.error.code == "invalid_value" and "'robot'" in error.error.message


async def test_max_output_tokens_cuts_the_answer_as_incomplete(
    connection: AsyncRealtimeConnection,
) -> None:
    await connection.session.update(session={**SESSION, "max_output_tokens": 30})
    text = "A long answer that would take many seconds to say out loud, far too long."
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()
    events = await events_until(connection, "response.done")
    done = events[-1].response
    assert done.status == "incomplete"
    assert done.status_details.reason == "max_output_tokens"
    assert done.usage.output_tokens <= 30


async def test_an_unknown_model_gets_an_error_event_and_the_socket_closes(
    fake_openai: FakeOpenAI,
) -> None:
    async with client(fake_openai).realtime.connect(model="gpt-realtime-9") as connection:
        error = await connection.recv()
        assert error.type == "error"
        assert error.error.code == "model_not_found"
        assert "gpt-realtime-9" in error.error.message
        with pytest.raises(ConnectionClosed):
            await connection.recv()
    assert fake_openai.realtime.sessions == []


async def test_a_bad_key_is_refused_at_the_handshake(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with client(fake_openai, key="sk-wrong").realtime.connect(model=MODEL):
            pass
    assert refused.value.response.status_code == 401


async def test_a_plain_get_without_upgrade_is_a_400(fake_openai: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{fake_openai.base_url}/realtime",
            params={"model": MODEL},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 400


async def test_cut_next_drops_the_socket_mid_answer(
    connection: AsyncRealtimeConnection, fake_openai: FakeOpenAI
) -> None:
    fake_openai.realtime.cut_next(after_deltas=2)
    await connection.session.update(session=SESSION)
    await connection.conversation.item.create(
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a sentence long enough to need deltas"}],
        }
    )
    await connection.response.create()
    seen: list[str] = []
    with pytest.raises(ConnectionClosed):
        while True:
            seen.append((await connection.recv()).type)
    assert seen.count("response.output_audio.delta") == 2
    assert "response.done" not in seen
    [session] = fake_openai.realtime.sessions
    assert session.responses[0].cut
