"""``switchboard chat`` and ``switchboard db upgrade`` as a user runs them: a real process,
scripted through a pipe, talking to the fake OpenAI server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI, Scripted

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


@pytest.fixture
def env(fake_openai: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
        "SWITCHBOARD_OPENAI_BACKOFF_SECONDS": "0.01",
    }


def switchboard(
    env: dict[str, str], cwd: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``switchboard`` command to completion."""
    return subprocess.run(
        [SWITCHBOARD, *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def chat(env: dict[str, str], cwd: Path, script: str) -> subprocess.CompletedProcess[str]:
    return switchboard(env, cwd, "chat", "--user", "ada", stdin=script)


def test_scripted_conversation_through_a_pipe(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="Hi Ada, nice to meet you."))
    result = chat(env, tmp_path, "Hello, I am Ada.\n/mode coder\nWhat did I say?\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "Hi Ada, nice to meet you.",
        "Mode set to Code helper.",
        "Echo: What did I say?",
    ]
    second = fake_openai.model_requests()[1].body or {}
    assert "experienced software engineer" in str(second["instructions"])
    assert "Hello, I am Ada." in str(second["input"])


def test_a_new_process_on_the_same_database_remembers(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    first = chat(env, tmp_path, "The password is swordfish.\n/model gpt-4o\n")
    assert first.returncode == 0, first.stderr
    second = chat(env, tmp_path, "What is the password?\n")
    assert second.returncode == 0, second.stderr
    request = fake_openai.model_requests()[-1]
    assert request.path == "/v1/chat/completions"  # the model choice survived too
    messages = (request.body or {})["messages"]
    assert isinstance(messages, list)
    assert [m["content"] for m in messages[1:]] == [
        "The password is swordfish.",
        "Echo: The password is swordfish.",
        "What is the password?",
    ]


def test_help_reset_and_unknown_commands(env: dict[str, str], tmp_path: Path) -> None:
    result = chat(env, tmp_path, "/help\n/reset\n/mode nonsense\n/frobnicate\n")
    assert result.returncode == 0, result.stderr
    assert "/cancel — Stop the reply being written" in result.stdout
    assert "Started a new conversation." in result.stdout
    assert "Unknown mode 'nonsense'. Try one of: assistant, coder, translator." in result.stdout
    assert "I don't know /frobnicate." in result.stdout


def test_tool_activity_goes_to_stderr(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Scripted(tool_calls=[("calculator", {"expression": "2**10"})]), Scripted(text="1024")
    )
    result = chat(env, tmp_path, "2 to the 10th?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1024"
    assert "[tool calculator" in result.stderr and "[tool calculator done]" in result.stderr


def test_upstream_failure_is_a_friendly_line_and_the_session_goes_on(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(error="insufficient_quota"))
    result = chat(env, tmp_path, "hello\nstill there?\n")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "! The assistant's OpenAI account is out of credit. Please tell an admin.",
        "Echo: still there?",
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_cancel_stops_a_streaming_reply(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Scripted(text="token " * 300, chunks=300, chunk_delay=0.02))
    process = subprocess.Popen(
        [SWITCHBOARD, "chat", "--user", "ada"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    assert process.stdin and process.stdout
    process.stdin.write("write a long story\n")
    process.stdin.flush()
    assert process.stdout.read(6) == "token "  # streaming has begun
    process.stdin.write("/cancel\n")
    process.stdin.flush()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Stopped. What was written so far is kept." in out
    assert "[stopped]" in out
    assert out.count("token") < 300


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SWITCHBOARD_JOBS_POLL_SECONDS", "soon", "switchboard: SWITCHBOARD_JOBS_POLL_SECONDS:"),
        ("SLACK_PORT", "99999", "switchboard: SLACK_PORT:"),
        ("SWITCHBOARD_ADMINS", "root", "switchboard: SWITCHBOARD_ADMINS:"),
        ("OPENAI_API_KEY", "", "switchboard: OPENAI_API_KEY is not set"),
        ("DATABASE_URL", "mysql://x", "switchboard: DATABASE_URL: only SQLite and PostgreSQL"),
    ],
)
def test_bad_settings_stop_start_up_with_one_clear_line(
    env: dict[str, str], tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = chat({**env, variable: value}, tmp_path, "hello\n")
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_settings_come_from_a_dotenv_file(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    dotenv = {k: env.pop(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DATABASE_URL")}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    result = chat(env, tmp_path, "from dotenv\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Echo: from dotenv"


def test_db_upgrade_creates_the_schema(env: dict[str, str], tmp_path: Path) -> None:
    result = switchboard(env, tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout
    with sqlite3.connect(tmp_path / "chat.db") as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
    assert {"users", "conversations", "messages", "usage", "processed_events", "jobs"} <= tables


def test_auto_migrate_can_be_switched_off(env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    result = chat({**env, "SWITCHBOARD_AUTO_MIGRATE": "false"}, tmp_path, "hello\n")
    assert time.monotonic() - started < 60
    # Without migrations the tables are missing: the user gets a friendly line, not a crash.
    assert result.returncode == 0
    assert result.stdout.strip() == "! Something went wrong on our side. Please try again."
    assert "Traceback" not in result.stdout


def test_run_telegram_serves_until_sigterm(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.telegram_server import FakeTelegram

    with FakeTelegram() as telegram:
        process = subprocess.Popen(
            [SWITCHBOARD, "run", "telegram"],
            env={
                **env,
                "TELEGRAM_BOT_TOKEN": telegram.token,
                "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
                "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not telegram.calls_to("getUpdates") and time.monotonic() < deadline:
                time.sleep(0.05)
            telegram.private_message(42, "ping over the real CLI")
            while time.monotonic() < deadline:
                shown = telegram.chat(42)
                if shown and shown[-1].text == "Echo: ping over the real CLI":
                    break
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert telegram.chat(42)[-1].text == "Echo: ping over the real CLI"
    assert process.returncode == 0, err
    assert "Telegram bot @switchboard_test_bot is running (long polling)" in err
    assert telegram.token not in err and API_KEY not in err


def test_run_telegram_without_a_token_is_one_clear_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = switchboard(env, tmp_path, "run", "telegram")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "switchboard: TELEGRAM_BOT_TOKEN is not set"


def test_run_all_serves_slack_and_telegram_in_one_process(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    import math
    import socket

    from tests.fakes.slack_server import FakeSlack
    from tests.fakes.telegram_server import FakeTelegram

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with FakeTelegram() as telegram, FakeSlack(per_channel_rate=math.inf) as slack:
        process = subprocess.Popen(
            [SWITCHBOARD, "run", "all"],
            env={
                **env,
                "TELEGRAM_BOT_TOKEN": telegram.token,
                "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
                "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": slack.signing_secret,
                "SLACK_API_URL": slack.api_url,
                "SLACK_PORT": str(port),
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        app_url = f"http://127.0.0.1:{port}/slack/events"
        try:
            deadline = time.monotonic() + 30
            while not telegram.calls_to("getUpdates") and time.monotonic() < deadline:
                time.sleep(0.05)
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            telegram.private_message(42, "hello from Telegram")
            status, _, _ = slack.deliver_event_sync(app_url, slack.dm("U0ADA", "hello from Slack"))
            dm = slack.dm_channel("U0ADA")
            while time.monotonic() < deadline:
                shown = telegram.chat(42)
                answered = [m for m in slack.messages(dm) if m.is_bot]
                if (
                    shown
                    and shown[-1].text == "Echo: hello from Telegram"
                    and answered
                    and answered[-1].text == "Echo: hello from Slack"
                ):
                    break
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert status == 200
        assert telegram.chat(42)[-1].text == "Echo: hello from Telegram"
        assert [m.text for m in slack.messages(dm) if m.is_bot] == ["Echo: hello from Slack"]
    assert process.returncode == 0, err
    assert "Telegram bot @switchboard_test_bot is running" in err
    assert "Slack bot @switchboard is running (HTTP on port" in err
    for secret in (telegram.token, slack.bot_token, slack.signing_secret, API_KEY):
        assert secret not in err


def test_run_all_without_any_channel_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    result = switchboard(env, tmp_path, "run", "all")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "switchboard: no channel is configured: set TELEGRAM_BOT_TOKEN or SLACK_BOT_TOKEN"
    )


def test_run_slack_without_a_signing_secret_is_one_clear_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = switchboard(env | {"SLACK_BOT_TOKEN": "xoxb-1"}, tmp_path, "run", "slack")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "switchboard: SLACK_SIGNING_SECRET is not set"


def test_quota_and_usage_from_the_shell(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    talked = chat(env, tmp_path, "spend something\n")
    set_budget = switchboard(env, tmp_path, "quota", "set", "default", "$0.25", "daily")
    shown = switchboard(env, tmp_path, "quota", "show")
    bad = switchboard(env, tmp_path, "quota", "set", "default", "lots", "daily")
    here = switchboard(env, tmp_path, "quota", "set", "here", "1", "daily")
    table = switchboard(env, tmp_path, "usage", "--period", "daily")
    as_csv = switchboard(env, tmp_path, "usage", "--csv")

    assert talked.returncode == 0, talked.stderr
    assert set_budget.returncode == 0, set_budget.stderr
    assert set_budget.stdout.strip() == "Budget set: the default (each user), $0.25 daily."
    assert "default (each user): $0.25 daily" in shown.stdout
    assert bad.returncode == 2
    assert "/quota set <who> <usd> <daily|weekly|monthly|total>" in bad.stderr
    assert here.stdout.startswith("There is no chat here")
    lines = table.stdout.splitlines()
    assert lines[0].startswith("Spending since ") and "(daily)" in lines[0]
    assert lines[1].split() == ["user", "username", "calls", "cost"]
    assert lines[3].split()[:3] == ["console:ada", "ada", "1"]
    assert lines[-1].split()[:2] == ["total", "1"]
    rows = as_csv.stdout.splitlines()
    assert rows[0] == "user,username,calls,cost,cost_micros"
    assert rows[1].startswith("console:ada,ada,1,$")
    assert int(rows[1].rsplit(",", 1)[1]) > 0


def test_access_rules_from_the_shell(env: dict[str, str], tmp_path: Path) -> None:
    blocked = switchboard(env, tmp_path, "access", "block", "42")
    allowed = switchboard(env, tmp_path, "access", "allow", "U0BEN12345")
    listed = switchboard(env, tmp_path, "access", "list")
    cleared = switchboard(env, tmp_path, "access", "clear", "42")
    after = switchboard(env, tmp_path, "access", "list")
    nameless = switchboard(env, tmp_path, "access", "block")

    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.strip() == "telegram:42 is blocked: the bot will not answer them."
    assert allowed.stdout.strip() == "slack:U0BEN12345 may use the bot now."
    assert "• telegram:42: block" in listed.stdout
    assert "• slack:U0BEN12345: allow" in listed.stdout
    assert cleared.stdout.strip().startswith("telegram:42 has no rule now")
    assert "telegram:42" not in after.stdout and "slack:U0BEN12345: allow" in after.stdout
    assert nameless.returncode == 2 and "name a user" in nameless.stderr


def test_pictures_and_voice_by_path_and_replies_saved_as_files(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from tests.make_audio import corrupt_audio, opus_head, tone_segments
    from tests.make_images import png

    (tmp_path / "my photo.png").write_bytes(png(320, 240))
    (tmp_path / "note.ogg").write_bytes(tone_segments([(440, 1.0), (0, 0.6), (660, 1.0)]))
    (tmp_path / "broken.ogg").write_bytes(corrupt_audio())
    script = "\n".join(
        [
            '"my photo.png" what\'s in it?',
            "note.ogg",
            "broken.ogg",
            "missing.png is not here",
            "/image a red bicycle",
            "/edit add a bell",
            "/voice on",
            "say hello",
        ]
    )
    result = chat(env | {"SWITCHBOARD_MEDIA_DIR": str(tmp_path / "out")}, tmp_path, script + "\n")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Echo: what's in it? [1 image]"
    assert lines[1:3] == ["(heard) tone440 tone660", "Echo: tone440 tone660"]
    assert lines[3].startswith("! I couldn't read that audio")
    assert lines[4] == "! file not found: missing.png"  # not sent to the model as text
    assert lines[5].startswith("[picture saved to ") and lines[6].startswith("[picture saved")
    assert lines[7].startswith("Spoken replies are on")
    assert lines[8] == "Echo: say hello"
    assert lines[9].startswith("[voice reply (") and len(lines) == 10
    pictures = sorted((tmp_path / "out").glob("picture-*.png"))
    voices = list((tmp_path / "out").glob("voice-*.ogg"))
    assert len(pictures) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in pictures)
    assert len(voices) == 1 and opus_head(voices[0].read_bytes())[0] == 1
    assert [i.endpoint for i in fake_openai.images] == ["generations", "edits"]


def test_several_pictures_in_one_line_and_long_audio_split_in_order(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from tests.make_audio import LECTURE_TRANSCRIPT, lecture, small_upload_models
    from tests.make_images import jpeg, png

    models = small_upload_models(tmp_path)
    (tmp_path / "lecture.mp3").write_bytes(lecture("mp3"))
    (tmp_path / "a.png").write_bytes(png(200, 100))
    (tmp_path / "b.jpg").write_bytes(jpeg(100, 200))
    result = chat(
        env | {"SWITCHBOARD_MODELS_FILE": str(models)},
        tmp_path,
        "a.png b.jpg which is taller?\nlecture.mp3\n",
    )

    assert result.returncode == 0, result.stderr
    expected = LECTURE_TRANSCRIPT
    assert result.stdout.splitlines() == [
        "Echo: which is taller? [2 images]",
        f"(heard) {expected}",
        f"Echo: {expected}",
    ]
    first = fake_openai.model_requests()[0]
    assert [(s.width, s.height) for s in fake_openai.images_seen(first)] == [
        (200, 100),
        (100, 200),
    ]
    assert len(fake_openai.transcriptions) >= 2


def test_bad_pictures_and_oversize_files_by_path_get_one_clear_line(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from tests.make_images import corrupt

    (tmp_path / "broken.png").write_bytes(corrupt())
    (tmp_path / "huge.wav").write_bytes(b"\0" * (1024 * 1024 + 1))
    result = chat(
        env | {"SWITCHBOARD_MAX_FILE_MB": "1"},
        tmp_path,
        "broken.png what is it?\nhuge.wav\nstill here?\n",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "! I couldn't read that picture. Please send a PNG, JPEG, WebP, GIF, HEIC, BMP or "
        "TIFF image.",
        "! huge.wav is too large; the limit is 1 MB.",
        "Echo: still here?",
    ]
    assert len(fake_openai.model_requests()) == 1
