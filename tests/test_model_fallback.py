"""Successors at work, through the real composition root against the fake OpenAI (SPEC §13):
a retired or refused model's calls go to its successor, the turn is answered, conversations
move, the retirement is logged once, and /model marks what is about to go."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bots.bootstrap import App, bootstrap
from bots.console import ConsoleChannel
from core.conversation.commands import Command
from core.conversation.events import (
    ImageReady,
    ReplyFailed,
    ReplyFinished,
    Transcribed,
    VoiceReady,
)
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.media.ports import Attachment
from tests.conftest import SettingsFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sinks import RecordingSink
from tests.make_audio import tone_segments
from tests.make_images import png

KEY = ConversationKey("telegram", place="1001")
OTHER = ConversationKey("telegram", place="2002")
ALICE = UserRef("telegram", "42", username="alice")


class FixedClock:
    """A clock stopped at noon of one day."""

    def __init__(self, day: date) -> None:
        self.day = day

    def now(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, 12, tzinfo=UTC)


@asynccontextmanager
async def app_on(
    make_settings: SettingsFactory, day: date, **settings: object
) -> AsyncIterator[App]:
    async with bootstrap(make_settings(**settings), clock=FixedClock(day)) as app:
        yield app


async def send(
    app: App, text: str, *attachments: Attachment, key: ConversationKey = KEY
) -> RecordingSink:
    sink = RecordingSink()
    await app.assistant.answer_message(
        IncomingMessage(key, ALICE, text, attachments=attachments), sink
    )
    return sink


def retirement_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "core.models.lifecycle" and r.levelno == logging.WARNING
    ]


async def test_a_dead_model_hands_the_conversation_to_its_successor(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    day = date(2027, 1, 10)
    async with app_on(make_settings, day) as app:
        await app.choices.set_model(KEY, "gpt-4.1-mini")
        await app.choices.set_model(OTHER, "gpt-4.1-mini")
        first = await send(app, "remember: the code is 4711")
        assert isinstance(first.final, ReplyFinished)
    assert fake_openai.model_requests()[-1].body["model"] == "gpt-4.1-mini"  # type: ignore[index]

    fake_openai.today = date(2027, 1, 15)
    with caplog.at_level(logging.WARNING, logger="core.models.lifecycle"):
        async with app_on(make_settings, date(2027, 1, 15)) as app:
            second = await send(app, "what is the code?")
            third = await send(app, "and again?")
            conversation = await app.store.active_conversation(KEY)
            other = await app.store.active_conversation(OTHER)
            usage = await app.store.usage(conversation.id)

    assert isinstance(second.final, ReplyFinished)
    assert second.final.text == "Echo: what is the code?"
    assert isinstance(third.final, ReplyFinished)
    requests = fake_openai.model_requests()
    assert [r.body["model"] for r in requests[-2:]] == ["gpt-6-luna", "gpt-6-luna"]  # type: ignore[index]
    assert "remember: the code is 4711" in str(requests[-2].body)  # history went along
    assert conversation.model == other.model == "gpt-6-luna"
    assert [u.model for u in usage if u.kind == "chat"] == [
        "gpt-4.1-mini",
        "gpt-6-luna",
        "gpt-6-luna",
    ]
    lines = retirement_lines(caplog)
    assert len(lines) == 1
    assert "gpt-4.1-mini" in lines[0] and "gpt-6-luna" in lines[0]
    assert "2 conversations moved" in lines[0]


async def test_model_not_found_from_the_api_moves_to_the_successor(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    day = date(2026, 12, 7)
    fake_openai.today = day
    fake_openai.shutdowns["gpt-4.1"] = date(2026, 12, 1)  # gone earlier than announced
    with caplog.at_level(logging.WARNING, logger="core.models.lifecycle"):
        async with app_on(make_settings, day) as app:
            await app.choices.set_model(KEY, "gpt-4.1")
            sink = await send(app, "hello there")
            again = await send(app, "still there?")
            conversation = await app.store.active_conversation(KEY)

    assert isinstance(sink.final, ReplyFinished) and sink.final.text == "Echo: hello there"
    assert isinstance(again.final, ReplyFinished)
    tried = [r.body["model"] for r in fake_openai.model_requests()]  # type: ignore[index]
    assert tried == ["gpt-4.1", "gpt-6-luna", "gpt-6-luna"]  # refused once, then remembered
    assert conversation.model == "gpt-6-luna"
    lines = retirement_lines(caplog)
    assert len(lines) == 1 and "gpt-4.1 " in lines[0] and "gpt-6-luna" in lines[0]


async def test_a_refused_model_without_successor_gets_a_clear_reply(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[models.house-model]\napi = "responses"\ncontext_window = 8000\n'
        "max_output_tokens = 1000\n",
        encoding="utf-8",
    )
    fake_openai.today = date(2026, 12, 7)
    fake_openai.shutdowns["house-model"] = date(2026, 12, 1)
    async with app_on(make_settings, date(2026, 12, 7), SWITCHBOARD_MODELS_FILE=models) as app:
        await app.choices.set_model(KEY, "house-model")
        sink = await send(app, "hello")
    assert isinstance(sink.final, ReplyFailed)
    assert "no longer offered" in sink.final.message and "admin" in sink.final.message


async def test_a_retired_image_model_draws_with_its_successor(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.today = date(2026, 12, 7)
    async with app_on(
        make_settings, date(2026, 12, 7), SWITCHBOARD_IMAGE_MODEL="gpt-image-1-mini"
    ) as app:
        sink = RecordingSink()
        await app.assistant.draw_image(IncomingMessage(KEY, ALICE, "a lighthouse"), sink)
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    assert any(isinstance(e, ImageReady) for e in sink.events)
    assert [i.model for i in fake_openai.images] == ["gpt-image-2.6-sunburst"]
    assert [u.model for u in usage] == ["gpt-image-2.6-sunburst"]


async def test_a_refused_transcription_model_hears_with_its_successor(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI
) -> None:
    day = date(2026, 12, 7)
    fake_openai.today = day
    fake_openai.shutdowns["whisper-1"] = date(2026, 12, 1)
    voice = Attachment(tone_segments([(440, 0.6)]), "voice.ogg", "audio/ogg")
    async with app_on(make_settings, day, SWITCHBOARD_TRANSCRIPTION_MODEL="whisper-1") as app:
        sink = await send(app, "", voice)
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    assert [e.text for e in sink.events if isinstance(e, Transcribed)] == ["tone440"]
    assert isinstance(sink.final, ReplyFinished)
    assert [t.model for t in fake_openai.transcriptions] == ["gpt-transcribe"]
    assert [u.model for u in usage if u.kind == "transcription"] == ["gpt-transcribe"]


async def test_the_model_list_marks_models_about_to_shut_down(
    make_settings: SettingsFactory,
) -> None:
    async with app_on(make_settings, date(2026, 12, 20)) as app:
        reply = await app.commands.run(KEY, Command("model", ""))
    lines = reply.text.splitlines()
    assert "• gpt-4o (shuts down 2027-01-14)" in lines
    assert "• gpt-6-luna" in lines
    assert not any("gpt-5" in line for line in lines)  # retired on 2026-12-11
    labels = {c.command: c.label for c in reply.choices}
    assert labels["/model gpt-4o"] == "GPT-4o ⚠"
    assert labels["/model gpt-6-luna"] == "GPT-6 Luna"
    assert "/model gpt-5" not in labels


async def test_choosing_a_retired_model_chooses_its_successor(
    make_settings: SettingsFactory,
) -> None:
    async with app_on(make_settings, date(2026, 12, 20)) as app:
        reply = await app.commands.run(KEY, Command("model", "gpt-5-mini"))
        conversation = await app.store.active_conversation(KEY)
    assert reply.text == "Model set to GPT-6.1 Terra."
    assert conversation.model == "gpt-6.1-terra"


async def test_a_fresh_install_on_defaults_works_after_the_january_shutdowns(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI
) -> None:
    day = date(2027, 1, 15)
    fake_openai.today = day
    voice = Attachment(tone_segments([(440, 0.6)]), "voice.ogg", "audio/ogg")
    async with app_on(make_settings, day) as app:
        chatted = await send(app, "hello")
        seen = await send(app, "what is this?", Attachment(png(64, 64), "a.png", "image/png"))
        heard = await send(app, "", voice)
        drawn = RecordingSink()
        await app.assistant.draw_image(IncomingMessage(KEY, ALICE, "a lighthouse"), drawn)
        await app.choices.set_voice(KEY, True)
        spoken = await send(app, "say it")  # speech through a Realtime API session
    assert chatted.final == ReplyFinished("Echo: hello")
    [voice_note] = [e for e in spoken.events if isinstance(e, VoiceReady)]
    assert voice_note.note.data.startswith(b"OggS") and voice_note.note.seconds > 0
    assert seen.final == ReplyFinished("Echo: what is this? [1 image]")
    assert heard.final == ReplyFinished("Echo: tone440")
    assert any(isinstance(e, ImageReady) for e in drawn.events)
    models = [str(r.body.get("model")) for r in fake_openai.requests if r.body is not None]
    assert set(models) == {"gpt-6-luna", "gpt-transcribe", "gpt-image-2.6-sunburst"}
    [session] = [r for r in fake_openai.requests if r.path == "/v1/realtime"]
    assert session.query == "model=gpt-realtime-2.1-mini"


async def test_admins_are_told_once_through_their_channel(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI
) -> None:
    """The retirement reaches the admins whose channel runs here, as a private message."""
    out = io.StringIO()
    fake_openai.today = date(2027, 1, 15)
    async with app_on(
        make_settings, date(2027, 1, 15), SWITCHBOARD_ADMINS="console:root,telegram:7"
    ) as app:
        console = ConsoleChannel(
            app.pipeline, app.commands, app.turns, stdin=io.StringIO(), stdout=out, user="ada"
        )
        app.outbox.attach(console)
        await app.choices.set_model(KEY, "gpt-4.1-mini")  # chosen while it still ran
        await app.store.set_model((await app.store.active_conversation(KEY)).id, "gpt-4.1-mini")
        first = await send(app, "hello")
        second = await send(app, "hello again")
    assert isinstance(first.final, ReplyFinished) and isinstance(second.final, ReplyFinished)
    notices = [line for line in out.getvalue().splitlines() if "has been shut down" in line]
    # Told once, to the console admin (Telegram does not run in this process).
    assert notices == [
        "[#1] Model `gpt-4.1-mini` has been shut down: conversations on it now use `gpt-6-luna`."
    ]
