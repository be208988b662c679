"""Pictures and voice in the Telegram channel end to end: real python-telegram-bot against the
fake Bot API, the real engine, Pillow and ffmpeg against the fake OpenAI server, with real
image and audio files."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from telegram import Bot

from bots.pacing import FloodControl
from bots.telegram.reply import ChatPlace, TelegramReply
from core.conversation.events import ImageReady, Notice, ReplyFinished, Transcribed
from core.media.ports import GeneratedImage, PreparedImage
from tests import make_audio, make_images
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import FakeTelegram, RecordedFile
from tests.test_telegram import GROUP, UNPACED, USER, eventually, running

MEGABYTE = 1024 * 1024


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


def shown(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.text for m in telegram.chat(chat)]


def said(telegram: FakeTelegram, chat: int, text: str) -> bool:
    return any(text in m.text for m in telegram.chat(chat))


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def mean_colour(data: bytes) -> tuple[float, ...]:
    with Image.open(io.BytesIO(data)) as image:
        return tuple(ImageStat.Stat(image.convert("RGB")).mean)


def assert_nothing_leaked(fake_openai: FakeOpenAI, telegram: FakeTelegram) -> None:
    """Only bytes went to OpenAI: never the bot token or a Telegram file URL."""
    sent = fake_openai.all_request_text()
    assert sent  # something was sent, so the check means something
    assert telegram.token not in sent
    assert "/file/bot" not in sent and telegram.url not in sent
    every_file = b"".join(f.data for r in fake_openai.requests for f in r.files)
    assert telegram.token.encode() not in every_file


async def test_photo_with_a_caption_is_seen_by_the_model(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    photo = make_images.jpeg(640, 480)
    async with running(make_app, telegram):
        update = telegram.photo_message(USER, photo, caption="what is in this photo?")
        await eventually(lambda: said(telegram, USER, "Echo: what is in this photo? [1 image]"))
        # A caption that starts with a slash but is no command is a question too.
        telegram.photo_message(USER, photo, caption="/etc/motd says this?")
        await eventually(lambda: said(telegram, USER, "Echo: /etc/motd says this? [1 image]"))
    request = fake_openai.model_requests()[0]
    assert "data:image/jpeg;base64," in str(request.body)
    [seen] = fake_openai.images_seen(request)
    assert (seen.mime, seen.width, seen.height) == ("image/jpeg", 640, 480)
    # Only the largest size of the photo was fetched.
    largest = update["message"]["photo"][-1]["file_id"]
    assert telegram.calls_to("getFile")[0].params["file_id"] == largest
    assert len(telegram.calls_to("getFile")) == 2
    assert_nothing_leaked(fake_openai, telegram)


async def test_an_album_is_answered_as_one_message(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    pictures = [make_images.png(320, 240), make_images.jpeg(200, 300), make_images.webp(256, 256)]
    async with running(make_app, telegram):
        for index, picture in enumerate(pictures):
            caption = "compare these" if index == 1 else None
            telegram.photo_message(USER, picture, caption=caption, media_group_id="album-1")
        await eventually(lambda: said(telegram, USER, "Echo: compare these [3 images]"))
        await asyncio.sleep(1.0)  # nothing more comes
    [request] = fake_openai.model_requests()
    assert [(i.width, i.height) for i in fake_openai.images_seen(request)] == [
        (320, 240),
        (200, 300),
        (256, 256),
    ]
    assert shown(telegram, USER) == ["Echo: compare these [3 images]"]
    assert len(telegram.calls_to("getFile")) == 3


async def test_image_files_in_other_formats_are_converted(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.document_message(
            USER, make_images.bmp(400, 300), file_name="scan.bmp", caption="read this"
        )
        await eventually(lambda: said(telegram, USER, "Echo: read this [1 image]"))
        telegram.document_message(
            USER, make_images.tiff(120, 90), file_name="x", mime_type="image/tiff"
        )
        await eventually(
            lambda: said(telegram, USER, "[1 image]") and len(shown(telegram, USER)) == 2
        )
    first, second = fake_openai.model_requests()
    assert [(i.mime, i.width, i.height) for i in first.images] == [("image/jpeg", 400, 300)]
    assert ("image/jpeg", 120, 90) in [(i.mime, i.width, i.height) for i in second.images]
    assert "What is in this picture?" in shown(telegram, USER)[1]


async def test_a_voice_note_shows_its_escaped_transcript_then_the_answer(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    heard = "please explain <b>bold</b> & <i>tags</i>"
    fake_openai.enqueue_transcript(heard)
    async with running(make_app, telegram):
        update = telegram.voice_message(USER, make_audio.voice_note(3.0))
        await eventually(lambda: said(telegram, USER, f"Echo: {heard}"))
    transcript, answer = telegram.chat(USER)
    assert transcript.text == f"🎙 {heard}"  # shown literally, not as formatting
    assert transcript.reply_to_message_id == update["message"]["message_id"]
    assert [e["type"] for e in transcript.entities] == ["italic"]
    assert answer.text == f"Echo: {heard}"
    [transcription] = fake_openai.transcriptions
    assert 2.5 < transcription.duration_seconds < 3.5
    assert_nothing_leaked(fake_openai, telegram)


async def test_audio_files_and_video_notes_are_heard(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    song = make_audio.tone_segments([(440, 1.0), (0, 0.6), (660, 1.0)], "mp3")
    async with running(make_app, telegram):
        telegram.audio_message(USER, song, file_name="memo.mp3", caption="summarise")
        await eventually(lambda: said(telegram, USER, "Echo: summarise\n\ntone440 tone660"))
        telegram.document_message(
            USER, make_audio.tone_segments([(520, 1.0)], "wav"), file_name="note.wav"
        )
        await eventually(lambda: said(telegram, USER, "Echo: tone520"))
        # A round video note (an MP4 with sound) is heard like a voice note.
        telegram.video_note_message(USER, make_audio.tone_segments([(600, 1.0)], "m4a"))
        await eventually(lambda: said(telegram, USER, "Echo: tone600"))
    assert "🎙 tone440 tone660" in shown(telegram, USER)
    assert_nothing_leaked(fake_openai, telegram)


async def test_image_command_sends_the_picture_with_the_revised_prompt(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Telegram is busy at first: the photo waits out the 429, like text does.
    telegram.fail_next("sendPhoto", 429, "Too Many Requests: retry after 1", retry_after=1)
    async with running(
        make_app,
        telegram,
        SWITCHBOARD_IMAGE_MODEL="dall-e-3",
        SWITCHBOARD_MODELS_FILE=make_images.dall_e_server_models(tmp_path),
    ):
        telegram.private_message(USER, "/image a cat <on> a mat")
        await eventually(lambda: any(m.kind == "photo" for m in telegram.chat(USER)))
        await asyncio.sleep(0.5)  # no "(no answer)" follows the picture
    [photo] = telegram.chat(USER)
    assert photo.kind == "photo"
    assert photo.text == "A detailed picture of: a cat <on> a mat"
    assert photo.parse_mode == "HTML"
    [drawn] = fake_openai.images
    assert (drawn.endpoint, drawn.model, drawn.prompt) == (
        "generations",
        "dall-e-3",
        "a cat <on> a mat",
    )
    failed, sent = telegram.calls_to("sendPhoto")
    assert sent.time - failed.time >= 1.0
    assert telegram.rate_limited == [("sendPhoto", USER)]
    upload = sent.params["photo"]
    assert isinstance(upload, RecordedFile) and upload.content[:8] == b"\x89PNG\r\n\x1a\n"


async def test_edit_changes_the_photo_it_replies_to_or_carries(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    red, blue, green = solid_png((255, 0, 0)), solid_png((0, 0, 255)), solid_png((0, 255, 0))
    async with running(make_app, telegram):
        first = telegram.photo_message(USER, red)
        await eventually(lambda: len(shown(telegram, USER)) == 1)
        telegram.photo_message(USER, blue, caption="and this one?")
        await eventually(lambda: len(shown(telegram, USER)) == 2)
        # The newest picture is blue, but the command replies to the red one.
        telegram.private_message(
            USER, "/edit make it shiny", reply_to=first["message"]["message_id"]
        )
        await eventually(lambda: any(m.kind == "photo" for m in telegram.chat(USER)))
        telegram.photo_message(USER, green, caption="/edit add a hat")
        await eventually(lambda: sum(m.kind == "photo" for m in telegram.chat(USER)) == 2)
        await asyncio.sleep(0.5)
    edits = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    assert [r.body and r.body.get("prompt") for r in edits] == ["make it shiny", "add a hat"]
    sources = [
        mean_colour(next(f.data for f in r.files if f.name.startswith("image"))) for r in edits
    ]
    assert sources[0][0] > 200 and sources[0][2] < 50  # red
    assert sources[1][1] > 200 and sources[1][0] < 50  # green
    photos = [m for m in telegram.chat(USER) if m.kind == "photo"]
    assert all(m.text == "" for m in photos)  # gpt-image gives no revised prompt
    assert "(no answer)" not in "".join(shown(telegram, USER))
    assert len(fake_openai.model_requests()) == 2  # the two photos; the edits use no chat model
    assert_nothing_leaked(fake_openai, telegram)


async def test_edit_without_a_description_explains_itself(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.private_message(USER, "/edit")
        await eventually(lambda: said(telegram, USER, "Send /edit with a description"))
        telegram.private_message(USER, "/edit make it blue")
        await eventually(lambda: said(telegram, USER, "Send the picture to edit"))
    assert fake_openai.images == []


async def test_spoken_replies_arrive_as_an_opus_voice_note_through_a_realtime_session(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.private_message(USER, "/voice on")
        await eventually(lambda: said(telegram, USER, "Spoken replies are on"))
        telegram.private_message(USER, "hello there")
        await eventually(lambda: any(m.kind == "voice" for m in telegram.chat(USER)))
    kinds = [(m.kind, m.text) for m in telegram.chat(USER)]
    assert kinds[1:] == [("text", "Echo: hello there"), ("voice", "")]
    [call] = telegram.calls_to("sendVoice")
    note = call.params["voice"]
    assert isinstance(note, RecordedFile)
    assert note.content.startswith(b"OggS") and b"OpusHead" in note.content
    assert make_audio.opus_head(note.content)[0] == 1  # mono
    assert isinstance(call.params["duration"], int) and call.params["duration"] >= 1
    # The default speech model speaks through the Realtime API, in one closed session.
    assert fake_openai.speeches == []
    [session] = fake_openai.realtime.sessions
    assert session.model == "gpt-realtime-2.1-mini" and session.closed
    assert session.items == [("user", "Echo: hello there")]
    [response] = session.responses
    samples = make_audio.decode(note.content)
    assert len(samples) / make_audio.RATE == pytest.approx(response.audio_seconds, abs=0.1)
    assert make_audio.frequency(samples) == pytest.approx(220, abs=5)  # the session's tone


async def test_oversize_files_get_a_clear_reply_without_a_download(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.voice_message(USER, make_audio.voice_note(2.0), file_size=25 * MEGABYTE)
        await eventually(lambda: said(telegram, USER, "too large"))
    [reply] = shown(telegram, USER)
    assert reply == "⚠️ That file is too large (25 MB); the most I can take is 20 MB."
    assert telegram.calls_to("getFile") == []
    assert fake_openai.requests == []


async def test_a_self_hosted_limit_is_honoured(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    big = make_images.noisy_png(800, 800)
    assert len(big) > MEGABYTE
    async with running(make_app, telegram, SWITCHBOARD_MAX_FILE_MB=1):
        telegram.document_message(USER, big, file_name="noise.png", caption="look")
        await eventually(lambda: said(telegram, USER, "the most I can take is 1 MB"))
    assert telegram.calls_to("getFile") == []


async def test_bad_files_get_a_friendly_reply_and_the_bot_carries_on(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram):
        telegram.voice_message(USER, make_audio.corrupt_audio())
        await eventually(lambda: len(shown(telegram, USER)) == 1)
        telegram.document_message(USER, b"%PDF-1.7 ...", file_name="report.pdf", caption="hi")
        await eventually(lambda: len(shown(telegram, USER)) == 2)
        telegram.photo_message(USER, make_images.corrupt())
        await eventually(lambda: len(shown(telegram, USER)) == 3)
        telegram.private_message(USER, "still there?")
        await eventually(lambda: said(telegram, USER, "Echo: still there?"))
    corrupt_voice, pdf, corrupt_photo, answer = shown(telegram, USER)
    assert corrupt_voice.startswith("⚠️ ") and "Traceback" not in corrupt_voice
    assert pdf.startswith("⚠️ ") and "report.pdf" in pdf
    assert corrupt_photo.startswith("⚠️ ")
    assert answer == "Echo: still there?"
    assert len(telegram.calls_to("getFile")) == 2  # the PDF was never fetched
    assert [r.path for r in fake_openai.model_requests()] == ["/v1/responses"]


async def test_a_failed_download_gets_a_friendly_reply(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    telegram.fail_next(
        "getFile", 400, "Bad Request: wrong file_id or the file is temporarily unavailable"
    )
    async with running(make_app, telegram):
        telegram.photo_message(USER, make_images.png(64, 64), caption="what?")
        await eventually(lambda: said(telegram, USER, "couldn't fetch that file"))
        telegram.photo_message(USER, make_images.png(64, 64), caption="and now?")
        await eventually(lambda: said(telegram, USER, "Echo: and now? [1 image]"))
    assert telegram.token not in "".join(shown(telegram, USER))


async def test_groups_take_files_only_when_addressed(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    photo = make_images.png(128, 128)
    async with running(make_app, telegram):
        telegram.photo_message(GROUP, photo, user_id=7, caption="holiday pics")
        telegram.photo_message(GROUP, photo, user_id=7, media_group_id="g1")
        telegram.photo_message(GROUP, photo, user_id=7, media_group_id="g1")
        telegram.voice_message(GROUP, make_audio.voice_note(2.0), user_id=7)
        telegram.photo_message(
            GROUP, photo, user_id=8, caption=f"@{telegram.bot_username} what is this?"
        )
        await eventually(lambda: said(telegram, GROUP, "Echo: what is this? [1 image]"))
        telegram.voice_message(GROUP, make_audio.voice_note(2.0), user_id=8, reply_to_bot=True)
        await eventually(lambda: said(telegram, GROUP, "Echo: tone300"))
        await asyncio.sleep(1.0)
    assert len(telegram.calls_to("getFile")) == 2  # group chatter is never downloaded
    answers = [m for m in telegram.chat(GROUP) if m.text.startswith("Echo")]
    assert all(m.reply_to_message_id is not None for m in answers)


async def test_refused_users_files_are_never_fetched(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI
) -> None:
    async with running(make_app, telegram, SWITCHBOARD_ALLOWED_USERS=f"telegram:{USER}"):
        telegram.photo_message(3003, make_images.png(64, 64), caption="let me in")
        await eventually(lambda: said(telegram, 3003, "only available to approved users"))
    assert telegram.calls_to("getFile") == []
    assert fake_openai.requests == []


async def test_an_album_being_gathered_at_shutdown_is_still_answered(
    make_app: AppFactory,
    telegram: FakeTelegram,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bots.telegram.channel")
    async with running(make_app, telegram):
        for _ in range(2):
            telegram.photo_message(USER, make_images.png(64, 64), media_group_id="late")
        await eventually(lambda: not telegram.pending_updates())
        await asyncio.sleep(0.3)  # the parts are being gathered (for 0.8 s after the last)
    # Leaving the block stopped the channel while the album waited for more parts: it was
    # answered at once with what had arrived.
    assert "answering 1 album(s) with the parts received" in caplog.text
    assert shown(telegram, USER) == ["Echo: What is in these pictures? [2 images]"]


async def test_long_transcripts_and_captions_fit_telegrams_limits(
    telegram: FakeTelegram,
) -> None:
    bot = Bot(telegram.token, base_url=f"{telegram.url}/bot")
    picture = make_images.png(64, 64)
    image = GeneratedImage(PreparedImage(picture, "image/png", 64, 64))
    async with bot:
        reply = TelegramReply(
            bot, ChatPlace(USER, group=False, message_id=None), FloodControl(UNPACED)
        )
        await reply.emit(Transcribed("<word> " * 3000))
        await reply.emit(ImageReady(image, "a very long prompt & more " * 100))
        await reply.emit(ReplyFinished(""))
        await reply.emit(Notice("I couldn't say that aloud: <too long>"))
    transcript = telegram.chat(USER)[:3]
    photo, notice = telegram.chat(USER)[3:]
    assert all(0 < len(m.text) <= 4096 for m in transcript)
    assert transcript[0].text.startswith("🎙 <word> <word>")
    assert transcript[-1].text.endswith("<word> …")
    assert photo.kind == "photo" and len(photo.text) <= 1024 and photo.text.endswith("…")
    assert photo.text.startswith("a very long prompt & more")
    assert notice.text == "\u2139\ufe0f I couldn't say that aloud: <too long>"  # no "(no answer)"


async def test_long_audio_is_split_and_its_transcripts_joined_in_order(
    make_app: AppFactory, telegram: FakeTelegram, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    models = make_audio.small_upload_models(tmp_path)
    recording = make_audio.lecture("mp3")
    expected = make_audio.LECTURE_TRANSCRIPT
    async with running(make_app, telegram, SWITCHBOARD_MODELS_FILE=str(models)):
        telegram.audio_message(USER, recording, file_name="lecture.mp3", mime_type="audio/mpeg")
        await eventually(lambda: said(telegram, USER, f"Echo: {expected}"))
    transcript, answer = telegram.chat(USER)
    assert transcript.text == f"🎙 {expected}"
    assert answer.text == f"Echo: {expected}"
    assert len(fake_openai.transcriptions) >= 2  # it went up in parts
    assert_nothing_leaked(fake_openai, telegram)
