"""Batch jobs end to end: the real OpenAI SDK against the fake Batch API, the console and
Telegram channels, the SQL job store. A batch from a file and from lines, progress edits of
one status message, delivery of the readable and raw results, partial failures, expiry,
cancel, someone else's job, budgets, the ledger at batch prices, and one job polled by two
processes on one database delivered once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text

from bots.bootstrap import App, bootstrap
from bots.console import ConsoleChannel
from bots.openai_webhooks import webhook_routes
from bots.ops import operations_server
from core.jobs.sql_jobs import SqlJobStore
from core.jobs.store import LEASE_SECONDS
from core.money.budgets import Budget, Scope
from core.money.periods import Period
from tests.conftest import API_KEY, SettingsFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.test_console import switchboard
from tests.test_slack import ADA
from tests.test_slack import running as slack_running
from tests.test_telegram import USER, eventually, free_port
from tests.test_telegram import running as telegram_running

MODEL = "gpt-6-luna"  # the shipped default chat model


class SteppingClock:
    """A clock the test moves on, so that each poll is due without waiting."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float = 60) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class Console:
    """One process's app with a console user attached to its outbox."""

    app: App
    out: io.StringIO
    media: Path
    user: str

    async def say(self, *lines: str) -> str:
        """Type ``lines`` into the console; returns what it printed for them."""
        before = len(self.out.getvalue())
        console = ConsoleChannel(
            self.app.pipeline, self.app.commands, self.app.turns,
            stdin=io.StringIO("".join(f"{line}\n" for line in lines)), stdout=self.out,
            media_dir=self.media, user=self.user,
        )  # fmt: skip
        await console.run()
        return self.out.getvalue()[before:]

    def files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.media.glob("*"))}


@asynccontextmanager
async def console_app(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    *,
    user: str = "ada",
    name: str = "one",
    **settings: object,
) -> AsyncIterator[Console]:
    async with bootstrap(make_settings(**settings), clock=clock) as app:
        out = io.StringIO()
        media = tmp_path / f"media-{name}"
        attached = ConsoleChannel(
            app.pipeline, app.commands, app.turns, stdin=io.StringIO(), stdout=out,
            media_dir=media, user=user,
        )  # fmt: skip
        app.outbox.attach(attached)
        try:
            yield Console(app, out, media, user)
        finally:
            app.outbox.detach(attached)


async def poll_until_done(app: App, clock: SteppingClock, rounds: int = 8) -> None:
    for _ in range(rounds):
        clock.advance()
        await app.batches.poll_once()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


def prompts_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def md_of(files: dict[str, str]) -> str:
    return next(v for k, v in files.items() if k.endswith(".md"))


def jsonl_of(files: dict[str, str]) -> list[dict[str, object]]:
    raw = next(v for k, v in files.items() if k.endswith(".jsonl"))
    return [json.loads(line) for line in raw.splitlines()]


async def test_a_batch_from_a_file_is_answered_in_order_with_progress_and_charged_at_batch_prices(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    path = prompts_file(tmp_path, "questions.txt", "What is 2+2?\n\nName a colour.\nSay hi.\n")
    async with console_app(
        make_settings, tmp_path, clock, SWITCHBOARD_HTTP_PORT=free_port()
    ) as console:  # metrics are kept when the operations port is set
        said = await console.say(f"/batch {path}")
        assert "Batch #1 sent: 3 prompts" in said
        assert "[#1] Batch #1: validating" in console.out.getvalue()
        (upload,) = [r for r in fake_openai.requests if r.path == "/v1/files"]
        assert upload.body == {"purpose": "batch"}
        (batch,) = fake_openai.batches.batches.values()
        requests = [
            json.loads(line)
            for line in fake_openai.batches.files[batch.input_file_id].data.decode().splitlines()
        ]
        assert [r["custom_id"] for r in requests] == ["1", "2", "3"]
        assert {r["url"] for r in requests} == {"/v1/responses"}
        assert requests[0]["body"]["model"] == MODEL
        assert requests[0]["body"]["input"] == "What is 2+2?"
        assert "instructions" in requests[0]["body"]

        clock.advance()
        await console.app.batches.poll_once()
        assert console.app.metrics.registry.get_sample_value("switchboard_open_jobs") == 1
        await poll_until_done(console.app, clock)

        printed = console.out.getvalue()
        assert "[#1 updated] Batch #1: in progress" in printed
        assert "2 done, 0 failed, of 3" in printed  # half way: the bar moved
        assert "Batch #1: completed" in printed
        files = console.files()
        assert len(files) == 2
        report = md_of(files)
        assert report.index("What is 2+2?") < report.index("Echo: What is 2+2?")
        assert report.index("Echo: What is 2+2?") < report.index("Name a colour.")
        assert report.index("Name a colour.") < report.index("Echo: Say hi.")
        assert len(jsonl_of(files)) == 3

        # One usage row, at batch prices to the micro-dollar, with the batch's id.
        async with console.app.storage.database.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT kind, model, input_tokens, output_tokens, cost_micros, request_id "
                        "FROM usage"
                    )
                )
            ).all()
        (row,) = rows
        spec = console.app.registry.models[MODEL]
        assert (row.kind, row.model, row.request_id) == ("batch", MODEL, batch.id)
        assert (row.input_tokens, row.output_tokens) == (batch.input_tokens, batch.output_tokens)
        full = -(
            -(row.input_tokens * spec.prices.input + row.output_tokens * spec.prices.output)
            // 1_000_000
        )
        assert row.cost_micros == -(-full // 2)
        assert f"${row.cost_micros / 1_000_000:.6f}".rstrip("0") in printed.replace(",", "")

        # Polling again delivers nothing more, and no job is open.
        await poll_until_done(console.app, clock, rounds=2)
        gauge = console.app.metrics.registry.get_sample_value("switchboard_open_jobs")
        assert gauge == 0
        assert len(console.files()) == 2
        said = await console.say("/jobs")
        assert "#1 batch of 3 — completed" in said


async def test_partial_failures_and_labels_from_csv(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    path = prompts_file(tmp_path, "q.csv", "id,prompt\na,first question\nb,bad question\n")
    fake_openai.batches.failing = {"bad question"}
    async with console_app(make_settings, tmp_path, clock) as console:
        assert "2 prompts" in await console.say(f"/batch {path}")
        await poll_until_done(console.app, clock)
        files = console.files()
        report = md_of(files)
        assert "## 1 (id: a)" in report and "Echo: first question" in report
        assert "## 2 (id: b)" in report and "**Failed:** The prompt was refused." in report
        lines = jsonl_of(files)
        assert sorted(line["custom_id"] for line in lines) == ["1", "2"]
        assert "1 done, 1 failed, of 2" in console.out.getvalue()


async def test_an_expired_batch_is_delivered_with_the_answers_it_has(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    fake_openai.batches.expire = True
    path = prompts_file(
        tmp_path, "q.jsonl", "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(4))
    )
    async with console_app(make_settings, tmp_path, clock) as console:
        await console.say(f"/batch {path}")
        await poll_until_done(console.app, clock)
        report = md_of(console.files())
        assert "Batch #1 — expired" in report
        assert "Echo: p0" in report and "Echo: p1" in report
        assert report.count("not answered: the batch expired first") == 2
        assert "#1 batch of 4 — expired" in await console.say("/jobs")


async def test_cancel_own_job_and_someone_elses_is_refused(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock) as console:
        await console.say("/batch one prompt")
        bob = Console(console.app, io.StringIO(), tmp_path / "bob", "bob")
        assert "There is no job #1 of yours" in await bob.say("/jobs cancel 1")
        assert "You have no jobs" in await bob.say("/jobs")
        assert "Cancelling batch #1" in await console.say("/jobs cancel 1")
        await poll_until_done(console.app, clock)
        report = md_of(console.files())
        assert "Batch #1 — cancelled" in report
        assert "not answered: the batch was cancelled first" in report
        assert "already cancelled" in await console.say("/jobs cancel 1")


async def test_admins_may_cancel_anyones_job(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(
        make_settings, tmp_path, clock, SWITCHBOARD_ADMINS="console:root"
    ) as console:
        await console.say("/batch one prompt")
        root = Console(console.app, io.StringIO(), tmp_path / "root", "root")
        assert "Cancelling batch #1" in await root.say("/jobs cancel 1")


async def test_bad_input_and_an_estimate_over_budget_upload_nothing(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    csv_file = prompts_file(tmp_path, "q.csv", "prompt,tag\nfine,x\n,y\nalso fine,z\n")
    no_column = prompts_file(tmp_path, "n.csv", "question\nhello\n")
    broken = prompts_file(tmp_path, "b.jsonl", '{"prompt": "ok"}\nnot json\n')
    async with console_app(make_settings, tmp_path, clock) as console:
        assert "line 3: the prompt is empty" in await console.say(f"/batch {csv_file}")
        assert 'needs a header row with a "prompt" column' in await console.say(
            f"/batch {no_column}"
        )
        assert "line 2: not valid JSON" in await console.say(f"/batch {broken}")
        many = prompts_file(tmp_path, "m.csv", "prompt\n" + "fine\n,x\n" * 12)
        said = await console.say(f"/batch {many}")
        assert "I can't send that batch:\n• line 3: the prompt is empty." in said
        assert "• line 21: the prompt is empty." in said  # the tenth problem
        assert "line 23" not in said
        assert said.rstrip().endswith("• … and 2 more")
        assert "Send /batch with one prompt a line" in await console.say("/batch")
        await console.app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.TOTAL, 1))
        said = await console.say("/batch a prompt that costs more than a micro-dollar")
        assert "could cost up to $" in said
        assert "more than $0.000001 left of your total budget of $0.000001" in said
        assert not fake_openai.batches.files
        assert "You have no jobs" in await console.say("/jobs")


async def test_a_batch_from_lines_in_telegram_with_its_status_message_edited_and_files_sent(
    make_settings: SettingsFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    def make_app(**values: object) -> AbstractAsyncContextManager[App]:
        return bootstrap(make_settings(**values), clock=clock)

    with FakeTelegram() as telegram:
        async with telegram_running(make_app, telegram) as app:
            telegram.private_message(USER, "/batch first line\nsecond line")
            await eventually(
                lambda: any("Batch #1 sent: 2 prompts" in m.text for m in telegram.chat(USER))
            )
            await poll_until_done(app, clock)
            edits = [c.params["text"] for c in telegram.calls_to("editMessageText")]
            assert any("in progress" in e for e in edits) and any("completed" in e for e in edits)
            documents = {
                c.params["document"].filename: c.params["document"].content
                for c in telegram.calls_to("sendDocument")
            }
            assert set(documents) == {"batch-1-results.md", "batch-1-results.jsonl"}
            assert b"Echo: second line" in documents["batch-1-results.md"]

            # A file with /batch as its caption.
            telegram.document_message(
                USER, b"alpha\nbeta\ngamma\n", file_name="p.txt", caption="/batch"
            )
            await eventually(
                lambda: any("Batch #2 sent: 3 prompts" in m.text for m in telegram.chat(USER))
            )
            await poll_until_done(app, clock)
            assert len(telegram.calls_to("sendDocument")) == 4


@pytest.mark.slow
async def test_two_processes_on_one_database_deliver_a_job_once(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    database_url: str,
) -> None:
    async with (
        console_app(make_settings, tmp_path, clock, name="one", DATABASE_URL=database_url) as one,
        console_app(make_settings, tmp_path, clock, name="two", DATABASE_URL=database_url) as two,
    ):
        for n in range(3):
            await one.say(f"/batch prompt {n}")
        for _ in range(8):
            clock.advance()
            await asyncio.gather(one.app.batches.poll_once(), two.app.batches.poll_once())
        delivered = {**one.files(), **two.files()}
        reports = sorted(v.splitlines()[0] for k, v in delivered.items() if k.endswith(".md"))
        assert reports == [f"# Batch #{n} — completed" for n in (1, 2, 3)]
        assert len(delivered) == 6  # each job's two files, sent once
        async with one.app.storage.database.connect() as connection:
            kinds = (await connection.execute(text("SELECT kind FROM usage"))).scalars().all()
        assert kinds == ["batch"] * 3


@pytest.mark.slow
async def test_a_batch_from_a_slack_slash_command(
    make_settings: SettingsFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    def make_app(**values: object) -> AbstractAsyncContextManager[App]:
        return bootstrap(make_settings(**values), clock=clock)

    with FakeSlack() as slack:
        dm = slack.dm_channel(ADA)
        async with slack_running(make_app, slack) as bot:
            await slack.slash_command(bot.url, "/batch", "north\nsouth", user_id=ADA, channel_id=dm)
            await eventually(lambda: len(slack.responses) == 1)
            assert "Batch #1 sent: 2 prompts" in str(slack.responses[0].payload)
            await poll_until_done(bot.app, clock)
            await eventually(lambda: len([f for f in slack.uploads if f.channel == dm]) == 2)
            uploads = {f.name: f.content for f in slack.uploads if f.channel == dm}
            assert b"Echo: south" in uploads["batch-1-results.md"]
            updates = [str(c.params.get("text")) for c in slack.calls_to("chat.update")]
            assert any("completed" in update for update in updates)

            # A .csv file shared in the DM with /batch as its message.
            prompts = slack.add_file("q.csv", b"prompt,topic\nwind,weather\n", "text/csv", user=ADA)
            await slack.deliver_event(bot.url, slack.dm(ADA, "/batch", files=[prompts]))
            await eventually(lambda: "Batch #2 sent: 1 prompt" in str(slack.messages(dm)))
            await poll_until_done(bot.app, clock)
            await eventually(lambda: len([f for f in slack.uploads if f.channel == dm]) == 4)
            uploads = {f.name: f.content for f in slack.uploads if f.channel == dm}
            assert b"## 1 (topic: weather)" in uploads["batch-2-results.md"]


@pytest.mark.slow
def test_the_shell_lists_and_cancels_jobs(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}",
    }
    chat = switchboard(env, tmp_path, "chat", "--user", "ada", stdin="/batch how are you\n")
    assert "Batch #1 sent: 1 prompt" in chat.stdout, chat.stderr
    listed = switchboard({**env, "OPENAI_API_KEY": ""}, tmp_path, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("#1 ")]
    assert "batch" in row and "console:ada" in row
    assert switchboard(env, tmp_path, "jobs", "list", "console:bob").stdout.strip() == "no jobs"
    cancelled = switchboard(env, tmp_path, "jobs", "cancel", "1")
    assert "Cancelling batch #1" in cancelled.stdout, cancelled.stderr
    (batch,) = fake_openai.batches.batches.values()
    assert batch.status == "cancelling"


async def test_an_unreadable_result_file_is_reported_once_and_the_job_closed(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    fake_openai.batches.corrupt_output = True
    async with console_app(make_settings, tmp_path, clock) as console:
        await console.say("/batch a question")
        await poll_until_done(console.app, clock)
        files = console.files()
        assert len(files) == 1  # the report; there are no raw lines to send
        assert "could not be shown: its result files could not be read" in md_of(files)
        assert "Problem: its result files could not be read" in console.out.getvalue()
        said = await console.say("/jobs")
        assert "completed" in said and "its result files could not be read" in said


WEBHOOK_KEY = b"a webhook signing key of the test"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()


def signed(payload: bytes, webhook_id: str, key: bytes = WEBHOOK_KEY) -> dict[str, str]:
    """Standard Webhooks headers, as OpenAI signs a delivery."""
    timestamp = str(int(time.time()))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + payload, hashlib.sha256)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
        "content-type": "application/json",
    }


async def assert_one_poll_per_signed_delivery(
    http: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    webhook_id: str,
    reads: Callable[[], int],
    console: Console,
    update: str,
) -> None:
    """A forged webhook is refused and polls nothing; a signed one polls the job at once
    (the ``update`` is printed); the same delivery again polls nothing more."""
    forged = signed(payload, webhook_id, key=b"some other key")
    async with http.post(url, data=payload, headers=forged) as response:
        assert response.status == 400
    assert reads() == 0
    async with http.post(url, data=payload, headers=signed(payload, webhook_id)) as response:
        assert response.status == 200
    assert reads() == 1  # polled at once, though no poll was due
    assert update in console.out.getvalue()
    async with http.post(url, data=payload, headers=signed(payload, webhook_id)) as response:
        assert response.status == 200
    assert reads() == 1  # the same delivery again: nothing more


async def test_a_signed_webhook_polls_its_batch_at_once_and_bad_or_repeated_ones_do_not(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    async with console_app(
        make_settings, tmp_path, clock, OPENAI_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SWITCHBOARD_HTTP_PORT=port,
    ) as console:  # fmt: skip
        await console.say("/batch a prompt")
        (batch,) = fake_openai.batches.batches.values()

        def reads() -> int:
            return len([r for r in fake_openai.requests if r.path == f"/v1/batches/{batch.id}"])

        app = console.app
        payload = json.dumps(
            {
                "id": "evt_1",
                "object": "event",
                "created_at": int(time.time()),
                "type": "batch.completed",
                "data": {"id": batch.id},
            }
        ).encode()
        url = f"http://127.0.0.1:{port}/openai/webhooks"
        async with (
            operations_server(
                port, app.storage.database, app.metrics.registry, {},
                routes=webhook_routes(app.batches),
            ),
            aiohttp.ClientSession() as http,
        ):  # fmt: skip
            await assert_one_poll_per_signed_delivery(
                http, url, payload, "wh_1", reads, console, "[#1 updated] Batch #1: in progress"
            )


async def test_a_job_whose_poller_died_is_taken_over_when_its_lease_runs_out(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock) as console:
        await console.say("/batch a question")
        jobs = SqlJobStore(console.app.storage.database)
        # A process that took the job's lease and was killed: its lease is left behind.
        now = clock.now()
        assert await jobs.lease(1, "killed-process", now + timedelta(seconds=LEASE_SECONDS), now)
        for _ in range(3):
            clock.advance(LEASE_SECONDS / 4)
            assert await console.app.batches.poll_once() == 0
        assert not console.files()
        clock.advance(LEASE_SECONDS)
        await poll_until_done(console.app, clock)
        assert len(console.files()) == 2
        await poll_until_done(console.app, clock)
        assert len(console.files()) == 2


async def test_results_that_cannot_be_sent_leave_the_job_closed_charged_and_visible(
    make_settings: SettingsFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    def make_app(**values: object) -> AbstractAsyncContextManager[App]:
        return bootstrap(make_settings(**values), clock=clock)

    with FakeTelegram() as telegram:
        async with telegram_running(make_app, telegram) as app:
            telegram.private_message(USER, "/batch only one")
            await eventually(lambda: any("Batch #1 sent" in m.text for m in telegram.chat(USER)))
            telegram.fail_next("sendDocument", 403, "Forbidden: bot was blocked by the user")
            await poll_until_done(app, clock)
            await poll_until_done(app, clock)
            assert len(telegram.calls_to("sendDocument")) == 1  # tried once, not again
            (job,) = await SqlJobStore(app.storage.database).jobs()
            assert job.status == "completed"
            assert job.error is not None and "could not be sent" in job.error
            async with app.storage.database.connect() as connection:
                kinds = (await connection.execute(text("SELECT kind FROM usage"))).scalars()
                assert list(kinds) == ["batch"]
