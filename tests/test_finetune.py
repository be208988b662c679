"""Fine-tuning jobs end to end: the real OpenAI SDK against the fake fine-tuning API, the
console, Telegram and Slack channels, the SQL job store. Validation by line before anything
is uploaded, success (one edited status message, the model persisted and chosen with /model
in a new app on the same database, answering), failure, cancellation, the API refusing new
jobs, the switch off, non-admins refused, and webhooks."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import openai
import pytest
from sqlalchemy import text

from bots.bootstrap import App, bootstrap
from bots.openai_webhooks import webhook_routes
from bots.ops import operations_server
from bots.scheduler import poll_jobs
from core.conversation.messages import ConversationKey
from core.errors import ConfigError
from core.jobs.sql_jobs import SqlJobStore
from core.jobs.store import LEASE_SECONDS
from core.jobs.training import TrainingFileError, check_training_file
from core.metrics_prometheus import PrometheusMetrics
from core.models.registry import load_registry
from core.money.budgets import Budget, Payer, Scope, place_of
from core.money.periods import Period
from tests.conftest import API_KEY, SettingsFactory
from tests.fakes.openai_finetune import Refusal
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.test_batches import (
    WEBHOOK_SECRET,
    Console,
    SteppingClock,
    assert_one_poll_per_signed_delivery,
    console_app,
)
from tests.test_console import switchboard
from tests.test_slack import ADA
from tests.test_slack import running as slack_running
from tests.test_telegram import USER, eventually, free_port
from tests.test_telegram import running as telegram_running

ADMIN = "console:ada"
BASE = "gpt-4.1-mini"  # the registry's default base for fine-tuning (defaults.fine_tune)
TRAINING_PRICE = 5_000_000  # gpt-4.1-mini, micro-dollars per 1M training tokens
AppFactory = Callable[..., AbstractAsyncContextManager[App]]


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def make_app(make_settings: SettingsFactory, clock: SteppingClock) -> AppFactory:
    def make(**values: object) -> AbstractAsyncContextManager[App]:
        return bootstrap(make_settings(**values), clock=clock)

    return make


async def finetune_from_telegram(telegram: FakeTelegram) -> None:
    """The admin ``USER`` sends a training file with /finetune; returns once it started."""
    telegram.document_message(USER, training_bytes(), file_name="train.jsonl", caption="/finetune")
    await eventually(lambda: any("Fine-tune #1 started" in m.text for m in telegram.chat(USER)))


def example(n: int) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": "You answer like a pirate."},
            {"role": "user", "content": f"Question number {n}?"},
            {"role": "assistant", "content": f"Arr, answer number {n}!"},
        ]
    }


def training_bytes(count: int = 12) -> bytes:
    return "".join(json.dumps(example(n)) + "\n" for n in range(count)).encode()


def training_file(tmp_path: Path, count: int = 12, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(training_bytes(count))
    return path


async def poll_until_done(app: App, clock: SteppingClock, rounds: int = 8) -> None:
    for _ in range(rounds):
        clock.advance()
        await app.finetunes.poll_once()


def uploads(fake: FakeOpenAI) -> list[str]:
    return [f.purpose for f in fake.batches.files.values()]


async def usage_rows(app: App) -> list[tuple[str, str, int, int, str]]:
    async with app.storage.database.connect() as connection:
        rows = await connection.execute(
            text("SELECT kind, model, input_tokens, cost_micros, request_id FROM usage")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_problems_are_reported_by_line_and_nothing_is_uploaded(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    good = json.dumps(example(0))
    lines = [
        good,
        "not json at all",
        json.dumps({"messages": [{"role": "bot", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"prompt": "no messages"}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}),
    ]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        said = await console.say(f"/finetune {broken}")
        assert "nothing was uploaded" in said
        assert "line 1:" not in said
        assert "line 2: not valid JSON" in said
        assert 'line 3: message 1 has role "bot"; use system, user, assistant or tool' in said
        assert "line 3: no assistant message" in said
        assert "line 4: no assistant message" in said
        assert 'line 5: needs a "messages" list' in said
        assert "line 6: message 2 has no text content" in said

        few = training_file(tmp_path, count=3, name="few.jsonl")
        said = await console.say(f"/finetune {few}")
        assert "the file has 3 examples; fine-tuning needs at least 10" in said

        wrong_kind = tmp_path / "train.csv"
        wrong_kind.write_text("prompt\nhello\n")
        assert "I can't fine-tune on 'train.csv'" in await console.say(f"/finetune {wrong_kind}")
        assert "Send a .jsonl training file" in await console.say("/finetune")

        assert uploads(fake_openai) == []
        assert not fake_openai.fine_tuning.jobs
        assert "No fine-tuning jobs yet" in await console.say("/finetune status")


async def test_a_fine_tune_succeeds_and_a_new_app_offers_and_answers_with_its_model(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    path = training_file(tmp_path)
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        said = await console.say(f"/finetune {path}")
        assert "Fine-tune #1 started: 12 examples" in said
        assert f"x 3 epochs on {BASE}, estimated $" in said
        (job,) = fake_openai.fine_tuning.jobs.values()
        assert (job.model, job.epochs) == (BASE, 3)
        assert fake_openai.batches.files[job.training_file].purpose == "fine-tune"
        assert fake_openai.batches.files[job.training_file].data == path.read_bytes()
        assert "[#1] Fine-tune #1 of gpt-4.1-mini: validating the file" in console.out.getvalue()

        await poll_until_done(console.app, clock)
        printed = console.out.getvalue()
        assert "[#1 updated] Fine-tune #1 of gpt-4.1-mini: training" in printed
        assert "• Step 3/6: training loss=" in printed  # the latest events, relayed
        assert job.fine_tuned_model is not None
        name = job.fine_tuned_model
        assert f"Model: {name}" in printed
        assert printed.count(f"Fine-tune #1 succeeded: {name} is ready") == 1
        assert name in console.app.registry.models

        # Charged once, at the training price, for the tokens the API trained on.
        assert job.trained_tokens is not None
        cost = -(-job.trained_tokens * TRAINING_PRICE // 1_000_000)
        assert await usage_rows(console.app) == [
            ("fine_tune", BASE, job.trained_tokens, cost, job.id)
        ]
        assert job.training_file not in fake_openai.batches.files  # deleted once final
        await poll_until_done(console.app, clock, rounds=2)
        assert console.out.getvalue().count("succeeded: ") == 1
        assert len(await usage_rows(console.app)) == 1
        status = await console.say("/finetune status")
        assert f"#1 {BASE} → {name} — succeeded" in status

    # A new process on the same database offers the model, and it answers.
    async with console_app(
        make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN, name="two", user="bob"
    ) as later:
        spec = later.app.registry.models[name]
        base = later.app.registry.models[BASE]
        assert (spec.shutdown, spec.successor, spec.prices) == (
            base.shutdown,
            base.successor,
            base.prices,
        )
        # (One console session: a session's end stops the channel's turns in this app.)
        said = await later.say("/model", f"/model {name}", "Ahoy there")
        assert f"• {name}" in said
        assert "Model set to GPT-4.1 mini fine-tune" in said
        assert "Echo: Ahoy there" in said
        assert fake_openai.model_requests()[-1].body["model"] == name


async def test_a_failed_job_is_reported_once_with_its_error_and_charges_nothing(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fine_tuning.fail_with = "The training loss diverged."
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        await poll_until_done(console.app, clock)
        await poll_until_done(console.app, clock)
        printed = console.out.getvalue()
        assert printed.count("Fine-tune #1 failed: The training loss diverged.") == 1
        assert "Error: The training loss diverged." in printed  # the status message
        (job,) = await SqlJobStore(console.app.storage.database).jobs()
        assert (job.status, job.error) == ("failed", "The training loss diverged.")
        assert await usage_rows(console.app) == []
        assert not [m for m in console.app.registry.models if m.startswith("ft:")]
        assert "#1 gpt-4.1-mini — failed — " in await console.say("/finetune status")
        assert uploads(fake_openai) == []  # the training file was deleted


async def test_a_cancelled_job_is_reported_once(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        assert "Cancelling fine-tune #1" in await console.say("/finetune cancel 1")
        await poll_until_done(console.app, clock)
        assert console.out.getvalue().count("Fine-tune #1 was cancelled") == 1
        assert "already cancelled" in await console.say("/finetune cancel 1")
        (job,) = await SqlJobStore(console.app.storage.database).jobs()
        assert job.status == "cancelled"
        assert await usage_rows(console.app) == []
        assert uploads(fake_openai) == []  # the training file was deleted


@pytest.mark.parametrize("status", [400, 403])
async def test_when_the_api_refuses_new_jobs_the_admin_is_told_once_and_old_models_work(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    status: int,
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        await poll_until_done(console.app, clock)
        (made,) = fake_openai.fine_tuning.models

        fake_openai.fine_tuning.refuse_creation = Refusal(status=status)
        said = await console.say(f"/finetune {training_file(tmp_path)}")
        assert "OpenAI refused fine-tune #2: " in said
        assert "stopped accepting new fine-tuning jobs on 2027-01-06" in said
        assert "Nothing was charged" in said
        assert len(fake_openai.fine_tuning.jobs) == 1
        assert uploads(fake_openai) == []  # both training files deleted
        job = await SqlJobStore(console.app.storage.database).job(2)
        assert job is not None and job.status == "refused" and job.error
        await poll_until_done(console.app, clock)
        assert len(await usage_rows(console.app)) == 1  # the first job's only
        assert "#2 gpt-4.1-mini — refused by the API" in await console.say("/finetune status")

    # The model made before keeps answering (in a new session: see above).
    async with console_app(make_settings, tmp_path, clock, name="two") as later:
        said = await later.say(f"/model {made}", "still here?")
        assert "Echo: still here?" in said
        assert fake_openai.model_requests()[-1].body["model"] == made


async def test_the_switch_off_refuses_new_jobs_in_one_line(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(
        make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN, SWITCHBOARD_FINETUNE="off"
    ) as console:
        said = await console.say(f"/finetune {training_file(tmp_path)}")
        assert "Fine-tuning is switched off on this bot (SWITCHBOARD_FINETUNE=off)" in said
        assert uploads(fake_openai) == []
        assert await SqlJobStore(console.app.storage.database).jobs() == []


async def test_non_admins_are_refused(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        bob = Console(console.app, io.StringIO(), tmp_path / "bob", "bob")
        assert "Only admins can fine-tune models." in await bob.say(
            f"/finetune {training_file(tmp_path)}"
        )
        assert "Only admins can fine-tune models." in await bob.say("/finetune status")
        assert uploads(fake_openai) == []


async def test_a_signed_webhook_polls_its_job_at_once_and_a_repeated_one_does_not(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    async with console_app(
        make_settings,
        tmp_path,
        clock,
        SWITCHBOARD_ADMINS=ADMIN,
        OPENAI_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SWITCHBOARD_HTTP_PORT=port,  # the operations server, as below
    ) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        (job,) = fake_openai.fine_tuning.jobs.values()

        def reads() -> int:
            path = f"/v1/fine_tuning/jobs/{job.id}"
            return len([r for r in fake_openai.requests if r.path == path])

        app = console.app
        payload = json.dumps(
            {
                "id": "evt_ft_1",
                "object": "event",
                "created_at": int(time.time()),
                "type": "fine_tuning.job.succeeded",
                "data": {"id": job.id},
            }
        ).encode()
        url = f"http://127.0.0.1:{port}/openai/webhooks"
        async with (
            operations_server(
                port, app.storage.database, app.metrics.registry, {},
                routes=webhook_routes(app.batches, app.finetunes),
            ),
            aiohttp.ClientSession() as http,
        ):  # fmt: skip
            await assert_one_poll_per_signed_delivery(
                http,
                url,
                payload,
                "wh_ft_1",
                reads,
                console,
                "[#1 updated] Fine-tune #1 of gpt-4.1-mini: queued",
            )


async def test_a_fine_tune_from_a_telegram_document(
    make_app: AppFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    with FakeTelegram() as telegram:
        async with telegram_running(
            make_app, telegram, SWITCHBOARD_ADMINS=f"telegram:{USER}"
        ) as app:
            await finetune_from_telegram(telegram)
            await poll_until_done(app, clock)
            (job,) = fake_openai.fine_tuning.jobs.values()
            edits = [c.params["text"] for c in telegram.calls_to("editMessageText")]
            assert any("training" in e for e in edits)
            assert any(f"Model: {job.fine_tuned_model}" in e for e in edits)
            await eventually(
                lambda: any("Fine-tune #1 succeeded" in m.text for m in telegram.chat(USER))
            )


@pytest.mark.slow
async def test_a_fine_tune_from_a_file_shared_in_slack(
    make_app: AppFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    with FakeSlack() as slack:
        dm = slack.dm_channel(ADA)
        async with slack_running(make_app, slack, SWITCHBOARD_ADMINS=f"slack:{ADA}") as bot:
            shared = slack.add_file("train.jsonl", training_bytes(), "application/jsonl", user=ADA)
            await slack.deliver_event(bot.url, slack.dm(ADA, "/finetune", files=[shared]))
            await eventually(lambda: "Fine-tune #1 started" in str(slack.messages(dm)))
            await poll_until_done(bot.app, clock)
            await eventually(lambda: "Fine-tune #1 succeeded" in str(slack.messages(dm)))
            updates = [str(c.params.get("text")) for c in slack.calls_to("chat.update")]
            assert any("succeeded" in update for update in updates)
            await slack.slash_command(bot.url, "/finetune", "status", user_id=ADA, channel_id=dm)
            await eventually(lambda: len(slack.responses) == 1)
            assert "#1 gpt-4.1-mini → ft:" in str(slack.responses[0].payload)


async def test_an_estimate_over_budget_uploads_nothing(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.TOTAL, 1))
        said = await console.say(f"/finetune {training_file(tmp_path)}")
        assert "12 examples" in said and "estimated $" in said
        assert "budget" in said and "Fine-tune #" not in said
        assert uploads(fake_openai) == []
        assert await SqlJobStore(console.app.storage.database).jobs() == []


@pytest.mark.slow
async def test_two_processes_on_one_database_close_a_job_once_and_both_offer_its_model(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    database_url: str,
) -> None:
    settings = {"DATABASE_URL": database_url, "SWITCHBOARD_ADMINS": ADMIN}
    async with (
        console_app(make_settings, tmp_path, clock, name="one", **settings) as one,
        console_app(make_settings, tmp_path, clock, name="two", **settings) as two,
    ):
        await one.say(f"/finetune {training_file(tmp_path)}")
        for _ in range(8):
            clock.advance()
            await asyncio.gather(one.app.finetunes.poll_once(), two.app.finetunes.poll_once())
        (name,) = fake_openai.fine_tuning.models
        told = one.out.getvalue() + two.out.getvalue()
        assert told.count("Fine-tune #1 succeeded") == 1
        assert len(await usage_rows(one.app)) == 1
        # Whichever process closed it, the other offers the model after its next round.
        await two.app.finetunes.poll_once()
        await one.app.finetunes.poll_once()
        assert name in one.app.registry.models and name in two.app.registry.models


class Counting:
    """A kind of job whose polling rounds are counted, and fail when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.rounds = 0
        self.fail = fail

    async def poll_once(self) -> int:
        self.rounds += 1
        if self.fail:
            raise RuntimeError("the API is down")
        return 1


async def test_one_kind_of_job_failing_to_poll_does_not_stop_the_others() -> None:
    broken, fine = Counting(fail=True), Counting()
    poll = poll_jobs(broken, fine)
    assert await poll() == 1
    assert await poll() == 1
    assert (broken.rounds, fine.rounds) == (2, 2)


async def test_a_fine_tuned_model_retires_with_its_base_model(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        await poll_until_done(console.app, clock)
        (name,) = fake_openai.fine_tuning.models
        shutdown = console.app.registry.models[BASE].shutdown
        successor = console.app.registry.models[BASE].successor
    assert shutdown is not None and successor is not None
    clock.moment = datetime.combine(shutdown, datetime.min.time(), UTC) + timedelta(days=1)
    async with console_app(make_settings, tmp_path, clock, name="later") as later:
        said = await later.say("/model", f"/model {name}")
        assert f"• {name}" not in said  # no longer offered
        title = later.app.registry.models[successor].title
        assert f"Model set to {title}" in said  # its conversations go to the successor


async def test_the_fake_fine_tuning_api_answers_like_openai(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake_openai.base_url, max_retries=0)
    async with client:
        uploaded = await client.files.create(
            file=("train.jsonl", training_bytes()), purpose="fine-tune"
        )
        with pytest.raises(openai.BadRequestError, match="not available for fine-tuning"):
            await client.fine_tuning.jobs.create(model="gpt-6-luna", training_file=uploaded.id)
        job = await client.fine_tuning.jobs.create(model=BASE, training_file=uploaded.id)
        assert (job.status, job.hyperparameters.n_epochs) == ("validating_files", 3)
        while job.status != "succeeded":
            job = await client.fine_tuning.jobs.retrieve(job.id)
        assert job.fine_tuned_model and job.fine_tuned_model.startswith(f"ft:{BASE}:")
        events = await client.fine_tuning.jobs.list_events(job.id, limit=2)
        assert events.data[0].message == "The job has successfully completed"
        assert len(events.data) == 2 and events.has_more
        listed = await client.fine_tuning.jobs.list()
        assert [j.id for j in listed.data] == [job.id]
        deleted = await client.files.delete(uploaded.id)
        assert (deleted.id, deleted.deleted) == (uploaded.id, True)
        with pytest.raises(openai.NotFoundError, match="No such File object"):
            await client.files.delete(uploaded.id)
        with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
            await client.fine_tuning.jobs.cancel(job.id)
        with pytest.raises(openai.NotFoundError):
            await client.fine_tuning.jobs.retrieve("ftjob-nope")

        answer = await client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "Echo: hi"
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await client.chat.completions.create(
                model=f"ft:{BASE}:someone-else:x:1234", messages=[{"role": "user", "content": "hi"}]
            )


async def test_a_job_whose_poller_died_is_taken_over_when_its_lease_runs_out(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        jobs = SqlJobStore(console.app.storage.database)
        # A process that took the job's lease and was killed: its lease is left behind.
        now = clock.now()
        assert await jobs.lease(1, "killed-process", now + timedelta(seconds=LEASE_SECONDS), now)
        for _ in range(3):
            clock.advance(LEASE_SECONDS / 4)
            assert await console.app.finetunes.poll_once() == 0
        clock.advance(LEASE_SECONDS)
        await poll_until_done(console.app, clock)
        await poll_until_done(console.app, clock)
        assert console.out.getvalue().count("Fine-tune #1 succeeded") == 1
        assert len(await usage_rows(console.app)) == 1


@pytest.mark.slow
def test_the_shell_lists_and_cancels_fine_tunes(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}",
        "SWITCHBOARD_ADMINS": ADMIN,
    }
    path = training_file(tmp_path)
    chat = switchboard(env, tmp_path, "chat", "--user", "ada", stdin=f"/finetune {path}\n")
    assert "Fine-tune #1 started" in chat.stdout, chat.stderr
    listed = switchboard({**env, "OPENAI_API_KEY": ""}, tmp_path, "jobs", "list")
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("#1 ")]
    assert "finetune" in row and ADMIN in row
    cancelled = switchboard(env, tmp_path, "jobs", "cancel", "1")
    assert "Cancelling fine-tune #1" in cancelled.stdout, cancelled.stderr
    (job,) = fake_openai.fine_tuning.jobs.values()
    assert job.status == "cancelled"


def test_the_registry_names_a_fine_tunable_default_and_refuses_one_that_is_not(
    tmp_path: Path,
) -> None:
    registry = load_registry()
    luna = registry.models["gpt-6-luna"]
    assert registry.fine_tune_base(luna) == registry.models[BASE]  # luna cannot be tuned
    assert registry.fine_tune_base(registry.models["gpt-4o"]) == registry.models["gpt-4o"]
    spec = registry.add_fine_tuned("ft:gpt-4o:org:mine:abc", "gpt-4o")
    assert spec is not None and spec.title == "GPT-4o fine-tune mine"
    assert "fine-tuning" not in spec.capabilities
    assert registry.add_fine_tuned("ft:unknown:org:x:1", "no-such-base") is None

    override = tmp_path / "models.toml"
    override.write_text('[defaults]\nfine_tune = "gpt-6-luna"\n')
    with pytest.raises(ConfigError, match=r"defaults\.fine_tune must name a model with the"):
        load_registry(override)


async def test_a_non_admins_telegram_document_is_refused_before_it_is_fetched(
    make_app: AppFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    with FakeTelegram() as telegram:
        async with telegram_running(make_app, telegram, SWITCHBOARD_ADMINS="telegram:999"):
            telegram.document_message(
                USER, training_bytes(), file_name="train.jsonl", caption="/finetune"
            )
            await eventually(
                lambda: any("Only admins can fine-tune" in m.text for m in telegram.chat(USER))
            )
            assert telegram.calls_to("getFile") == []  # nothing asked for, nothing downloaded
            assert uploads(fake_openai) == []


@pytest.mark.slow
async def test_a_non_admins_slack_file_is_refused_before_it_is_fetched(
    make_app: AppFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    with FakeSlack() as slack:
        dm = slack.dm_channel(ADA)
        async with slack_running(make_app, slack, SWITCHBOARD_ADMINS="slack:U0SOMEONE") as bot:
            shared = slack.add_file("train.jsonl", training_bytes(), "application/jsonl", user=ADA)
            await slack.deliver_event(bot.url, slack.dm(ADA, "/finetune", files=[shared]))
            await eventually(lambda: "Only admins can fine-tune" in str(slack.messages(dm)))
            assert slack.downloads == []
            assert slack.calls_to("files.info") == []
            assert uploads(fake_openai) == []


BLOCKED = "Forbidden: bot was blocked by the user"


async def test_an_outcome_the_chat_refused_is_told_by_a_new_app_on_the_same_database(
    make_app: AppFactory, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    def told() -> list[str]:
        return [m.text for m in telegram.chat(USER) if "Fine-tune #1 succeeded:" in m.text]

    admins = f"telegram:{USER}"
    with FakeTelegram() as telegram:
        async with telegram_running(make_app, telegram, SWITCHBOARD_ADMINS=admins) as app:
            await finetune_from_telegram(telegram)
            (trained,) = fake_openai.fine_tuning.jobs.values()
            # The admin has blocked the bot by the time the job ends.
            sent = len(telegram.calls_to("sendMessage"))
            telegram.fail_next("sendMessage", 403, BLOCKED)
            for _ in range(10):
                clock.advance()
                await app.finetunes.poll_once()
                if len(telegram.calls_to("sendMessage")) > sent:
                    break
            assert trained.status == "succeeded"
            assert told() == []
            (job,) = await SqlJobStore(app.storage.database).jobs()
            assert job.status == "running"  # still open: its outcome is not told yet
            assert await usage_rows(app) == []
            assert trained.training_file in fake_openai.batches.files
        # That process stops before its next poll; another one on the database tells it.
        async with telegram_running(make_app, telegram, SWITCHBOARD_ADMINS=admins) as later:
            # (getUpdates was called already: wait for this channel itself.)
            await eventually(lambda: later.outbox.reaches(ConversationKey("telegram", str(USER))))
            clock.advance()
            assert await later.finetunes.poll_once() == 1
            assert told() == [
                f"Fine-tune #1 succeeded: {trained.fine_tuned_model} is ready. "
                f"Choose it with /model {trained.fine_tuned_model}"
            ]
            (job,) = await SqlJobStore(later.storage.database).jobs()
            assert (job.status, job.error) == ("succeeded", None)
            assert len(await usage_rows(later)) == 1
            assert trained.training_file not in fake_openai.batches.files
            clock.advance()
            await later.finetunes.poll_once()
            assert len(told()) == 1


async def test_an_outcome_that_cannot_be_told_for_a_day_closes_the_job_with_the_reason(
    make_app: AppFactory,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.fine_tuning.fail_with = "The training loss diverged."
    with FakeTelegram() as telegram:
        async with telegram_running(
            make_app, telegram, SWITCHBOARD_ADMINS=f"telegram:{USER}"
        ) as app:
            await finetune_from_telegram(telegram)
            (trained,) = fake_openai.fine_tuning.jobs.values()
            sent = len(telegram.calls_to("sendMessage"))
            for _ in range(3):
                telegram.fail_next("sendMessage", 403, BLOCKED)
            jobs = SqlJobStore(app.storage.database)
            for _ in range(10):
                clock.advance()
                await app.finetunes.poll_once()
                if trained.status == "failed":
                    break
            clock.advance()
            await app.finetunes.poll_once()  # tried again: still blocked
            (job,) = await jobs.jobs()
            assert job.status == "running"
            clock.advance(timedelta(days=1).total_seconds())
            await app.finetunes.poll_once()
            (job,) = await jobs.jobs()
            assert job.status == "failed"
            assert job.error == (
                f"The training loss diverged.; its outcome could not be posted: {BLOCKED}"
            )
            assert "— failed — " in await app.finetunes.status()
            assert not any("Fine-tune #1 failed" in m.text for m in telegram.chat(USER))
            assert trained.training_file not in fake_openai.batches.files
            assert await usage_rows(app) == []
            assert len(telegram.calls_to("sendMessage")) == sent + 3  # three tries, no more
            logged = [r for r in caplog.records if "could not tell the outcome" in r.message]
            assert len(logged) == 1  # the first failure; the close is logged on its own


async def test_a_training_file_that_cannot_be_deleted_is_logged_once_and_blocks_nothing(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        await console.say(f"/finetune {training_file(tmp_path)}")
        (trained,) = fake_openai.fine_tuning.jobs.values()
        # Deleted from the account meanwhile (the dashboard): the API answers 404.
        del fake_openai.batches.files[trained.training_file]
        await poll_until_done(console.app, clock)
        await poll_until_done(console.app, clock)
        assert console.out.getvalue().count("Fine-tune #1 succeeded") == 1
        assert len(await usage_rows(console.app)) == 1
        failures = [r for r in caplog.records if "could not delete the training file" in r.message]
        assert len(failures) == 1
        assert trained.training_file in failures[0].message


def tool_example(n: int) -> dict[str, object]:
    """A chat example with a tool call, its result, and a weighted answer."""
    call = {
        "id": f"call_{n}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": f"Port {n}"})},
    }
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"Weather in port {n}?"}]},
            {"role": "assistant", "content": "Arr, let me look.", "weight": 0},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{n}", "content": "Sunny"},
            {"role": "assistant", "content": "Sunny skies, matey!", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    }


def words(text: str) -> int:
    return len(text.split())


def test_the_chat_format_with_tool_calls_weights_and_text_parts_is_accepted() -> None:
    data = "".join(json.dumps(tool_example(n)) + "\n" for n in range(10)).encode()
    checked = check_training_file(data, words)
    assert checked.examples == 10
    # Tool definitions and tool calls are read by the model, so they count as tokens.
    plain = check_training_file(
        "".join(json.dumps(example(n)) + "\n" for n in range(10)).encode(), words
    )
    assert checked.tokens > plain.tokens


def test_format_mistakes_of_tools_and_weights_are_reported_by_line() -> None:
    good = [json.dumps(tool_example(n)) for n in range(10)]
    bad = [
        {
            "messages": [
                {"role": "user", "content": "q", "weight": 1},
                {"role": "assistant", "content": "a"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 2},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 0},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q", "tool_calls": []},
                {"role": "assistant", "content": "a"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "mood": "x"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "prompt": "x",
        },
    ]
    data = "\n".join(good + [json.dumps(item) for item in bad]).encode()
    with pytest.raises(TrainingFileError) as raised:
        check_training_file(data, words)
    said = str(raised.value)
    assert "line 1:" not in said and "line 10:" not in said
    assert "line 11: message 1: weight must be 0 or 1, on assistant messages only" in said
    assert "line 12: message 2: weight must be 0 or 1, on assistant messages only" in said
    assert "line 13: no assistant message to learn from" in said
    assert "line 14: message 1: tool_calls must be a list, on assistant messages only" in said
    assert 'line 15: message 2 has an unknown key "mood"' in said
    assert "line 16: message 1: only non-empty text parts are supported in content" in said
    assert 'line 17: unknown key "prompt"' in said


async def test_an_example_over_the_base_models_training_limit_is_refused_by_line(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    registry = load_registry()
    limit = registry.models[BASE].training_example_tokens
    assert limit is not None and limit < registry.models[BASE].context_window
    lines = [json.dumps(example(n)) for n in range(12)]
    # Far below the context window (about a million tokens) but over the training limit.
    long = example(99)
    long["messages"][1]["content"] = "word " * (limit + 10)  # type: ignore[index]
    lines.insert(4, json.dumps(long))
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines) + "\n")
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        said = await console.say(f"/finetune {path}")
        assert "line 5: " in said and f"more than the model's {limit:,} per example" in said
        assert uploads(fake_openai) == []
        assert not fake_openai.fine_tuning.jobs


async def budget_of(app: App, clock: SteppingClock, job_id: int) -> tuple[int, int]:
    """What the job's payer has spent and has held, in micro-dollars."""
    job = await SqlJobStore(app.storage.database).job(job_id)
    assert job is not None
    payer = Payer(job.payload["user"], place_of(ConversationKey(**job.payload["key"])))
    (status,) = await app.storage.budgets.status(payer, clock.now(), app.settings.zone)
    return status.spent_micros, status.reserved_micros


@pytest.mark.parametrize("fails", [False, True])
async def test_the_estimate_is_held_to_the_micro_dollar_and_settled_or_released(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    fails: bool,
) -> None:
    if fails:
        fake_openai.fine_tuning.fail_with = "The training loss diverged."
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        app = console.app
        await app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.TOTAL, 10**8))
        said = await console.say(f"/finetune {training_file(tmp_path)}")
        job = await SqlJobStore(app.storage.database).job(1)
        assert job is not None
        tokens, epochs = job.payload["tokens"], job.payload["epochs"]
        estimate = -(-tokens * epochs * TRAINING_PRICE // 1_000_000)
        assert job.payload["estimate"] == estimate
        assert f"{tokens:,} tokens x {epochs} epochs" in said
        assert await budget_of(app, clock, 1) == (0, estimate)

        await poll_until_done(app, clock)
        (trained,) = fake_openai.fine_tuning.jobs.values()
        if fails:
            assert await budget_of(app, clock, 1) == (0, 0)
        else:
            assert trained.trained_tokens is not None
            cost = -(-trained.trained_tokens * TRAINING_PRICE // 1_000_000)
            assert cost != estimate  # the fake counts tokens its own way, as the API does
            assert await budget_of(app, clock, 1) == (cost, 0)


async def test_a_job_the_api_no_longer_knows_is_closed_as_failed_after_a_day_and_told_once(
    make_settings: SettingsFactory,
    tmp_path: Path,
    clock: SteppingClock,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        app = console.app
        await app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.TOTAL, 10**8))
        await console.say(f"/finetune {training_file(tmp_path)}")
        (trained,) = fake_openai.fine_tuning.jobs.values()
        del fake_openai.fine_tuning.jobs[trained.id]  # the API answers 404 from now on
        await poll_until_done(app, clock, rounds=3)
        jobs = SqlJobStore(app.storage.database)
        (job,) = await jobs.jobs()
        assert job.status == "validating_files"  # still open: it may mend within the day
        assert await budget_of(app, clock, 1) == (0, job.payload["estimate"])

        clock.advance(timedelta(days=1).total_seconds())
        await poll_until_done(app, clock, rounds=3)
        (job,) = await jobs.jobs()
        assert job.status == "failed"
        assert job.error is not None and job.error.startswith("OpenAI would not say how it is")
        printed = console.out.getvalue()
        assert printed.count("Fine-tune #1 failed: OpenAI would not say how it is") == 1
        assert await budget_of(app, clock, 1) == (0, 0)
        assert await usage_rows(app) == []
        assert "#1 gpt-4.1-mini — failed — " in await console.say("/finetune status")
        logged = [r for r in caplog.records if "will not say how fine-tune #1 is" in r.message]
        assert len(logged) == 1


def test_a_training_file_over_the_upload_limit_is_refused_before_it_is_read() -> None:
    data = training_bytes()
    with pytest.raises(TrainingFileError, match="at most 100 bytes"):
        check_training_file(data, words, max_bytes=100)
    assert check_training_file(data, words, max_bytes=len(data)).examples == 12


async def test_with_the_switch_turned_off_a_running_job_still_ends_and_its_model_is_offered(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        assert "Fine-tune #1 started" in await console.say(f"/finetune {training_file(tmp_path)}")

    # Restarted with SWITCHBOARD_FINETUNE=off on the same database.
    async with console_app(
        make_settings,
        tmp_path,
        clock,
        SWITCHBOARD_ADMINS=ADMIN,
        SWITCHBOARD_FINETUNE="off",
        name="two",
    ) as later:
        await poll_until_done(later.app, clock)
        (trained,) = fake_openai.fine_tuning.jobs.values()
        name = trained.fine_tuned_model
        assert name is not None and name in later.app.registry.models
        assert later.out.getvalue().count(f"Fine-tune #1 succeeded: {name} is ready") == 1
        assert len(await usage_rows(later.app)) == 1
        said = await later.say(f"/finetune {training_file(tmp_path)}", f"/model {name}", "Ahoy")
        assert "Fine-tuning is switched off" in said
        assert "Echo: Ahoy" in said
        assert fake_openai.model_requests()[-1].body["model"] == name
        assert len(fake_openai.fine_tuning.jobs) == 1


async def test_a_job_the_database_cannot_record_is_cancelled_and_its_hold_released(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    async with console_app(make_settings, tmp_path, clock, SWITCHBOARD_ADMINS=ADMIN) as console:
        app = console.app
        await app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.TOTAL, 10**8))
        async with app.storage.database.begin() as connection:
            # The jobs table cannot be written: the job is created at the API, not recorded.
            await connection.execute(text("ALTER TABLE jobs RENAME TO jobs_elsewhere"))
        said = await console.say(f"/finetune {training_file(tmp_path)}")
        assert "could not be recorded (the database failed), so it was cancelled" in said
        assert "Nothing was charged" in said
        (trained,) = fake_openai.fine_tuning.jobs.values()
        assert trained.status == "cancelled"
        assert uploads(fake_openai) == []  # its training file deleted
        payer = Payer(ADMIN, place_of(ConversationKey("console", place="ada")))
        (status,) = await app.storage.budgets.status(payer, clock.now(), app.settings.zone)
        assert (status.spent_micros, status.reserved_micros) == (0, 0)


async def test_the_open_jobs_gauge_counts_open_batches_and_fine_tunes_alike(
    make_settings: SettingsFactory, tmp_path: Path, clock: SteppingClock, fake_openai: FakeOpenAI
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2+2?\nName a colour.\n")
    port = free_port()
    async with console_app(
        make_settings,
        tmp_path,
        clock,
        SWITCHBOARD_ADMINS=ADMIN,
        SWITCHBOARD_HTTP_PORT=port,  # metrics are kept when they are served
    ) as console:
        app = console.app
        assert isinstance(app.metrics, PrometheusMetrics)
        poll = poll_jobs(app.batches, app.finetunes)

        async def open_jobs() -> float:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                body = await response.text()
            (line,) = [x for x in body.splitlines() if x.startswith("switchboard_open_jobs ")]
            return float(line.split()[1])

        async with (
            operations_server(port, app.storage.database, app.metrics.registry, {}),
            aiohttp.ClientSession() as http,
        ):
            assert "Fine-tune #1 started" in await console.say(
                f"/finetune {training_file(tmp_path)}"
            )
            assert "Batch #2 sent: 2 prompts" in await console.say(f"/batch {prompts}")
            clock.advance()
            await poll()
            assert await open_jobs() == 2
            # Both run to their end; the round after counts none open.
            for _ in range(10):
                clock.advance()
                await poll()
            assert len(console.files()) == 2  # the batch's results arrived
            assert "Fine-tune #1 succeeded" in console.out.getvalue()
            assert await open_jobs() == 0


def test_many_problems_are_listed_ten_and_the_rest_counted() -> None:
    data = b"not json\n" * 13
    with pytest.raises(TrainingFileError) as raised:
        check_training_file(data, words)
    message = str(raised.value)
    assert message.startswith("The training file has problems; nothing was uploaded:\n")
    assert "• line 10: not valid JSON" in message
    assert "line 11" not in message
    assert message.endswith("\n• … and 3 more")
