"""Batch jobs under real faults: a ``switchboard run`` process killed with SIGKILL while a
job is open, while its results are being sent and while its batch is being created, then
restarted on the same database; a create whose connection drops after the API took it;
two processes polling the same jobs on one database; and the upload of a large request
file part by part through the Uploads API. The real SDKs run against the loopback fakes
of OpenAI, Telegram and Slack."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.conversation.messages import UserRef
from core.jobs.openai_batches import OpenAIBatches
from core.models.llm import Usage
from core.models.registry import load_registry
from core.money.pricing import token_cost
from tests.conftest import API_KEY, SettingsFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.processes import process_env, until
from tests.test_batches import MODEL, SteppingClock, console_app, md_of, poll_until_done
from tests.test_console import SWITCHBOARD
from tests.test_slack import ADA
from tests.test_telegram import free_port

USER = 1001


async def query(database_url: str, sql: str) -> list[Any]:
    """Rows of ``sql`` on the database the processes share."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql))).all())
    finally:
        await engine.dispose()


async def job_status(database_url: str) -> str | None:
    rows = await query(database_url, "SELECT status FROM jobs ORDER BY id")
    return str(rows[0].status) if rows else None


def env_for(fake_openai: FakeOpenAI, database_url: str) -> dict[str, str]:
    return process_env(fake_openai, database_url, SWITCHBOARD_JOBS_POLL_SECONDS="1")


@asynccontextmanager
async def bot(
    env: dict[str, str], cwd: Path, channel: str, **values: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``switchboard run <channel>`` process; stopped with SIGTERM at the end unless the
    test killed it. Its log goes to a file, so a full pipe never stalls it."""
    log = (cwd / f"{channel}-{secrets.token_hex(4)}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        SWITCHBOARD, "run", channel, env={**env, **values}, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        log.close()


async def kill(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    await process.wait()


def telegram_values(telegram: FakeTelegram) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
        "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
    }


def documents(telegram: FakeTelegram) -> list[str]:
    return sorted(c.params["document"].filename for c in telegram.calls_to("sendDocument"))


def batch_cost(input_tokens: int, output_tokens: int) -> int:
    """What a batch of this usage costs: the model's token prices, halved, rounded up."""
    spec = load_registry().models[MODEL]
    full = token_cost(spec.prices, Usage(input_tokens, 0, output_tokens))
    return -(-full // 2)


async def set_default_budget(env: dict[str, str], cwd: Path) -> None:
    """$10 in total for each user, set from the shell: the batch's estimate is held in it."""
    process = await asyncio.create_subprocess_exec(
        SWITCHBOARD, "quota", "set", "default", "10", "total", env=env, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await process.wait() == 0


async def budget_spent_and_held(database_url: str) -> tuple[int, int]:
    rows = await query(database_url, "SELECT spent_micros, reserved_micros FROM budget_counters")
    assert rows, "the budget was never charged"
    return sum(r.spent_micros for r in rows), sum(r.reserved_micros for r in rows)


async def assert_charged_once(database_url: str, fake_openai: FakeOpenAI) -> None:
    """One usage row at batch prices, and the budget charged that much, nothing held."""
    (batch,) = fake_openai.batches.batches.values()
    rows = await query(
        database_url, "SELECT kind, request_id, cost_micros, input_tokens, output_tokens FROM usage"
    )
    (row,) = rows
    assert (row.kind, row.request_id) == ("batch", batch.id)
    assert (row.input_tokens, row.output_tokens) == (batch.input_tokens, batch.output_tokens)
    assert row.cost_micros == batch_cost(batch.input_tokens, batch.output_tokens)
    assert await budget_spent_and_held(database_url) == (row.cost_micros, 0)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


@pytest.mark.slow
async def test_a_process_killed_while_its_job_is_open_delivers_it_once_after_the_restart(
    tmp_path: Path, fake_openai: FakeOpenAI, database_url: str
) -> None:
    env = env_for(fake_openai, database_url)
    await set_default_budget(env, tmp_path)
    with FakeTelegram() as telegram:
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)) as first:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "/batch first question\nsecond question")
            await until(lambda: any("Batch #1 sent" in m.text for m in telegram.chat(USER)))
            await until(lambda: _is(job_status(database_url), "in_progress"))
            await kill(first)
        assert not telegram.calls_to("sendDocument")
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)):
            await until(lambda: _is(job_status(database_url), "completed"))
            await asyncio.sleep(3)  # more polling rounds: nothing more may go out
    assert documents(telegram) == ["batch-1-results.jsonl", "batch-1-results.md"]
    (report,) = [
        c.params["document"].content
        for c in telegram.calls_to("sendDocument")
        if c.params["document"].filename.endswith(".md")
    ]
    assert b"Echo: first question" in report and b"Echo: second question" in report
    assert len(fake_openai.batches.batches) == 1
    await assert_charged_once(database_url, fake_openai)


@pytest.mark.slow
async def test_a_process_killed_while_sending_the_results_sends_no_file_twice(
    tmp_path: Path, fake_openai: FakeOpenAI, sqlite_url: str
) -> None:
    env = env_for(fake_openai, sqlite_url)
    await set_default_budget(env, tmp_path)
    with FakeTelegram() as telegram:
        # Telegram takes the report, and the bot dies before it hears so.
        telegram.hold_next("sendDocument")
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)) as first:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "/batch one\ntwo\nthree")
            await until(lambda: bool(telegram.calls_to("sendDocument")))
            await kill(first)
        assert await job_status(sqlite_url) == "finalizing"  # not closed: the kill came first
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)):
            await until(lambda: _is(job_status(sqlite_url), "completed"))
            await asyncio.sleep(3)
    # The report went out once (before the kill), the raw lines once (after the restart).
    assert documents(telegram) == ["batch-1-results.jsonl", "batch-1-results.md"]
    edits = [str(c.params["text"]) for c in telegram.calls_to("editMessageText")]
    assert "may not have arrived" in edits[-1]
    (error,) = await query(sqlite_url, "SELECT error FROM jobs")
    assert "batch-1-results.md" in error.error
    await assert_charged_once(sqlite_url, fake_openai)


@pytest.mark.slow
async def test_a_process_stopped_while_sending_the_results_leaves_the_rest_to_the_next(
    tmp_path: Path, fake_openai: FakeOpenAI, sqlite_url: str
) -> None:
    env = env_for(fake_openai, sqlite_url)
    await set_default_budget(env, tmp_path)
    with FakeTelegram() as telegram:
        telegram.hold_next("sendDocument")
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)) as first:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "/batch red\ngreen")
            await until(lambda: bool(telegram.calls_to("sendDocument")))
            first.send_signal(signal.SIGTERM)  # a deploy: the channel stops under the call
            assert await asyncio.wait_for(first.wait(), 30) == 0
        assert await job_status(sqlite_url) == "finalizing"  # left open, not closed failed
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)):
            await until(lambda: _is(job_status(sqlite_url), "completed"))
            await asyncio.sleep(3)
    assert documents(telegram) == ["batch-1-results.jsonl", "batch-1-results.md"]
    await assert_charged_once(sqlite_url, fake_openai)


@pytest.mark.slow
async def test_a_process_killed_while_creating_the_batch_finds_it_after_the_restart(
    tmp_path: Path, fake_openai: FakeOpenAI, sqlite_url: str
) -> None:
    env = env_for(fake_openai, sqlite_url)
    await set_default_budget(env, tmp_path)
    with FakeTelegram() as telegram:
        # OpenAI makes the batch, and the bot dies before it hears its id.
        fake_openai.batches.hold_create = 1
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)) as first:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "/batch north\nsouth")
            await until(lambda: bool(fake_openai.batches.batches))
            await kill(first)
        (row,) = await query(sqlite_url, "SELECT status, openai_id FROM jobs")
        assert (row.status, row.openai_id) == ("submitting", None)
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)):
            await until(lambda: _is(job_status(sqlite_url), "completed"))
            await asyncio.sleep(3)
    (batch,) = fake_openai.batches.batches.values()  # found again, not made twice
    assert batch.metadata is not None and "switchboard_job" in batch.metadata
    (row,) = await query(sqlite_url, "SELECT openai_id FROM jobs")
    assert row.openai_id == batch.id
    assert any(m.text.startswith("Batch #1:") for m in telegram.chat(USER))  # its status
    assert documents(telegram) == ["batch-1-results.jsonl", "batch-1-results.md"]
    await assert_charged_once(sqlite_url, fake_openai)


async def test_a_create_whose_connection_drops_finds_its_batch_and_makes_no_second(
    make_settings: SettingsFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    clock = SteppingClock()
    fake_openai.batches.drop_create = 1
    async with console_app(make_settings, tmp_path, clock) as console:
        said = await console.say("/batch a question")
        assert "Batch #1 sent: 1 prompt" in said
        creates = [r for r in fake_openai.requests if r.path == "/v1/batches"]
        assert [r.method for r in creates] == ["POST", "GET"]  # tried once, then looked up
        (batch,) = fake_openai.batches.batches.values()
        await poll_until_done(console.app, clock)
        assert "Echo: a question" in md_of(console.files())
        (job,) = await console.app.batches.list_jobs(UserRef("console", "ada"))
        assert (job.openai_id, job.status) == (batch.id, "completed")


@pytest.mark.slow
async def test_a_process_killed_while_uploading_closes_the_job_unsent_and_tells_the_user(
    tmp_path: Path, fake_openai: FakeOpenAI, sqlite_url: str
) -> None:
    env = env_for(fake_openai, sqlite_url)
    await set_default_budget(env, tmp_path)
    with FakeTelegram() as telegram:
        fake_openai.batches.hold_upload = 1
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)) as first:
            await until(lambda: bool(telegram.calls_to("getUpdates")))
            telegram.private_message(USER, "/batch east\nwest")
            await until(lambda: bool(fake_openai.batches.files))
            await kill(first)
        async with bot(env, tmp_path, "telegram", **telegram_values(telegram)):
            await until(lambda: _is(job_status(sqlite_url), "failed"))
            await until(lambda: any("not sent" in m.text for m in telegram.chat(USER)))
    assert not fake_openai.batches.batches  # no batch: none was found, none was made
    (row,) = await query(sqlite_url, "SELECT error FROM jobs")
    assert "restarted before the batch was sent" in row.error
    assert await query(sqlite_url, "SELECT id FROM usage") == []
    assert await budget_spent_and_held(sqlite_url) == (0, 0)  # the estimate was released
    (line,) = [m.text for m in telegram.chat(USER) if "not sent" in m.text]
    assert "Please send it again" in line


async def test_an_outage_while_fetching_the_results_delivers_them_at_a_later_poll(
    make_settings: SettingsFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    clock = SteppingClock()
    async with console_app(make_settings, tmp_path, clock) as console:
        await console.say("/batch what is up")
        (batch,) = fake_openai.batches.batches.values()
        while batch.status != "completed":
            clock.advance()
            await console.app.batches.poll_once()
            if batch.status == "finalizing":
                fake_openai.batches.content_outage = 1  # the next read of the results fails
        assert not console.files()  # not delivered, not closed: the job waits
        (job,) = await console.app.batches.list_jobs(UserRef("console", "ada"))
        assert job.status == "finalizing" and job.error is None
        await poll_until_done(console.app, clock)
        assert "Echo: what is up" in md_of(console.files())
        assert len(console.files()) == 2
        (job,) = await console.app.batches.list_jobs(UserRef("console", "ada"))
        assert (job.status, job.error) == ("completed", None)


async def _is(status: Awaitable[str | None], wanted: str) -> bool:
    return await status == wanted


async def test_a_large_request_file_is_uploaded_part_by_part(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [json.dumps({"custom_id": str(n), "body": {"input": "x" * 50}}) for n in range(200)]
    path.write_text("\n".join(lines) + "\n")
    size = path.stat().st_size
    async with AsyncOpenAI(api_key=API_KEY, base_url=fake_openai.base_url, max_retries=0) as client:
        api = OpenAIBatches(client, part_bytes=4096)
        file_id = await api.upload(path)
        small = tmp_path / "small.jsonl"
        small.write_text(lines[0] + "\n")
        small_id = await api.upload(small)
    (upload,) = fake_openai.batches.uploads.values()
    assert upload.status == "completed" and upload.file_id == file_id
    assert len(upload.parts) == -(-size // 4096)
    assert fake_openai.batches.largest_part <= 4096
    assert fake_openai.batches.files[file_id].data == path.read_bytes()
    assert fake_openai.batches.files[file_id].purpose == "batch"
    # A file of one part goes in one request, as before.
    assert fake_openai.batches.files[small_id].data == small.read_bytes()
    paths = [r.path for r in fake_openai.requests]
    assert paths.count("/v1/files") == 1 and paths.count("/v1/uploads") == 1


@pytest.mark.slow
async def test_two_processes_on_one_database_poll_and_deliver_each_job_once(
    tmp_path: Path, fake_openai: FakeOpenAI, database_url: str
) -> None:
    env = env_for(fake_openai, database_url)
    with FakeSlack() as slack:
        dm = slack.dm_channel(ADA)
        ports = (free_port(), free_port())
        values = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
            "SLACK_API_URL": slack.api_url,
        }
        # One after the other: two processes migrating one fresh PostgreSQL database at
        # once collide (a finding of this test, outside the jobs' code).
        async with bot(env, tmp_path, "slack", **values, SLACK_PORT=str(ports[0])):
            await until(lambda: _listening(ports[0]))
            async with bot(env, tmp_path, "slack", **values, SLACK_PORT=str(ports[1])):
                await until(lambda: _listening(ports[1]))
                await submit_and_deliver(slack, dm, ports)
                await until(lambda: _all_completed(database_url), 60)
                await asyncio.sleep(3)  # more rounds by both: nothing more may go out
        names = sorted(f.name for f in slack.uploads if f.channel == dm)
        assert names == sorted(
            f"batch-{n}-results.{ext}" for n in range(1, JOBS + 1) for ext in ("md", "jsonl")
        )
        rows = await query(database_url, "SELECT kind FROM usage")
        assert [row.kind for row in rows] == ["batch"] * JOBS
        statuses = await query(database_url, "SELECT status FROM jobs")
        assert {row.status for row in statuses} == {"completed"}
    # Each job closed by exactly one of the two processes (their logs say which).
    assert sorted(closed_in_logs(tmp_path)) == list(range(1, JOBS + 1))


JOBS = 6


async def submit_and_deliver(slack: FakeSlack, dm: str, ports: tuple[int, int]) -> None:
    """Submit ``JOBS`` batches, alternately to each process, and wait for their results."""
    for n in range(JOBS):
        url = f"http://127.0.0.1:{ports[n % 2]}/slack/events"
        await slack.slash_command(url, "/batch", f"question {n}", user_id=ADA, channel_id=dm)
    await until(lambda: len([f for f in slack.uploads if f.channel == dm]) >= 2 * JOBS, 90)


async def _all_completed(database_url: str) -> bool:
    rows = await query(database_url, "SELECT status FROM jobs")
    return len(rows) == JOBS and {row.status for row in rows} == {"completed"}


def closed_in_logs(folder: Path) -> list[int]:
    """The jobs each process's log says it delivered and closed."""
    return [
        int(match)
        for log in folder.glob("slack-*.log")
        for match in re.findall(r"batch #(\d+) completed: delivered", log.read_text())
    ]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
