"""Voice through the Realtime API end to end: spoken replies through a realtime session and
``/voice talk`` (a voice note answered voice-to-voice), with the real composition root, the
openai SDK's WebSocket client and ffmpeg against the fake OpenAI; the ledger rows at
realtime prices and a session cut mid-answer."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.conversation.commands import parse_command
from core.conversation.events import Notice, ReplyFailed, ReplyFinished, Transcribed, VoiceReady
from core.media.ports import Attachment
from core.models.registry import load_registry
from core.money.budgets import Budget, Payer, Scope, place_of
from core.money.periods import Period
from core.money.prices import load_prices
from tests import make_audio
from tests.conftest import API_KEY, AppFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import FakeTelegram
from tests.test_console import chat
from tests.test_engine_media import ALICE, KEY, of_type, send
from tests.test_telegram import USER, eventually, running

# gpt-realtime-2.1-mini in the shipped models.toml, micro-dollars per 1M tokens.
TEXT_IN, CACHED_TEXT_IN, TEXT_OUT, AUDIO_IN, AUDIO_OUT = (
    600_000,
    60_000,
    2_400_000,
    10_000_000,
    20_000_000,
)
# What the session transcribes the user's words with: the shipped transcription default.
TRANSCRIBER = load_registry().media.transcriber(None).id
TRANSCRIPTION_PER_MINUTE = load_prices().transcription_per_minute[TRANSCRIBER]


def realtime_micros(usage: dict[str, object]) -> int:
    """What the fake's reported usage costs, worked out by hand from the price list."""
    given = usage["input_token_details"]
    out = usage["output_token_details"]
    assert isinstance(given, dict) and isinstance(out, dict)
    cached = given["cached_tokens_details"]["text_tokens"]
    scaled = (
        (given["text_tokens"] - cached) * TEXT_IN
        + cached * CACHED_TEXT_IN
        + given["audio_tokens"] * AUDIO_IN
        + out["text_tokens"] * TEXT_OUT
        + out["audio_tokens"] * AUDIO_OUT
    )
    return math.ceil(scaled / 1_000_000)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def env(fake_openai: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
    }


async def test_spoken_reply_ledger_rows_are_realtime_tokens_to_the_micro_dollar(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.realtime.cached_text_tokens = 20
    async with make_app() as app:
        await app.choices.set_voice(KEY, True)
        sink = await send(app, "Read me something rather long, so that the tokens add up.")
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    [voice] = of_type(sink, VoiceReady)
    assert voice.note.data.startswith(b"OggS")
    [session] = fake_openai.realtime.sessions
    [response] = session.responses
    reported = response.usage
    [row] = [u for u in usage if u.kind == "speech"]
    assert row.model == "gpt-realtime-2.1-mini"
    assert row.input_tokens == reported["input_tokens"]
    assert row.cached_input_tokens == 20
    assert row.output_tokens == reported["output_tokens"]
    assert row.cost_micros == realtime_micros(reported) > 0
    assert row.prices["audio_output_per_1m"] == AUDIO_OUT
    assert row.request_id is not None and row.request_id.startswith("resp_")
    # The session was asked to stop within what was reserved for it.
    assert session.max_output_tokens is not None
    assert reported["output_tokens"] <= session.max_output_tokens


async def test_a_session_cut_mid_answer_says_so_and_releases_the_reservation(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    payer = Payer(ALICE.principal, place_of(KEY))
    fake_openai.realtime.cut_next(after_deltas=2)
    async with make_app() as app:
        await app.storage.budgets.set_budget(
            Budget(Scope.USER, ALICE.principal, Period.DAILY, 1_000_000)
        )
        await app.choices.set_voice(KEY, True)
        sink = await send(app, "say this aloud please")
        status = await app.storage.budgets.status(payer, app.storage.clock.now(), app.settings.zone)
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    [finished] = of_type(sink, ReplyFinished)
    assert finished.text == "Echo: say this aloud please"  # the text answer still arrives
    [notice] = of_type(sink, Notice)
    assert notice.text == (
        "I couldn't say that aloud: The voice connection was cut before the answer was "
        "complete. Please try again."
    )
    assert not of_type(sink, VoiceReady)
    [session] = fake_openai.realtime.sessions
    assert session.responses[0].cut and session.closed
    # Nothing was reported, so nothing is charged: the budget holds only the chat's cost.
    assert [u.kind for u in usage] == ["chat"]
    [daily] = status
    assert daily.reserved_micros == 0
    assert daily.spent_micros == usage[0].cost_micros


async def test_voice_talk_answers_a_voice_note_by_voice_and_remembers_both_sides(
    make_app: AppFactory, fake_openai: FakeOpenAI, telegram: FakeTelegram
) -> None:
    note = make_audio.tone_segments([(440, 0.8), (0, 0.5), (660, 0.8)])
    async with running(make_app, telegram):
        telegram.private_message(USER, "hello first")
        await eventually(lambda: any("Echo: hello first" in m.text for m in telegram.chat(USER)))
        telegram.private_message(USER, "/voice talk")
        await eventually(lambda: any("Talk mode is on" in m.text for m in telegram.chat(USER)))
        telegram.voice_message(USER, note)
        await eventually(lambda: any(m.kind == "voice" for m in telegram.chat(USER)))
        telegram.private_message(USER, "what did I just say?")
        # Talk mode speaks text answers too: the second voice note ends the turn.
        await eventually(lambda: len(telegram.calls_to("sendVoice")) == 2)
    shown = [(m.kind, m.text) for m in telegram.chat(USER)]
    heard, answer, voice = shown[2:5]
    assert heard == ("text", "🎙 tone440 tone660")
    assert answer == ("text", "You said: tone440 tone660.")
    assert voice[0] == "voice"
    assert shown[5:] == [("text", "Echo: what did I just say?"), ("voice", "")]
    talked, _ = telegram.calls_to("sendVoice")
    assert make_audio.opus_head(talked.params["voice"].content)[0] == 1
    # The voice note went to the realtime model with the conversation so far as context,
    # and no transcription request was made on the side.
    session, speech = fake_openai.realtime.sessions
    assert speech.items == [("user", "Echo: what did I just say?")]
    assert session.items == [
        ("user", "hello first"),
        ("assistant", "Echo: hello first"),
        ("user", "<audio: tone440 tone660>"),
    ]
    assert session.transcription_model == TRANSCRIBER
    assert fake_openai.transcriptions == []
    # The next text turn remembers what was said and answered.
    last = fake_openai.model_requests()[-1]
    assert "tone440 tone660" in str(last.body)
    assert "You said: tone440 tone660." in str(last.body)


async def test_voice_talk_ledger_rows_and_a_cut_talk_turn(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    note = Attachment(make_audio.tone_segments([(440, 1.0)]), "voice.ogg", "audio/ogg")
    payer = Payer(ALICE.principal, place_of(KEY))
    async with make_app() as app:
        await app.storage.budgets.set_budget(
            Budget(Scope.USER, ALICE.principal, Period.DAILY, 1_000_000)
        )
        command = parse_command("/voice talk")
        assert command is not None
        reply = await app.commands.run(KEY, command)
        talked = await send(app, "", note)
        fake_openai.realtime.cut_next(after_deltas=1)
        cut = await send(app, "", note)
        status = await app.storage.budgets.status(payer, app.storage.clock.now(), app.settings.zone)
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    assert reply.text.startswith("Talk mode is on")
    assert [e.text for e in of_type(talked, Transcribed)] == ["tone440"]
    assert of_type(talked, ReplyFinished)[0].text == "You said: tone440."
    assert len(of_type(talked, VoiceReady)) == 1
    [failed] = of_type(cut, ReplyFailed)
    assert failed.message.startswith("The voice connection was cut")
    first, second = fake_openai.realtime.sessions
    assert second.responses[0].cut
    talk, heard = usage
    assert (talk.kind, talk.model) == ("talk", "gpt-realtime-2.1-mini")
    assert talk.cost_micros == realtime_micros(first.responses[0].usage)
    assert talk.input_tokens == first.responses[0].usage["input_tokens"]
    assert (heard.kind, heard.model, heard.unit) == (
        "transcription",
        TRANSCRIBER,
        "audio_ms",
    )
    assert heard.units == pytest.approx(1000, abs=30)
    assert heard.cost_micros == math.ceil(heard.units / 60_000 * TRANSCRIPTION_PER_MINUTE)
    [daily] = status
    assert daily.reserved_micros == 0
    assert daily.spent_micros == talk.cost_micros + heard.cost_micros


async def test_voice_talk_needs_a_realtime_speech_model(make_app: AppFactory) -> None:
    async with make_app(SWITCHBOARD_SPEECH_MODEL="gpt-4o-mini-tts") as app:
        command = parse_command("/voice talk")
        assert command is not None
        reply = await app.commands.run(KEY, command)
        assert not await app.choices.voice_talking(KEY)
    assert reply.text == "Voice-to-voice talk needs a realtime speech model on this bot."


def test_console_speaks_through_realtime_and_saves_the_voice_note(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    (tmp_path / "note.ogg").write_bytes(make_audio.tone_segments([(550, 0.8)]))
    script = "\n".join(["/voice on", "say hello", "/voice talk", "note.ogg", "and now?"])
    out = tmp_path / "out"
    result = chat(env | {"SWITCHBOARD_MEDIA_DIR": str(out)}, tmp_path, script + "\n")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "Echo: say hello"
    assert lines[2].startswith("[voice reply (")
    assert lines[3].startswith("Talk mode is on")
    assert lines[4:6] == ["(heard) tone550", "You said: tone550."]
    assert lines[6].startswith("[voice reply (")
    assert lines[7] == "Echo: and now?"
    voices = sorted(out.glob("voice-*.ogg"))
    assert len(voices) == 3 and all(make_audio.opus_head(v.read_bytes())[0] == 1 for v in voices)
    assert [s.model for s in fake_openai.realtime.sessions] == ["gpt-realtime-2.1-mini"] * 3
    assert fake_openai.speeches == []
    with sqlite3.connect(tmp_path / "chat.db") as db:
        kinds = [row[0] for row in db.execute("SELECT kind FROM usage ORDER BY id")]
    assert kinds == ["chat", "speech", "talk", "transcription", "chat", "speech"]


async def test_a_talk_turn_cancelled_mid_session_closes_it_and_releases_the_reservation(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    note = Attachment(make_audio.tone_segments([(440, 1.0)]), "voice.ogg", "audio/ogg")
    payer = Payer(ALICE.principal, place_of(KEY))
    fake_openai.realtime.delta_delay = 0.5  # a slow answer, still streaming when cancelled
    async with make_app() as app:
        await app.storage.budgets.set_budget(
            Budget(Scope.USER, ALICE.principal, Period.DAILY, 1_000_000)
        )
        await app.choices.set_voice(KEY, True, talk=True)
        turn = asyncio.create_task(send(app, "", note))
        await eventually(lambda: bool(fake_openai.realtime.sessions))
        await eventually(lambda: app.turns.is_busy(KEY))
        await asyncio.sleep(0.3)
        assert app.turns.cancel(KEY)
        sink = await turn
        await eventually(lambda: fake_openai.realtime.open_sessions == 0)
        status = await app.storage.budgets.status(payer, app.storage.clock.now(), app.settings.zone)
    assert of_type(sink, ReplyFinished)[0].cancelled
    assert not of_type(sink, VoiceReady)
    [daily] = status
    assert (daily.reserved_micros, daily.spent_micros) == (0, 0)


async def test_a_session_that_outlasts_the_timeout_is_closed_with_a_clear_line(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.realtime.delta_delay = 1.0
    async with make_app(SWITCHBOARD_OPENAI_TIMEOUT_SECONDS=1) as app:
        await app.choices.set_voice(KEY, True)
        sink = await send(app, "a reply long enough to take several seconds to say aloud")
        await eventually(lambda: fake_openai.realtime.open_sessions == 0)
    [notice] = of_type(sink, Notice)
    assert notice.text == (
        "I couldn't say that aloud: The model service is not answering right now. "
        "Please try again shortly."
    )


async def test_voice_talk_refuses_a_recording_longer_than_a_session_takes(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    from core.media import steps

    long_note = make_audio.tone_segments([(440, steps.TALK_INPUT_SECONDS + 2.0)])
    async with make_app() as app:
        await app.choices.set_voice(KEY, True, talk=True)
        sink = await send(app, "", Attachment(long_note, "voice.ogg", "audio/ogg"))
    [failed] = of_type(sink, ReplyFailed)
    assert failed.message == (
        "That recording is too long; the limit is 5 minutes. Voice-to-voice talk takes up "
        "to 5 minutes; send /voice on to have longer recordings transcribed and answered."
    )
    assert fake_openai.realtime.sessions == []
