"""Settings: every SPEC §3 variable from the environment and from ``.env``, defaults, and
malformed values that stop start-up with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bots.bootstrap import user_directory
from core.errors import ConfigError
from core.settings import Settings, load_settings, unknown_variables

# (variable, text as an operator writes it, Settings attribute, parsed value)
SPEC_VARIABLES: list[tuple[str, str, str, object]] = [
    ("OPENAI_API_KEY", "sk-env-0123456789", "openai_api_key", "sk-env-0123456789"),
    ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1", "openai_base_url", "http://127.0.0.1:8080/v1"),
    (
        "DATABASE_URL",
        "postgresql+asyncpg://sb:pw@db:5432/switchboard",
        "database_url",
        "postgresql+asyncpg://sb:pw@db:5432/switchboard",
    ),
    ("TELEGRAM_BOT_TOKEN", "123456:ABCdefGHI", "telegram_bot_token", "123456:ABCdefGHI"),
    (
        "TELEGRAM_BASE_URL",
        "http://127.0.0.1:8081/bot",
        "telegram_base_url",
        "http://127.0.0.1:8081/bot",
    ),
    (
        "TELEGRAM_BASE_FILE_URL",
        "http://127.0.0.1:8081/file/bot",
        "telegram_base_file_url",
        "http://127.0.0.1:8081/file/bot",
    ),
    (
        "TELEGRAM_WEBHOOK_URL",
        "https://bot.example.org/telegram",
        "telegram_webhook_url",
        "https://bot.example.org/telegram",
    ),
    ("TELEGRAM_WEBHOOK_SECRET", "hook-secret-42", "telegram_webhook_secret", "hook-secret-42"),
    ("TELEGRAM_WEBHOOK_PORT", "8080", "telegram_webhook_port", 8080),
    ("SLACK_BOT_TOKEN", "xoxb-1-2-3", "slack_bot_token", "xoxb-1-2-3"),
    ("SLACK_SIGNING_SECRET", "signing-secret-9", "slack_signing_secret", "signing-secret-9"),
    ("SLACK_APP_TOKEN", "xapp-1-2-3", "slack_app_token", "xapp-1-2-3"),
    ("SLACK_API_URL", "http://127.0.0.1:9000/api/", "slack_api_url", "http://127.0.0.1:9000/api/"),
    ("SLACK_PORT", "3100", "slack_port", 3100),
    (
        "SWITCHBOARD_ADMINS",
        "telegram:42, slack:U0123ABC",
        "admins",
        frozenset({"telegram:42", "slack:U0123ABC"}),
    ),
    ("SWITCHBOARD_ALLOWED_USERS", "telegram:7", "allowed_users", frozenset({"telegram:7"})),
    ("SWITCHBOARD_JOBS_POLL_SECONDS", "15", "jobs_poll_seconds", 15),
    ("SWITCHBOARD_AUTO_MIGRATE", "false", "auto_migrate", False),
    ("SWITCHBOARD_TOOL_MODULES", "weather, shop:TOOLS", "tool_modules", ("weather", "shop:TOOLS")),
    ("SWITCHBOARD_LOG_LEVEL", "debug", "log_level", "DEBUG"),
]

MALFORMED: list[tuple[str, str]] = [
    ("SLACK_PORT", "http"),
    ("SLACK_PORT", "0"),
    ("SLACK_PORT", "70000"),
    ("TELEGRAM_WEBHOOK_PORT", "-1"),
    ("SWITCHBOARD_ADMINS", "bogus"),
    ("SWITCHBOARD_ADMINS", "telegram:42,discord7"),
    ("SWITCHBOARD_ALLOWED_USERS", "telegram:"),
    ("SWITCHBOARD_LOG_LEVEL", "LOUD"),
    ("SWITCHBOARD_JOBS_POLL_SECONDS", "0"),
    ("SWITCHBOARD_JOBS_POLL_SECONDS", "soon"),
    ("SWITCHBOARD_AUTO_MIGRATE", "maybe"),
]


def plain(value: object) -> object:
    """A setting's value with secrets unwrapped, for comparison."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


@pytest.mark.parametrize(("variable", "text", "attribute", "expected"), SPEC_VARIABLES)
def test_each_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(variable, text)

    settings = load_settings(None)

    assert plain(getattr(settings, attribute)) == expected


@pytest.mark.parametrize(("variable", "text", "attribute", "expected"), SPEC_VARIABLES)
def test_each_variable_is_read_from_an_env_file(
    tmp_path: Path, variable: str, text: str, attribute: str, expected: object
) -> None:
    env_file = write_env(tmp_path / "switchboard.env", **{variable: text})

    settings = load_settings(env_file)

    assert plain(getattr(settings, attribute)) == expected


def test_dot_env_in_the_working_directory_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".env", SLACK_PORT="4242", SWITCHBOARD_ADMINS="slack:U1")
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    assert settings.slack_port == 4242
    assert settings.admins == frozenset({"slack:U1"})


def test_environment_wins_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = write_env(tmp_path / ".env", SLACK_PORT="4000", SLACK_API_URL="http://file/api/")
    monkeypatch.setenv("SLACK_PORT", "5000")

    settings = load_settings(env_file)

    assert settings.slack_port == 5000
    assert settings.slack_api_url == "http://file/api/"


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_PORT", "5000")

    assert load_settings(None, SLACK_PORT=6000).slack_port == 6000


def test_unrelated_env_file_entries_are_ignored(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", PATH_TO_NOWHERE="x", SLACK_PORT="3001")

    assert load_settings(env_file).slack_port == 3001


def test_defaults() -> None:
    settings = load_settings(None)

    assert settings.database_url == "sqlite+aiosqlite:///switchboard.db"
    assert settings.slack_port == 3000
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.jobs_poll_seconds == 60
    assert settings.admins == frozenset()
    assert settings.allowed_users == frozenset()
    assert settings.auto_migrate is True
    assert settings.openai_api_key is None
    assert settings.openai_base_url is None
    assert settings.telegram_bot_token is None
    assert settings.telegram_webhook_url is None
    assert settings.slack_app_token is None


def test_a_missing_env_file_is_not_an_error(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "absent.env").slack_port == 3000


@pytest.mark.parametrize(("variable", "text"), MALFORMED)
def test_malformed_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)

    with pytest.raises(ConfigError) as raised:
        load_settings(None)

    message = str(raised.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


@pytest.mark.parametrize(("variable", "text"), MALFORMED)
def test_malformed_env_file_value_names_the_variable(
    tmp_path: Path, variable: str, text: str
) -> None:
    env_file = write_env(tmp_path / ".env", **{variable: text})

    with pytest.raises(ConfigError) as raised:
        load_settings(env_file)

    assert str(raised.value).startswith(f"{variable}:")


def test_admin_error_quotes_the_bad_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ADMINS", "telegram:1,bogus")

    with pytest.raises(ConfigError, match="'bogus'"):
        load_settings(None)


@pytest.mark.parametrize(
    "admins",
    [
        # SPEC §3/§6: Telegram principals are numeric user ids; "@alice" would silently
        # match nobody, so the operator's admin would never be recognised.
        "telegram:@alice",
        "telegram:0",
        "slack:alice",
        "console:not a login",
        "discord:7",
    ],
)
def test_each_channel_checks_its_own_principals(
    monkeypatch: pytest.MonkeyPatch, admins: str
) -> None:
    # The composition root checks principals with the channels' own rules (bots.bootstrap).
    monkeypatch.setenv("SWITCHBOARD_ADMINS", f"telegram:1,{admins}")
    settings = load_settings(None)

    with pytest.raises(ConfigError, match=r"^SWITCHBOARD_ADMINS"):
        user_directory().principals(settings.admins, "SWITCHBOARD_ADMINS")


def test_principals_of_every_channel_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ADMINS", "telegram:123,slack:U012AB,console:alice")
    settings = load_settings(None)

    checked = user_directory().principals(settings.admins, "SWITCHBOARD_ADMINS")

    assert checked == frozenset({"telegram:123", "slack:U012AB", "console:alice"})


def test_admin_list_tolerates_blanks_and_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ADMINS", " telegram:1 ,, slack:U2 ,")

    assert load_settings(None).admins == frozenset({"telegram:1", "slack:U2"})


SECRETS = {
    "OPENAI_API_KEY": "sk-live-secret-0001",
    "TELEGRAM_BOT_TOKEN": "999999:telegram-secret-0002",
    "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-0003",
    "SLACK_BOT_TOKEN": "xoxb-slack-secret-0004",
    "SLACK_SIGNING_SECRET": "signing-secret-0005",
    "SLACK_APP_TOKEN": "xapp-slack-secret-0006",
}


def test_secrets_are_secret_str_and_hidden_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    settings = load_settings(None)

    fields = {info.alias: field for field, info in Settings.model_fields.items()}
    for name, value in SECRETS.items():
        secret = getattr(settings, fields[name])
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == value
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        for value in SECRETS.values():
            assert value not in text


def test_require_passes_when_set() -> None:
    settings = load_settings(None, OPENAI_API_KEY="sk-abc", SLACK_BOT_TOKEN="xoxb-1")

    settings.require("OPENAI_API_KEY", "SLACK_BOT_TOKEN")


def test_require_names_the_missing_variable() -> None:
    settings = load_settings(None, SLACK_BOT_TOKEN="xoxb-1")

    with pytest.raises(ConfigError, match=r"^SLACK_SIGNING_SECRET is not set$"):
        settings.require("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")


def test_require_treats_an_empty_secret_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")

    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        load_settings(None).require("TELEGRAM_BOT_TOKEN")


def test_require_handles_plain_settings() -> None:
    settings = load_settings(None)

    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_URL"):
        settings.require("TELEGRAM_WEBHOOK_URL")


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://bot:pw@db:5432/bot", "postgresql+asyncpg://bot:pw@db:5432/bot"),
        ("postgresql://bot@db/bot", "postgresql+asyncpg://bot@db/bot"),
        ("postgresql+psycopg://bot@db/bot", "postgresql+psycopg://bot@db/bot"),
        ("sqlite:///data/bot.db", "sqlite+aiosqlite:///data/bot.db"),
        ("sqlite+aiosqlite:///bot.db", "sqlite+aiosqlite:///bot.db"),
        ("mysql://bot@db/bot", "mysql://bot@db/bot"),  # refused later, by name
    ],
)
def test_database_urls_get_the_async_driver(given: str, used: str) -> None:
    assert load_settings(None, DATABASE_URL=given).database_url == used


def test_unknown_switchboard_variables_name_the_closest_setting(tmp_path: Path) -> None:
    env_file = tmp_path / "bot.env"
    env_file.write_text("SWITCHBOARD_MAX_FILE_MBS=30\nOTHER_TOOL_SETTING=1\n")
    environ = {"SWITCHBOARD_LOG_LEVEL": "INFO", "switchboard_qwerty": "1", "HOME": "/root"}

    warnings = unknown_variables(environ, env_file)

    assert warnings == [
        "SWITCHBOARD_MAX_FILE_MBS is not a setting Switchboard knows, so it is ignored; "
        "did you mean SWITCHBOARD_MAX_FILE_MB?",
        "switchboard_qwerty is not a setting Switchboard knows, so it is ignored",
    ]
