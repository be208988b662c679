"""Operator mistakes through the real ``switchboard`` command (SPEC §10): each stops start-up
with one line naming the cause and the setting, exit status 2, no traceback, no
"Unclosed client session" noise and never a secret."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.fakes.other_servers import closed_port
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
BOT_TOKEN = "987654:REAL-looking-token_that-is-wrong"
SLACK_TOKEN = "xoxb-1234-secret-slack-token"
SIGNING_SECRET = "signing-secret-0123456789"
DB_PASSWORD = "hunter2-db-password"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
    }


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program already listens on."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def switchboard(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHBOARD, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def one_line(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    """The single line a failed start-up printed, after checking all the rules."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Unclosed" not in output, output
    for secret in (API_KEY, *secrets):
        assert secret not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("switchboard: "), lines[0]
    return lines[0]


def test_a_rejected_telegram_token(env: dict[str, str], tmp_path: Path) -> None:
    with FakeTelegram() as telegram:
        result = switchboard(
            env
            | {
                "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
                "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
                "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
            },
            tmp_path,
            "run",
            "telegram",
        )
    line = one_line(result, BOT_TOKEN, BOT_TOKEN.split(":")[1])
    assert "Telegram rejected the bot token" in line and "TELEGRAM_BOT_TOKEN" in line


def test_telegram_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    port = closed_port()
    result = switchboard(
        env
        | {"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_BASE_URL": f"http://127.0.0.1:{port}/bot"},
        tmp_path,
        "run",
        "telegram",
    )
    line = one_line(result, BOT_TOKEN)
    assert line == (
        f"switchboard: cannot reach Telegram at 127.0.0.1:{port} (connection refused) — "
        "check the network, or TELEGRAM_BASE_URL"
    )


def test_slack_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    port = closed_port()
    result = switchboard(
        env
        | {
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": f"http://127.0.0.1:{port}/api/",
        },
        tmp_path,
        "run",
        "slack",
    )
    # Slack's SDK warns that its token setting is unused; that line is Bolt's, not an error.
    result.stderr = "\n".join(
        line for line in result.stderr.splitlines() if "will be unused" not in line
    )
    line = one_line(result, SLACK_TOKEN, SIGNING_SECRET)
    assert f"cannot reach Slack at 127.0.0.1:{port} (connection refused)" in line
    assert "SLACK_API_URL" in line


def test_a_rejected_slack_token(env: dict[str, str], tmp_path: Path) -> None:
    with FakeSlack() as slack:
        result = switchboard(
            env
            | {
                "SLACK_BOT_TOKEN": SLACK_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
            },
            tmp_path,
            "run",
            "slack",
        )
    result.stderr = "\n".join(
        line for line in result.stderr.splitlines() if "will be unused" not in line
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN was rejected by Slack (invalid_auth)" in result.stderr
    assert SLACK_TOKEN not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_an_unreachable_postgresql_in_the_short_url_forms(
    env: dict[str, str], tmp_path: Path, scheme: str
) -> None:
    port = closed_port()
    url = f"{scheme}://switchboard:{DB_PASSWORD}@127.0.0.1:{port}/bot"
    line = one_line(switchboard(env | {"DATABASE_URL": url}, tmp_path, "usage"), DB_PASSWORD)
    assert line == (
        f"switchboard: cannot connect to the database at 127.0.0.1:{port}/bot "
        "(connection refused) — check DATABASE_URL and that the server is running"
    )


def test_a_missing_postgresql_database_is_named(env: dict[str, str], tmp_path: Path) -> None:
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("needs TEST_DATABASE_URL (CI sets it)")
    from sqlalchemy.engine import make_url

    url = make_url(admin).set(drivername="postgresql", database="sb_no_such_database")
    result = switchboard(
        env | {"DATABASE_URL": url.render_as_string(hide_password=False)}, tmp_path, "usage"
    )
    line = one_line(result)
    assert 'database "sb_no_such_database" does not exist — check DATABASE_URL' in line


def test_a_sqlite_file_in_a_missing_folder(env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'bot.db'}"
    line = one_line(switchboard(env | {"DATABASE_URL": url}, tmp_path, "db", "upgrade"))
    assert line == (
        f"switchboard: the folder of the SQLite database does not exist "
        f"({tmp_path / 'no-such-folder'}) — create it, or point DATABASE_URL elsewhere"
    )


def test_plain_sqlite_urls_get_the_async_driver(env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    result = switchboard(env | {"DATABASE_URL": url}, tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plain.db").is_file()


def test_the_slack_port_in_use(env: dict[str, str], tmp_path: Path, busy_port: int) -> None:
    with FakeSlack() as slack:
        result = switchboard(
            env
            | {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
                "SLACK_PORT": str(busy_port),
            },
            tmp_path,
            "run",
            "slack",
        )
    result.stderr = "\n".join(
        line for line in result.stderr.splitlines() if "will be unused" not in line
    )
    line = one_line(result, slack.bot_token, SIGNING_SECRET)
    assert line == (
        f"switchboard: port {busy_port} is already in use — stop what listens there, "
        "or change SLACK_PORT"
    )


def test_the_telegram_webhook_port_in_use(
    env: dict[str, str], tmp_path: Path, busy_port: int
) -> None:
    with FakeTelegram() as telegram:
        result = switchboard(
            env
            | {
                "TELEGRAM_BOT_TOKEN": telegram.token,
                "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
                "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
                "TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram",
                "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-0123",
                "TELEGRAM_WEBHOOK_PORT": str(busy_port),
            },
            tmp_path,
            "run",
            "telegram",
        )
    line = one_line(result, telegram.token, "webhook-secret-0123")
    assert line == (
        f"switchboard: port {busy_port} is already in use — stop what listens there, "
        "or change TELEGRAM_WEBHOOK_PORT"
    )


def test_an_unexpected_error_is_one_line_and_its_traceback_is_logged_redacted(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "exploding_tools.py").write_text(
        "import os\nraise RuntimeError('cannot use ' + os.environ['OPENAI_API_KEY'])\n"
    )
    environment = env | {
        "SWITCHBOARD_TOOL_MODULES": "exploding_tools",
        "PYTHONPATH": str(tmp_path),
    }
    # The chat loads the operator's tool modules (the database-only shell commands do not).
    quiet = switchboard(environment, tmp_path, "chat")
    assert quiet.returncode == 1
    assert quiet.stderr.strip() == (
        "switchboard: unexpected error: RuntimeError: cannot use [redacted] — "
        "run with SWITCHBOARD_LOG_LEVEL=DEBUG for the details"
    )
    debug = switchboard(environment | {"SWITCHBOARD_LOG_LEVEL": "DEBUG"}, tmp_path, "chat")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "exploding_tools.py" in debug.stderr
    assert API_KEY not in debug.stderr


def test_a_missing_env_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    result = switchboard(env, tmp_path, "--env-file", "missing.env", "usage")
    assert result.returncode == 2
    assert result.stderr.strip() == "switchboard: --env-file missing.env: no such file"


def test_version(env: dict[str, str], tmp_path: Path) -> None:
    from importlib import metadata

    result = switchboard(env, tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"switchboard {metadata.version('switchboard')}"


def test_unknown_switchboard_variables_are_warned_with_the_closest_name(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "ops.env").write_text("SWITCHBOARD_TIMEZON=Europe/Berlin\n")
    result = switchboard(
        env | {"SWITCHBOARD_LOG_LEVL": "DEBUG"}, tmp_path, "--env-file", "ops.env", "db", "upgrade"
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "switchboard: warning: SWITCHBOARD_LOG_LEVL is not a setting Switchboard knows, so it "
        "is ignored; did you mean SWITCHBOARD_LOG_LEVEL?",
        "switchboard: warning: SWITCHBOARD_TIMEZON is not a setting Switchboard knows, so it "
        "is ignored; did you mean SWITCHBOARD_TIMEZONE?",
    ]


def test_migrations_are_quiet_at_info(env: dict[str, str], tmp_path: Path) -> None:
    result = switchboard(env | {"SWITCHBOARD_LOG_LEVEL": "INFO"}, tmp_path, "db", "upgrade")
    assert result.returncode == 0
    assert "alembic" not in result.stderr and result.stderr == ""


def test_json_logs_from_the_cli_parse_line_by_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "exploding_tools.py").write_text(
        "import os\nraise RuntimeError('cannot use ' + os.environ['OPENAI_API_KEY'])\n"
    )
    result = switchboard(
        env
        | {
            "SWITCHBOARD_TOOL_MODULES": "exploding_tools",
            "PYTHONPATH": str(tmp_path),
            "SWITCHBOARD_LOG_LEVEL": "DEBUG",
            "SWITCHBOARD_LOG_FORMAT": "json",
        },
        tmp_path,
        "chat",
    )
    *logged, last = result.stderr.strip().splitlines()
    entries = [json.loads(line) for line in logged]
    assert last.startswith("switchboard: unexpected error: RuntimeError")
    (unexpected,) = [e for e in entries if e["message"] == "unexpected error"]
    assert unexpected["level"] == "DEBUG" and unexpected["logger"] == "switchboard"
    assert "exploding_tools.py" in unexpected["exception"]
    assert API_KEY not in result.stderr


def test_a_rejected_slack_app_token_names_it(env: dict[str, str], tmp_path: Path) -> None:
    with FakeSlack() as slack:
        result = switchboard(
            env
            | {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_APP_TOKEN": "xapp-1-wrong-app-token-0123",
                "SLACK_API_URL": slack.api_url,
            },
            tmp_path,
            "run",
            "slack",
        )
    result.stderr = "\n".join(
        line for line in result.stderr.splitlines() if "will be unused" not in line
    )
    line = one_line(result, slack.bot_token, "xapp-1-wrong-app-token-0123")
    assert line == "switchboard: SLACK_APP_TOKEN was rejected by Slack (invalid_auth)"


async def test_a_model_api_failure_at_start_up_is_classified_not_called_slack() -> None:
    # The openai SDK's connection errors carry aiohttp's in their chain, as Slack's do.
    from openai import AsyncOpenAI, DefaultAioHttpClient, OpenAIError

    from bots.failures import explain
    from core.settings import load_settings

    base = f"http://127.0.0.1:{closed_port()}/v1"
    settings = load_settings(None, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=base)
    client = AsyncOpenAI(
        api_key=API_KEY, base_url=base, max_retries=0, http_client=DefaultAioHttpClient()
    )
    try:
        await client.models.list()
    except OpenAIError as exc:
        line = explain(exc, settings)
    finally:
        await client.close()
    assert line == (
        f"the model API failed: cannot connect to {base}/models (connection refused) — "
        "check OPENAI_BASE_URL (an OpenAI-compatible API, usually ending in /v1)"
    )
    assert explain(ZeroDivisionError("a bug"), settings) is None
