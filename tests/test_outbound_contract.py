"""The outbound channel port's contract, run against every implementation: Telegram (the
real python-telegram-bot against the fake Bot API), Slack (the real slack-sdk against the
fake Slack) and the console. The core, with no incoming message, opens a reply in a known
conversation, posts and later edits a status message — also from a restarted process —
and sends a file."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bots.bootstrap import App
from bots.console import ConsoleChannel
from core.conversation.channel import OutgoingFile
from core.conversation.events import ReplyFinished, TextDelta
from core.conversation.messages import ConversationKey
from core.errors import ChannelUnavailable
from tests.conftest import AppFactory
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.test_slack import GENERAL
from tests.test_slack import running as slack_running
from tests.test_telegram import USER, eventually
from tests.test_telegram import running as telegram_running


@dataclass
class Harness:
    """One channel implementation: how to run it, where a known conversation is, and what
    that conversation shows."""

    key: ConversationKey
    run: Callable[[AppFactory], AbstractAsyncContextManager[App]]
    texts: Callable[[], list[str]]
    files: Callable[[], list[tuple[str, bytes]]]


def _telegram(fake: FakeTelegram) -> Harness:
    def texts() -> list[str]:
        return [m.text for m in fake.chat(USER) if m.kind == "text"]

    def files() -> list[tuple[str, bytes]]:
        return [
            (str(call.params["document"].filename), call.params["document"].content)
            for call in fake.calls_to("sendDocument")
        ]

    key = ConversationKey("telegram", place=str(USER))

    @asynccontextmanager
    async def run(make_app: AppFactory) -> AsyncIterator[App]:
        async with telegram_running(make_app, fake) as app:
            await eventually(lambda: app.outbox.reaches(key))  # attached once it started
            yield app

    return Harness(key, run, texts, files)


def _slack(fake: FakeSlack) -> Harness:
    key = ConversationKey("slack", place=GENERAL, scope=fake.team_id)

    @asynccontextmanager
    async def run(make_app: AppFactory) -> AsyncIterator[App]:
        async with slack_running(make_app, fake) as bot:
            await eventually(lambda: bot.app.outbox.reaches(key))  # attached once it started
            yield bot.app

    def texts() -> list[str]:
        return [m.text for m in fake.messages(GENERAL) if m.is_bot and not m.files]

    def files() -> list[tuple[str, bytes]]:
        return [(f.name, f.content) for f in fake.uploads if f.channel == GENERAL]

    return Harness(key, run, texts, files)


def _console(tmp_path: Path) -> Harness:
    out = io.StringIO()
    media = tmp_path / "media"

    @asynccontextmanager
    async def run(make_app: AppFactory) -> AsyncIterator[App]:
        async with make_app() as app:
            console = ConsoleChannel(
                app.pipeline, app.commands, app.turns, stdin=io.StringIO(), stdout=out,
                media_dir=media, user="ada",
            )  # fmt: skip
            app.outbox.attach(console)
            try:
                yield app
            finally:
                app.outbox.detach(console)

    def texts() -> list[str]:
        return [line for line in out.getvalue().splitlines() if line]

    def files() -> list[tuple[str, bytes]]:
        return sorted((path.name, path.read_bytes()) for path in media.glob("*"))

    return Harness(ConversationKey("console", place="ada"), run, texts, files)


@pytest.fixture(params=["telegram", "slack", "console"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "telegram":
        with FakeTelegram() as telegram:
            yield _telegram(telegram)
    elif request.param == "slack":
        with FakeSlack() as slack:
            yield _slack(slack)
    else:
        yield _console(tmp_path)


async def test_a_reply_is_opened_in_a_known_conversation_without_a_message(
    make_app: AppFactory, harness: Harness
) -> None:
    async with harness.run(make_app) as app:
        reply = app.outbox.reply(harness.key)
        await reply.start()
        await reply.emit(TextDelta("Your batch "))
        await reply.emit(TextDelta("is done."))
        await reply.emit(ReplyFinished("Your batch is done."))
        await reply.close()
        await eventually(lambda: any("Your batch is done." in t for t in harness.texts()))


async def test_a_posted_message_is_edited_later_also_after_a_restart(
    make_app: AppFactory, harness: Harness
) -> None:
    async with harness.run(make_app) as app:
        posted = await app.outbox.post(harness.key, "Batch 7: **queued**")
        await app.outbox.edit(posted.id, "Batch 7: 10 of 40 done")
        await eventually(lambda: any("10 of 40 done" in t for t in harness.texts()))
    async with harness.run(make_app) as restarted:  # a new process, the same database
        await restarted.outbox.edit(posted.id, "Batch 7: 40 of 40 done")
        await eventually(lambda: any("40 of 40 done" in t for t in harness.texts()))
    shown = harness.texts()
    assert not any("queued" in text for text in shown[-1:])
    if harness.key.channel != "console":
        # Platforms change the message in place: one status message, now showing the end.
        assert sum("Batch 7" in text for text in shown) == 1


async def test_a_file_is_sent(make_app: AppFactory, harness: Harness) -> None:
    data = b"prompt,answer\nhello,hi\n"
    async with harness.run(make_app) as app:
        posted = await app.outbox.send_file(
            harness.key, OutgoingFile("results.csv", data, "text/csv", caption="Batch 7")
        )
        await eventually(lambda: bool(harness.files()))
    [(name, content)] = harness.files()
    assert name.endswith(".csv") and content == data
    assert posted.platform_message_id


async def test_a_channel_that_is_not_running_cannot_be_reached(make_app: AppFactory) -> None:
    async with make_app() as app:
        key = ConversationKey("telegram", place=str(USER))
        assert not app.outbox.reaches(key)
        with pytest.raises(ChannelUnavailable):
            await app.outbox.post(key, "hello")
