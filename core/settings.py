"""Typed settings: every SPEC §3 variable and Switchboard's own, from the environment or .env.

Built once by the composition root (``bots.bootstrap``); nothing reads the environment at import.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigError


class Settings(BaseSettings):
    """Configuration for one Switchboard process."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    openai_webhook_secret: SecretStr | None = Field(default=None, alias="OPENAI_WEBHOOK_SECRET")
    database_url: str = Field(default="sqlite+aiosqlite:///switchboard.db", alias="DATABASE_URL")

    telegram_bot_token: SecretStr | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    telegram_base_url: str | None = Field(default=None, alias="TELEGRAM_BASE_URL")
    telegram_base_file_url: str | None = Field(default=None, alias="TELEGRAM_BASE_FILE_URL")
    telegram_webhook_url: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_webhook_port: int = Field(default=8443, alias="TELEGRAM_WEBHOOK_PORT", gt=0, lt=65536)
    # Telegram's public flood limits (raise them for a self-hosted Bot API server).
    telegram_chat_per_second: float = Field(
        default=1.0, alias="SWITCHBOARD_TELEGRAM_CHAT_PER_SECOND", gt=0
    )
    telegram_chat_burst: int = Field(default=3, alias="SWITCHBOARD_TELEGRAM_CHAT_BURST", ge=1)
    telegram_group_per_minute: float = Field(
        default=20.0, alias="SWITCHBOARD_TELEGRAM_GROUP_PER_MINUTE", gt=0
    )
    telegram_group_burst: int = Field(default=3, alias="SWITCHBOARD_TELEGRAM_GROUP_BURST", ge=1)
    telegram_overall_per_second: float = Field(
        default=30.0, alias="SWITCHBOARD_TELEGRAM_OVERALL_PER_SECOND", gt=0
    )
    telegram_first_message_seconds: float = Field(
        default=0.5, alias="SWITCHBOARD_TELEGRAM_FIRST_MESSAGE_SECONDS", ge=0, le=10
    )

    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    slack_port: int = Field(default=3000, alias="SLACK_PORT", gt=0, lt=65536)
    slack_native_streaming: bool = Field(default=True, alias="SWITCHBOARD_SLACK_NATIVE_STREAMING")

    admins: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="SWITCHBOARD_ADMINS"
    )
    allowed_users: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="SWITCHBOARD_ALLOWED_USERS"
    )
    jobs_poll_seconds: int = Field(default=60, alias="SWITCHBOARD_JOBS_POLL_SECONDS", gt=0)
    batch_output_tokens: int = Field(
        default=1000, alias="SWITCHBOARD_BATCH_OUTPUT_TOKENS", gt=0, le=1_000_000
    )
    finetune: Literal["on", "off"] = Field(default="on", alias="SWITCHBOARD_FINETUNE")

    auto_migrate: bool = Field(default=True, alias="SWITCHBOARD_AUTO_MIGRATE")
    models_file: Path | None = Field(default=None, alias="SWITCHBOARD_MODELS_FILE")
    modes_file: Path | None = Field(default=None, alias="SWITCHBOARD_MODES_FILE")
    prices_file: Path | None = Field(default=None, alias="SWITCHBOARD_PRICES_FILE")
    tool_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), alias="SWITCHBOARD_TOOL_MODULES"
    )
    tool_rounds: int = Field(default=5, alias="SWITCHBOARD_TOOL_ROUNDS", ge=1, le=50)
    tool_timeout_seconds: float = Field(
        default=20.0, alias="SWITCHBOARD_TOOL_TIMEOUT_SECONDS", gt=0, le=600
    )
    openai_max_retries: int = Field(default=3, alias="SWITCHBOARD_OPENAI_MAX_RETRIES", ge=0, le=10)
    openai_backoff_seconds: float = Field(
        default=0.5, alias="SWITCHBOARD_OPENAI_BACKOFF_SECONDS", ge=0, le=60
    )
    openai_timeout_seconds: float = Field(
        default=120.0, alias="SWITCHBOARD_OPENAI_TIMEOUT_SECONDS", gt=0
    )
    openai_total_seconds: float = Field(
        default=120.0, alias="SWITCHBOARD_OPENAI_TOTAL_SECONDS", gt=0, le=3600
    )
    max_message_chars: int = Field(
        default=32000, alias="SWITCHBOARD_MAX_MESSAGE_CHARS", gt=0, le=1_000_000
    )
    context_tokens: int | None = Field(default=16_000, alias="SWITCHBOARD_CONTEXT_TOKENS", gt=0)
    log_level: str = Field(default="INFO", alias="SWITCHBOARD_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", alias="SWITCHBOARD_LOG_FORMAT")
    http_port: int | None = Field(default=None, alias="SWITCHBOARD_HTTP_PORT", gt=0, lt=65536)
    demo: bool = Field(default=False, alias="SWITCHBOARD_DEMO")
    timezone: str = Field(default="UTC", alias="SWITCHBOARD_TIMEZONE")
    image_model: str | None = Field(default=None, alias="SWITCHBOARD_IMAGE_MODEL")
    image_size: str | None = Field(default=None, alias="SWITCHBOARD_IMAGE_SIZE")
    image_quality: str | None = Field(default=None, alias="SWITCHBOARD_IMAGE_QUALITY")
    transcription_model: str | None = Field(default=None, alias="SWITCHBOARD_TRANSCRIPTION_MODEL")
    speech_model: str | None = Field(default=None, alias="SWITCHBOARD_SPEECH_MODEL")
    speech_voice: str | None = Field(default=None, alias="SWITCHBOARD_SPEECH_VOICE")
    speech_speed: float = Field(default=1.0, alias="SWITCHBOARD_SPEECH_SPEED", ge=0.25, le=4.0)
    ffmpeg: str | None = Field(default=None, alias="SWITCHBOARD_FFMPEG")
    max_file_mb: int = Field(default=20, alias="SWITCHBOARD_MAX_FILE_MB", gt=0, le=2000)
    media_dir: Path = Field(default=Path("switchboard-media"), alias="SWITCHBOARD_MEDIA_DIR")
    spool_dir: Path = Field(default=Path("switchboard-spool"), alias="SWITCHBOARD_SPOOL_DIR")
    store_retry_seconds: float = Field(
        default=15.0, alias="SWITCHBOARD_STORE_RETRY_SECONDS", ge=0, le=3600
    )
    turns_working: int = Field(default=16, alias="SWITCHBOARD_TURNS_WORKING", ge=0, le=10_000)
    messages_per_minute: int = Field(
        default=20, alias="SWITCHBOARD_USER_MESSAGES_PER_MINUTE", ge=0, le=10_000
    )

    @field_validator("admins", "allowed_users", mode="before")
    @classmethod
    def _principals(cls, value: object) -> frozenset[str]:
        if isinstance(value, frozenset | set | list | tuple):
            items = [str(item) for item in value]
        else:
            items = [item.strip() for item in str(value or "").split(",") if item.strip()]
        # Each channel checks its own ids when the principals are used (core.access.names).
        for item in items:
            channel, colon, user_id = item.partition(":")
            if not (channel and colon and user_id):
                raise ValueError(f"{item!r} is not <channel>:<user id>, like telegram:123")
        return frozenset(items)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Add the async driver to the URL forms hosting services hand out (``postgres://``,
        ``postgresql://``) and to plain ``sqlite:///``."""
        scheme, sep, rest = value.partition("://")
        drivers = {
            "postgres": "postgresql+asyncpg",
            "postgresql": "postgresql+asyncpg",
            "sqlite": "sqlite+aiosqlite",
        }
        return f"{drivers[scheme]}{sep}{rest}" if sep and scheme in drivers else value

    @field_validator("tool_modules", mode="before")
    @classmethod
    def _modules(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, list | tuple):
            return tuple(str(item) for item in value)
        return tuple(item.strip() for item in str(value or "").split(",") if item.strip())

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone budget periods reset in."""
        return ZoneInfo(self.timezone)

    def require(self, *names: str) -> None:
        """Raise ``ConfigError`` naming the first of ``names`` (env variables) that is unset."""
        for name in names:
            field = next(key for key, info in type(self).model_fields.items() if info.alias == name)
            value = getattr(self, field)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                raise ConfigError(f"{name} is not set")


def known_variables() -> list[str]:
    """Every environment variable ``Settings`` reads."""
    return [info.alias for info in Settings.model_fields.values() if info.alias]


def unknown_variables(environ: Mapping[str, str], env_file: Path | None) -> list[str]:
    """A warning for each ``SWITCHBOARD_*`` variable (in ``environ`` or ``env_file``) that no
    setting reads, naming the closest known one: a typo would otherwise be ignored silently."""
    names = set(environ)
    if env_file is not None:
        names |= {name for name in dotenv_values(env_file) if name}
    known = {name.upper() for name in known_variables()}
    prefix = "SWITCHBOARD_"
    # Compared without the shared prefix, which would make every name look close.
    suffixes = sorted(name.removeprefix(prefix) for name in known if name.startswith(prefix))
    warnings = []
    for name in sorted(names):
        if not name.upper().startswith(prefix) or name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper().removeprefix(prefix), suffixes, 1, 0.75)
        hint = f"; did you mean {prefix}{close[0]}?" if close else ""
        warnings.append(f"{name} is not a setting Switchboard knows, so it is ignored{hint}")
    return warnings


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Build settings from the environment and ``env_file``; errors name the variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        alias = Settings.model_fields[field].alias if field in Settings.model_fields else field
        raise ConfigError(f"{alias or field}: {error['msg']}") from None
