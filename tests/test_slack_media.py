"""Pictures, audio and spoken replies in Slack, end to end: the real slack-bolt app and
slack-sdk client against the fake Slack (which hosts the users' files behind the bot token and
takes uploads through the v2 flow), the real engine against the fake OpenAI."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image
from slack_sdk.web.async_client import AsyncWebClient

from bots.pacing import FloodControl
from bots.slack.events import SlackPlace, conversation_key
from bots.slack.files import is_slack_url
from bots.slack.reply import SlackReply
from core.conversation.events import ReplyFinished, TextDelta, Transcribed
from tests import make_audio
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.slack_server import FakeSlack, SentMessage, UploadedFile
from tests.make_audio import (
    LECTURE_TRANSCRIPT,
    corrupt_audio,
    lecture,
    opus_head,
    small_upload_models,
    tone_segments,
)
from tests.make_images import dall_e_server_models, jpeg_with_exif_orientation, noisy_png, png
from tests.test_slack import FAST, bot_messages, eventually, free_port, running, section_texts

ADA = "U0ADA"
BEN = "U0BEN"
GENERAL = "C0GENERAL"
HOSTILE = "<!channel> *bold* and @here"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(per_channel_rate=math.inf) as fake:
        yield fake


def shown(message: SentMessage) -> str:
    """Everything a message shows: its text, section texts and rich text elements."""
    parts = [message.text, section_texts(message)]
    for block in message.blocks or []:
        if block["type"] == "rich_text":
            for element in block["elements"]:
                parts.extend(str(item.get("text", "")) for item in element["elements"])
    return "\n".join(parts)


def uploads_in(slack: FakeSlack, channel: str) -> list[UploadedFile]:
    return [upload for upload in slack.uploads if upload.channel == channel]


def assert_nothing_leaked(fake_openai: FakeOpenAI, slack: FakeSlack) -> None:
    """OpenAI never saw the bot token or a Slack file URL: files go as bytes."""
    sent = fake_openai.all_request_text()
    assert slack.bot_token not in sent
    assert slack.url not in sent and "files-pri" not in sent


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


async def test_a_picture_in_a_dm_goes_to_the_model_inline_with_the_question(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    photo = slack.add_file("photo.png", png(64, 48), "image/png", user=ADA)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "what is in it?", files=[photo]))
        await eventually(
            lambda: any(
                "Echo: what is in it? [1 image]" in shown(m) for m in bot_messages(slack, dm)
            )
        )
    [request] = fake_openai.model_requests()
    body = json.dumps(request.body)
    assert '"input_image"' in body and '"image_url": "data:image/' in body
    [seen] = fake_openai.images_seen(request)
    assert (seen.width, seen.height) == (64, 48)
    assert [(d.file_id, d.authorized) for d in slack.downloads] == [(photo["id"], True)]
    assert_nothing_leaked(fake_openai, slack)


async def test_a_file_given_by_id_only_is_looked_up_then_fetched(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    photo = slack.add_file("shared.png", png(24, 24), "image/png", user=ADA)
    dm = slack.dm_channel(ADA)
    # As in Slack Connect channels: the event names the file and nothing more.
    by_id = {"id": photo["id"], "file_access": "check_file_info", "created": photo["created"]}
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "and this?", files=[by_id]))
        expected = "Echo: and this? [1 image]"
        await eventually(lambda: any(expected in shown(m) for m in bot_messages(slack, dm)))
    assert [c.params["file"] for c in slack.calls_to("files.info")] == [photo["id"]]
    assert [d.file_id for d in slack.downloads] == [photo["id"]]


async def test_a_mention_with_two_pictures_asks_about_both_at_once(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    first = slack.add_file("one.png", png(40, 30), "image/png", user=ADA)
    second = slack.add_file("two.jpg", jpeg_with_exif_orientation(1), "image/jpeg", user=ADA)
    async with running(make_app, slack) as bot:
        mention = slack.mention(ADA, "which is bigger?", channel=GENERAL, files=[first, second])
        # Slack sends the mention twice: as an app_mention and as a file_share message.
        await slack.deliver_event(bot.url, mention)
        await slack.deliver_event(bot.url, slack.message_event_of(mention))
        root = str(mention["ts"])
        expected = "Echo: which is bigger? [2 images]"
        await eventually(lambda: section_texts(slack.thread(GENERAL, root)[-1]) == expected)
        await asyncio.sleep(0.3)
    [request] = fake_openai.model_requests()
    assert sorted((i.width, i.height) for i in fake_openai.images_seen(request)) == [
        (40, 30),
        (120, 80),
    ]
    replies = [m for m in slack.thread(GENERAL, root) if m.is_bot and not m.deleted]
    assert len(replies) == 1 and replies[0].thread_ts == root
    assert sorted(d.file_id for d in slack.downloads) == sorted([first["id"], second["id"]])
    assert_nothing_leaked(fake_openai, slack)


async def test_a_voice_clip_is_transcribed_shown_literally_and_answered(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    # A Slack audio clip: MP4 audio, ``audio/mp4``.
    clip = tone_segments(((0.0, 0.3), (440.0, 0.8), (0.0, 0.3)), "m4a")
    hosted = slack.add_file("audio_message.m4a", clip, "audio/mp4", user=ADA)
    fake_openai.enqueue_transcript(HOSTILE)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "", files=[hosted]))
        await eventually(
            lambda: any(
                section_texts(m).startswith("Echo:") for m in bot_messages(slack, dm) if m.blocks
            )
        )
    transcript, answer = bot_messages(slack, dm)
    assert transcript.ts < answer.ts  # the transcript comes first
    [block] = transcript.blocks or []
    assert block["type"] == "rich_text"  # literal text: no markup, no mentions
    words = [e for e in block["elements"][0]["elements"] if e.get("style") == {"italic": True}]
    assert [e["text"] for e in words] == [HOSTILE]
    assert "<!channel>" not in transcript.text and "&lt;!channel&gt;" in transcript.text
    assert "@here" not in transcript.text  # the notification text pings no one either
    assert "<!channel>" not in section_texts(answer) and "*bold*" not in section_texts(answer)
    [heard] = fake_openai.transcriptions
    assert heard.duration_seconds == pytest.approx(1.4, abs=0.2)
    assert HOSTILE in json.dumps(fake_openai.model_requests()[0].body)
    assert_nothing_leaked(fake_openai, slack)


async def test_a_voice_clip_in_a_thread_is_transcribed_before_the_streamed_answer(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    clip = tone_segments(((0.0, 0.3), (660.0, 0.8), (0.0, 0.3)), "ogg")
    hosted = slack.add_file("audio_message.ogg", clip, "audio/ogg", user=ADA)
    answer_text = " ".join(f"word{i}" for i in range(30))
    fake_openai.enqueue(Scripted(text=answer_text, chunks=15, chunk_delay=0.05))
    async with running(make_app, slack) as bot:
        mention = slack.mention(ADA, "", channel=GENERAL, files=[hosted])
        await slack.deliver_event(bot.url, mention)
        root = str(mention["ts"])
        await eventually(lambda: section_texts(slack.thread(GENERAL, root)[-1]) == answer_text)
    transcript, answer = [m for m in slack.thread(GENERAL, root) if m.is_bot]
    assert transcript.ts < answer.ts
    assert transcript.thread_ts == root and "tone660" in shown(transcript)
    assert answer.streaming == "completed"  # the answer still streams natively
    assert "tone660" in json.dumps(fake_openai.model_requests()[0].body)


async def test_a_thinking_note_becomes_the_transcript_and_long_ones_are_split(
    slack: FakeSlack,
) -> None:
    dm = slack.dm_channel(ADA)
    heard = " ".join(f"word{i}" for i in range(1500))
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    place = SlackPlace(slack.team_id, dm, ADA)
    reply = SlackReply(client, place, FloodControl(FAST), thinking_after=0.01)
    await reply.start()
    await eventually(lambda: bool(bot_messages(slack, dm)))
    [note] = bot_messages(slack, dm)
    await reply.emit(Transcribed(heard))
    await reply.emit(TextDelta("The answer"))
    await reply.emit(ReplyFinished("The answer"))
    await reply.close()
    *transcript, answer = bot_messages(slack, dm)
    assert transcript[0].ts == note.ts  # the note was turned into the transcript
    assert "Thinking" in section_texts(note) and len(transcript) == 5  # 12,389 characters
    texts = [
        e["text"]
        for m in transcript
        for e in (m.blocks or [])[0]["elements"][0]["elements"]
        if e.get("style")
    ]
    assert all(len(text) <= 3000 for text in texts)
    assert " ".join(texts).split() == heard.split()
    assert section_texts(answer) == "The answer"
    assert [m for m in slack.messages(dm) if m.deleted] == []


async def test_image_command_posts_the_picture_in_that_channel_with_the_revised_prompt(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    slack.fail_next("files.completeUploadExternal", "ratelimited", retry_after=1)
    async with running(
        make_app,
        slack,
        SWITCHBOARD_IMAGE_MODEL="dall-e-3",
        SWITCHBOARD_MODELS_FILE=dall_e_server_models(tmp_path),
    ) as bot:
        # Slack escapes &, < and > in a command's text.
        status, body, elapsed = await slack.slash_command(
            bot.url, "/image", "a cat &amp; a dog", user_id=ADA, channel_id=GENERAL
        )
        await eventually(lambda: bool(slack.uploads))
        await asyncio.sleep(0.3)
    assert status == 200 and elapsed < 3
    ack = json.loads(body)
    assert ack["response_type"] == "ephemeral" and "Drawing" in ack["text"]
    [upload] = slack.uploads
    assert (upload.channel, upload.thread_ts) == (GENERAL, None)  # a new top-level post
    assert upload.initial_comment == "A detailed picture of: a cat &amp; a dog"
    assert upload.content.startswith(b"\x89PNG")
    assert [i.prompt for i in fake_openai.images] == ["a cat & a dog"]
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1
    completions = slack.calls_to("files.completeUploadExternal")
    assert [c.status for c in completions] == [429, 200]  # Retry-After waited out
    assert completions[1].time - completions[0].time >= 0.9
    [post] = bot_messages(slack, GENERAL)  # the picture and nothing else
    assert post.files and post.thread_ts is None
    assert slack.responses == []  # nothing went wrong to tell Ada about
    assert_nothing_leaked(fake_openai, slack)


async def test_edit_command_changes_the_picture_sent_in_that_dm(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    # Left half red, right half blue.
    photo = slack.add_file("halves.jpg", jpeg_with_exif_orientation(1), "image/jpeg", user=ADA)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "my picture", files=[photo]))
        await eventually(
            lambda: any("Echo: my picture" in shown(m) for m in bot_messages(slack, dm))
        )
        await slack.slash_command(bot.url, "/edit", "make it blue", user_id=ADA, channel_id=dm)
        await eventually(lambda: bool(uploads_in(slack, dm)))
        key = conversation_key(slack.team_id, dm)
        conversation = await bot.app.store.active_conversation(key)
        # The upload can reach Slack a moment before the turn's writes are done.
        for _ in range(150):
            stored = await bot.app.store.recent_messages(conversation.id, limit=10)
            if "/edit make it blue" in [m.text for m in stored]:
                break
            await asyncio.sleep(0.1)
    [record] = fake_openai.images
    assert (record.endpoint, record.prompt) == ("edits", "make it blue")
    [edit_request] = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    [sent] = [f for f in edit_request.files if f.name in ("image", "image[]")]
    picture = decoded(sent.data)
    width, height = picture.size
    left = picture.getpixel((width // 8, height // 2))
    right = picture.getpixel((width - width // 8, height // 2))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > 200 and left[2] < 60  # red on the left
    assert right[2] > 200 and right[0] < 60  # blue on the right
    [upload] = uploads_in(slack, dm)
    assert upload.thread_ts is None and upload.content.startswith(b"\x89PNG")
    assert "/edit make it blue" in [m.text for m in stored]
    assert_nothing_leaked(fake_openai, slack)


async def test_spoken_replies_arrive_as_an_ogg_opus_file_after_the_text_through_realtime(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        status, body, _ = await slack.slash_command(
            bot.url, "/voice", "on", user_id=ADA, channel_id=dm
        )
        await eventually(lambda: len(slack.responses) == 1)
        await slack.deliver_event(bot.url, slack.dm(ADA, "say hello"))
        await eventually(lambda: bool(uploads_in(slack, dm)))
    assert (status, body) == (200, "")
    voice_on = slack.responses[0].payload
    assert voice_on["response_type"] == "ephemeral" and "on" in voice_on["text"]
    [upload] = uploads_in(slack, dm)
    assert upload.name == "reply.ogg" and upload.thread_ts is None
    assert upload.content.startswith(b"OggS") and b"OpusHead" in upload.content
    assert opus_head(upload.content)[0] == 1  # mono
    answer, audio = bot_messages(slack, dm)
    assert section_texts(answer) == "Echo: say hello"
    assert audio.files and answer.ts < audio.ts
    assert fake_openai.speeches == []  # the default speech model is a realtime one
    [session] = fake_openai.realtime.sessions
    assert session.items == [("user", "Echo: say hello")] and session.closed
    [response] = session.responses
    samples = make_audio.decode(upload.content)
    assert len(samples) / make_audio.RATE == pytest.approx(response.audio_seconds, abs=0.1)


async def test_a_picture_drawn_by_the_tool_is_the_whole_answer(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(error="rate_limit", retry_after=1.0),  # slow to start: "thinking" shows
        Scripted(tool_calls=[("generate_image", {"prompt": "a red boat"})]),
        Scripted(text=""),
    )
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "draw a boat"))
        await eventually(lambda: bool(uploads_in(slack, dm)))
        await eventually(lambda: not bot.app.turns.is_busy(conversation_key(slack.team_id, dm)))
        await asyncio.sleep(0.3)
    assert any(
        "Thinking" in json.dumps(c.params.get("blocks")) for c in slack.calls_to("chat.postMessage")
    )
    [post] = bot_messages(slack, dm)  # no thinking note left behind, no "(no answer)"
    assert post.files and post.files[0]["name"].startswith("picture.")
    assert [i.prompt for i in fake_openai.images] == ["a red boat"]


async def test_an_oversize_file_gets_a_clear_reply_and_is_not_downloaded(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    big = noisy_png(900, 900)
    assert len(big) > 1024 * 1024
    hosted = slack.add_file("big.png", big, "image/png", user=ADA)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack, SWITCHBOARD_MAX_FILE_MB=1) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "look", files=[hosted]))
        await eventually(lambda: bool(bot_messages(slack, dm)))
        await asyncio.sleep(0.3)
    [reply] = bot_messages(slack, dm)
    assert "big.png" in section_texts(reply) and "up to 1 MB" in section_texts(reply)
    assert slack.downloads == []
    assert fake_openai.requests == []


async def test_files_the_bot_does_not_read_get_a_clear_reply(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    report = slack.add_file("report.pdf", b"%PDF-1.7 not really", "application/pdf", user=ADA)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "summarise", files=[report]))
        await eventually(lambda: bool(bot_messages(slack, dm)))
    [reply] = bot_messages(slack, dm)
    assert "report.pdf" in section_texts(reply) and "pictures" in section_texts(reply)
    assert slack.downloads == [] and fake_openai.requests == []


@asynccontextmanager
async def foreign_host() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A web server that is not Slack, serving a real picture and noting every request."""
    seen: list[dict[str, Any]] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "headers": dict(request.headers)})
        return web.Response(body=png(8, 8), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_file_url_on_another_host_is_never_fetched_with_the_token(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    hosted = slack.add_file("photo.png", png(16, 16), "image/png", user=ADA)
    dm = slack.dm_channel(ADA)
    async with foreign_host() as (elsewhere, seen), running(make_app, slack) as bot:
        forged = {
            **hosted,
            "url_private": f"{elsewhere}/files-pri/photo.png",
            "url_private_download": f"{elsewhere}/files-pri/download/photo.png",
        }
        await slack.deliver_event(bot.url, slack.dm(ADA, "look", files=[forged]))
        await eventually(lambda: bool(bot_messages(slack, dm)))
        await slack.deliver_event(bot.url, slack.dm(ADA, "still there?"))
        await eventually(
            lambda: any("Echo: still there?" in shown(m) for m in bot_messages(slack, dm))
        )
    assert seen == []  # not fetched at all, so certainly not with the token
    first = bot_messages(slack, dm)[0]
    assert "couldn't get “photo.png” from Slack" in section_texts(first)
    assert len(fake_openai.model_requests()) == 1
    assert_nothing_leaked(fake_openai, slack)


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.png", True),
        ("https://slack.com/files-pri/T1-F1/a.png", True),
        ("https://acme.enterprise.slack.com/files-pri/T1-F1/a.png", True),
        ("http://files.slack.com/files-pri/T1-F1/a.png", False),  # the token in clear text
        ("https://files.slack.com:8443/files-pri/T1-F1/a.png", False),
        ("https://files.slack.com.evil.example/files-pri/a.png", False),
        ("https://evilslack.com/files-pri/a.png", False),
        ("https://files.slack.com@evil.example/a.png", False),
        ("https://user@files.slack.com/a.png", False),
        ("https://evil.example/?https://files.slack.com/", False),
        ("ftp://files.slack.com/a.png", False),
        ("/files-pri/a.png", False),
    ],
)
def test_only_slack_hosts_get_the_token(url: str, trusted: bool) -> None:
    assert is_slack_url(url, "https://slack.com/api/") is trusted


def test_the_configured_api_origin_is_trusted_exactly() -> None:
    api = "http://127.0.0.1:8082/api/"
    assert is_slack_url("http://127.0.0.1:8082/files-pri/T-F/a.png", api)
    assert not is_slack_url("http://127.0.0.1:8083/files-pri/T-F/a.png", api)
    assert not is_slack_url("https://127.0.0.1:8082/files-pri/T-F/a.png", api)
    assert is_slack_url("https://files.slack-gov.com/a.png", "https://slack-gov.com/api/")


async def test_corrupt_audio_gets_a_friendly_reply_and_the_bot_keeps_answering(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    broken = slack.add_file("voice.ogg", corrupt_audio(), "audio/ogg", user=ADA)
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "", files=[broken]))
        await eventually(lambda: any("⚠️" in shown(m) for m in bot_messages(slack, dm)))
        await slack.deliver_event(bot.url, slack.dm(ADA, "and now?"))
        await eventually(lambda: any("Echo: and now?" in shown(m) for m in bot_messages(slack, dm)))
    failure, answer = bot_messages(slack, dm)
    assert "Traceback" not in shown(failure) and "ffmpeg" not in shown(failure).lower()
    assert fake_openai.transcriptions == []
    assert len(fake_openai.model_requests()) == 1
    assert section_texts(answer) == "Echo: and now?"


async def test_a_redelivered_file_share_is_downloaded_and_answered_once(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    photo = slack.add_file("photo.png", png(32, 32), "image/png", user=ADA)
    event = slack.dm(ADA, "once", files=[photo])
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack) as bot:
        await slack.deliver_event(bot.url, event, event_id="Ev0FILE")
        for retry in (1, 2):
            await slack.deliver_event(bot.url, event, event_id="Ev0FILE", retry_num=retry)
        await eventually(
            lambda: any("Echo: once [1 image]" in shown(m) for m in bot_messages(slack, dm))
        )
        await asyncio.sleep(0.3)
    assert len(slack.downloads) == 1
    assert len(fake_openai.model_requests()) == 1
    assert len(bot_messages(slack, dm)) == 1


async def test_files_in_threads_the_bot_is_not_in_are_left_alone(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    photo = slack.add_file("photo.png", png(16, 16), "image/png", user=BEN)
    async with running(make_app, slack) as bot:
        root = slack.channel_message(BEN, "holiday pictures", channel=GENERAL)
        shared = slack.file_share(BEN, GENERAL, photo, thread_ts=str(root["ts"]))
        top_level = slack.file_share(BEN, GENERAL, photo)
        for event in (shared, top_level):
            assert (await slack.deliver_event(bot.url, event))[0] == 200
        await asyncio.sleep(0.5)
    assert slack.downloads == [] and fake_openai.requests == []
    assert bot_messages(slack, GENERAL) == []


async def test_long_audio_is_split_and_its_transcripts_joined_in_order(
    make_app: AppFactory, slack: FakeSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    models = small_upload_models(tmp_path)
    hosted = slack.add_file("meeting.m4a", lecture("m4a"), "audio/mp4", user=ADA)
    expected = LECTURE_TRANSCRIPT
    dm = slack.dm_channel(ADA)
    async with running(make_app, slack, SWITCHBOARD_MODELS_FILE=str(models)) as bot:
        await slack.deliver_event(bot.url, slack.dm(ADA, "", files=[hosted]))
        await eventually(
            lambda: any(f"Echo: {expected}" in section_texts(m) for m in bot_messages(slack, dm))
        )
    transcript, answer = bot_messages(slack, dm)
    assert expected in shown(transcript)
    assert section_texts(answer) == f"Echo: {expected}"
    assert len(fake_openai.transcriptions) >= 2  # it went up in parts
    assert_nothing_leaked(fake_openai, slack)
