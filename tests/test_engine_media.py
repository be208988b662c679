"""Pictures and voice through the real composition root: the engine, the OpenAI adapters
and the ffmpeg converter against the fake OpenAI, with real media made in the tests."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bots.bootstrap import App
from core.conversation.events import (
    ImageReady,
    ReplyFailed,
    ReplyFinished,
    TextDelta,
    Transcribed,
    VoiceReady,
)
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.media.ports import Attachment
from core.money.prices import load_prices
from core.storage.schema import MessageImageRow
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.sinks import RecordingSink
from tests.make_audio import (
    LECTURE_SECONDS,
    LECTURE_TRANSCRIPT,
    corrupt_audio,
    lecture,
    opus_head,
    small_upload_models,
    tone_segments,
)
from tests.make_images import bmp, corrupt, dall_e_server_models, jpeg, png

KEY = ConversationKey("telegram", place="1001")
ALICE = UserRef("telegram", "42", username="alice")
PRICES = load_prices()


async def send(
    app: App, text: str, *attachments: Attachment, key: ConversationKey = KEY
) -> RecordingSink:
    sink = RecordingSink()
    await app.assistant.answer_message(
        IncomingMessage(key, ALICE, text, attachments=attachments), sink
    )
    return sink


async def draw(
    app: App, prompt: str, *attachments: Attachment, edit: bool = False
) -> RecordingSink:
    sink = RecordingSink()
    message = IncomingMessage(KEY, ALICE, prompt, attachments=attachments)
    await (app.assistant.edit_image if edit else app.assistant.draw_image)(message, sink)
    return sink


def picture_file(
    data: bytes, name: str = "photo.png", mime: str | None = "image/png"
) -> Attachment:
    return Attachment(data, name, mime)


def of_type(sink: RecordingSink, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in sink.events if isinstance(e, kind)]


async def test_a_photo_question_reaches_a_vision_model_inline(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        sink = await send(app, "what colour is this?", picture_file(png(640, 480)))
        conversation = await app.store.active_conversation(KEY)
        user_turn, answer = reversed(await app.store.recent_messages(conversation.id, limit=2))
    assert sink.final == ReplyFinished("Echo: what colour is this? [1 image]")
    [request] = fake_openai.model_requests()
    [seen] = fake_openai.images_seen(request)
    assert (seen.mime, seen.width, seen.height) == ("image/png", 640, 480)
    assert "data:image/png;base64," in request.as_text()
    assert user_turn.image_count == 1 and answer.role == "assistant"


async def test_pictures_alone_get_a_question_and_odd_formats_are_converted(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        sink = await send(app, "", picture_file(bmp(300, 200), "scan.bmp", "image/bmp"))
    assert sink.final == ReplyFinished("Echo: What is in this picture? [1 image]")
    [seen] = fake_openai.images_seen()
    assert seen.mime == "image/jpeg" and (seen.width, seen.height) == (300, 200)


async def test_several_pictures_in_one_message_stay_together(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    album = [picture_file(png(100 + i, 100)) for i in range(3)]
    async with make_app() as app:
        sink = await send(app, "compare these", *album)
    assert sink.final == ReplyFinished("Echo: compare these [3 images]")
    assert [s.width for s in fake_openai.images_seen()] == [100, 101, 102]


async def test_history_keeps_pictures_small_and_shows_only_the_newest_few(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        for i in range(4):
            await send(app, f"picture {i}", picture_file(jpeg(2000, 1500), "p.jpg", "image/jpeg"))
        await send(app, "and now just text")
        async with app.storage.database.connect() as connection:
            sizes = (await connection.execute(select(func.length(MessageImageRow.data)))).all()
    requests = fake_openai.model_requests()
    shown = [len(fake_openai.images_seen(r)) for r in requests]
    # Each turn shows its own picture; the few before it come along as small copies.
    assert shown == [1, 2, 3, 3, 3]
    newest = fake_openai.images_seen(requests[3])
    assert (newest[-1].width, newest[-1].height) == (2000, 1500)
    assert all(max(s.width, s.height) <= 512 for s in newest[:-1])
    assert len(sizes) == 4 and all(size < 100_000 for (size,) in sizes)


async def test_a_model_that_cannot_see_hands_pictures_to_the_vision_model(
    make_app: AppFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[models."text-only"]\napi = "chat"\ncontext_window = 16000\nmax_output_tokens = 1000\n'
        'capabilities = []\nprices = { input = "1", output = "1" }\n',
        encoding="utf-8",
    )
    async with make_app(SWITCHBOARD_MODELS_FILE=str(models)) as app:
        await app.choices.set_model(KEY, "text-only")
        sink = await send(app, "look", picture_file(png(64, 64)))
        text = await send(app, "plain text again")
    assert isinstance(sink.final, ReplyFinished)
    pictured, plain = fake_openai.model_requests()
    assert pictured.body is not None and pictured.body["model"] == "gpt-6-luna"
    assert plain.body is not None and plain.body["model"] == "text-only"
    assert isinstance(text.final, ReplyFinished)


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (corrupt(), "broken.png", "couldn't read that picture"),
        (b"", "empty.png", "couldn't read that picture"),
        (b"x" * (21 * 1024 * 1024), "huge.png", "too large"),
    ],
)
async def test_bad_pictures_get_a_clear_reply_and_nothing_is_sent(
    make_app: AppFactory, fake_openai: FakeOpenAI, data: bytes, name: str, expected: str
) -> None:
    async with make_app() as app:
        sink = await send(app, "what is this", picture_file(data, name))
        after = await send(app, "still there?")
    assert isinstance(sink.final, ReplyFailed) and expected in sink.final.message
    assert after.final == ReplyFinished("Echo: still there?")
    assert len(fake_openai.model_requests()) == 1


async def test_a_voice_note_is_transcribed_shown_answered_and_charged(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    note = tone_segments([(0, 0.3), (440, 1.0), (0, 0.6), (660, 1.0), (0, 0.3)])
    async with make_app(SWITCHBOARD_TRANSCRIPTION_MODEL="whisper-1") as app:
        sink = await send(app, "", Attachment(note, "voice.ogg", "audio/ogg"))
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    assert sink.events[0] == Transcribed("tone440 tone660")
    assert sink.final == ReplyFinished("Echo: tone440 tone660")
    [heard] = fake_openai.transcriptions
    assert heard.model == "whisper-1" and heard.filename.endswith(".ogg")
    transcription = next(u for u in usage if u.kind == "transcription")
    billed = math.ceil(heard.duration_seconds)  # whisper-1 reports whole seconds
    assert transcription.units == billed * 1000 and transcription.unit == "audio_ms"
    assert transcription.cost_micros == PRICES.transcription_cost("whisper-1", billed)
    assert transcription.request_id


async def test_long_audio_is_split_on_silence_and_the_transcripts_joined_in_order(
    make_app: AppFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    models = small_upload_models(tmp_path)
    async with make_app(SWITCHBOARD_MODELS_FILE=str(models)) as app:
        sink = await send(app, "", Attachment(lecture(), "long.ogg", "audio/ogg"))
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    assert sink.events[0] == Transcribed(LECTURE_TRANSCRIPT)
    assert len(fake_openai.transcriptions) >= 2
    rows = [u for u in usage if u.kind == "transcription"]
    assert len(rows) == len(fake_openai.transcriptions)
    seconds = sum(r.units for r in rows) / 1000
    assert seconds == pytest.approx(LECTURE_SECONDS, abs=0.3)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (corrupt_audio(), "couldn't read that audio"),
        (b"", "that audio is empty"),
        (tone_segments([(0, 2.0)]), "couldn't hear any words"),
    ],
    ids=["corrupt", "empty", "silence"],
)
async def test_bad_audio_gets_a_clear_reply_and_the_bot_keeps_working(
    make_app: AppFactory, fake_openai: FakeOpenAI, data: bytes, expected: str
) -> None:
    async with make_app() as app:
        sink = await send(app, "", Attachment(data, "voice.ogg", "audio/ogg"))
        after = await send(app, "hello")
    assert isinstance(sink.final, ReplyFailed)
    assert expected in sink.final.message.lower()
    assert after.final == ReplyFinished("Echo: hello")


async def test_image_command_draws_shows_the_revised_prompt_and_charges(
    make_app: AppFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    async with make_app(
        SWITCHBOARD_IMAGE_MODEL="dall-e-3",
        SWITCHBOARD_IMAGE_QUALITY="hd",
        SWITCHBOARD_MODELS_FILE=dall_e_server_models(tmp_path),
    ) as app:
        sink = await draw(app, "a lighthouse at dawn")
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
        latest = await app.store.latest_image(conversation.id)
    [ready] = of_type(sink, ImageReady)
    assert ready.caption == "A detailed picture of: a lighthouse at dawn"
    assert ready.image.image.data.startswith(b"\x89PNG")
    assert (ready.image.image.width, ready.image.image.height) == (1024, 1024)
    assert sink.final == ReplyFinished("")
    [request] = [r for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert request.body is not None and request.body["response_format"] == "b64_json"
    [row] = usage
    assert (row.kind, row.model, row.units, row.unit) == ("image", "dall-e-3", 1, "images")
    assert row.cost_micros == PRICES.image_cost("dall-e-3", "1024x1024", "hd") == 80_000
    assert latest is not None and max(latest.width, latest.height) <= 512


async def test_edit_changes_the_attached_picture_or_else_the_newest_one(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        nothing = await draw(app, "make it blue", edit=True)
        attached = await draw(app, "make it blue", picture_file(png(300, 300)), edit=True)
        await send(app, "a photo", picture_file(jpeg(400, 300), "p.jpg", "image/jpeg"))
        newest = await draw(app, "add a hat", edit=True)
    assert isinstance(nothing.final, ReplyFailed) and "/edit" in nothing.final.message
    assert of_type(attached, ImageReady) and of_type(newest, ImageReady)
    edits = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    assert len(edits) == 2
    assert [f.content_type for f in edits[0].files if f.name.startswith("image")] == ["image/png"]
    assert [i.endpoint for i in fake_openai.images] == ["edits", "edits"]
    assert fake_openai.images[1].prompt == "add a hat"


async def test_the_model_can_draw_with_the_image_tool(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(tool_calls=[("generate_image", {"prompt": "a red bicycle"})]),
        Scripted(text="Here is your bicycle."),
    )
    async with make_app() as app:
        sink = await send(app, "draw me a red bicycle")
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    [ready] = of_type(sink, ImageReady)
    assert ready.image.image.data.startswith(b"\x89PNG")
    assert sink.final == ReplyFinished("Here is your bicycle.")
    assert [i.prompt for i in fake_openai.images] == ["a red bicycle"]
    assert sorted(u.kind for u in usage) == ["chat", "chat", "image"]


async def test_an_image_over_budget_is_refused_without_calling_the_api(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    from core.money.budgets import Budget, Scope
    from core.money.periods import Period

    async with make_app() as app:
        await app.storage.budgets.set_budget(Budget(Scope.USER, ALICE.principal, Period.DAILY, 1))
        sink = await draw(app, "a castle")
    assert isinstance(sink.final, ReplyFailed)
    assert "not enough for this picture" in sink.final.message
    assert fake_openai.images == []


async def test_voice_on_speaks_long_replies_in_chunks_as_one_voice_note(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    paragraph = "This sentence is part of a long answer that will be read aloud. " * 20
    answer = "\n\n".join([paragraph] * 7)  # about 9,000 characters
    fake_openai.enqueue(Scripted(text=answer))
    speech_endpoint = {"SWITCHBOARD_SPEECH_MODEL": "gpt-4o-mini-tts"}
    async with make_app(SWITCHBOARD_SPEECH_VOICE="nova", **speech_endpoint) as app:
        await app.choices.set_voice(KEY, True)
        sink = await send(app, "tell me a lot")
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    kinds = [type(e) for e in sink.events if not isinstance(e, TextDelta)]
    assert kinds == [ReplyFinished, VoiceReady]
    [voice] = of_type(sink, VoiceReady)
    assert voice.note.data.startswith(b"OggS") and b"OpusHead" in voice.note.data[:200]
    assert opus_head(voice.note.data)[0] == 1  # mono
    spoken = fake_openai.speeches
    assert len(spoken) >= 3 and all(len(s.input) <= 4096 for s in spoken)
    assert {(s.voice, s.response_format) for s in spoken} == {("nova", "opus")}
    assert voice.note.seconds == pytest.approx(sum(s.seconds for s in spoken), abs=0.5)
    rows = [u for u in usage if u.kind == "speech"]
    # The chunks are spoken concurrently, so the fake may record them in another order.
    assert sorted(r.units for r in rows) == sorted(len(s.input) for s in spoken)
    assert sum(r.cost_micros for r in rows) == sum(
        PRICES.speech_cost("gpt-4o-mini-tts", len(s.input)) for s in spoken
    )


async def test_voice_off_by_default_and_voice_command_toggles(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    from core.conversation.commands import parse_command

    async with make_app() as app:
        quiet = await send(app, "hello")
        command = parse_command("/voice on")
        assert command is not None
        on = await app.commands.run(KEY, command)
        spoken = await send(app, "hello again")
        status = await app.commands.run(KEY, parse_command("/voice") or command)
    assert not of_type(quiet, VoiceReady)
    assert on.text.startswith("Spoken replies are on")
    assert of_type(spoken, VoiceReady)
    assert status.text == "Spoken replies are on."


def test_data_urls_carry_the_picture_bytes() -> None:
    from core.media.ports import PreparedImage

    image = PreparedImage(b"\x89PNG-bytes", "image/png", 1, 1)
    prefix, encoded = image.data_url.split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(encoded) == b"\x89PNG-bytes"


async def test_voice_chosen_for_a_channel_applies_to_its_new_threads(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    channel = ConversationKey("slack", place="C1", scope="T1")
    thread = ConversationKey("slack", place="C1", scope="T1", thread="171.000")
    async with make_app() as app:
        await app.choices.set_voice(channel, True)
        sink = await send(app, "hello in a thread", key=thread)
        assert await app.choices.voice_enabled(thread)
    assert of_type(sink, VoiceReady)


async def test_the_picture_size_limit_follows_the_file_setting(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    from tests.make_images import noisy_png

    big = noisy_png(800, 800)
    assert 1024 * 1024 < len(big) < 20 * 1024 * 1024
    async with make_app(SWITCHBOARD_MAX_FILE_MB=1) as app:
        small_limit = await send(app, "what is this", picture_file(big))
    async with make_app() as app:
        default_limit = await send(app, "what is this", picture_file(big))
    assert isinstance(small_limit.final, ReplyFailed)
    assert "the limit is 1 MB" in small_limit.final.message
    assert isinstance(default_limit.final, ReplyFinished)
