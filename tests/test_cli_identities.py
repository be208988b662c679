"""Who is who, through the real ``switchboard`` command: the ``<channel>:<id>`` form in the
shell and in settings, console admins, and the shell's database-only commands, which need
no OpenAI key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI
from tests.test_console import switchboard


@pytest.fixture
def keyless(tmp_path: Path) -> dict[str, str]:
    """An environment with a database and no OpenAI key at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SWITCHBOARD_"))}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    return env


def test_budget_commands_take_channel_ids_and_need_no_key(
    keyless: dict[str, str], tmp_path: Path
) -> None:
    done = switchboard(keyless, tmp_path, "quota", "set", "telegram:123", "1", "daily")
    assert (done.returncode, done.stdout.strip()) == (0, "Budget set: telegram:123, $1.00 daily.")
    done = switchboard(keyless, tmp_path, "quota", "set", "slack:U012AB", "$0.50", "weekly")
    assert done.returncode == 0, done.stderr
    done = switchboard(keyless, tmp_path, "quota", "set", "console:alice", "2", "monthly")
    assert done.returncode == 0, done.stderr
    shown = switchboard(keyless, tmp_path, "quota", "show")
    assert shown.returncode == 0, shown.stderr
    for line in ("telegram:123: $1.00 daily", "slack:U012AB: $0.50 weekly", "console:alice: $2.00"):
        assert line in shown.stdout
    usage = switchboard(keyless, tmp_path, "usage")
    assert usage.returncode == 0 and "total" in usage.stdout
    assert "OPENAI_API_KEY" not in shown.stderr + usage.stderr


def test_access_rules_take_channel_ids_and_need_no_key(
    keyless: dict[str, str], tmp_path: Path
) -> None:
    blocked = switchboard(keyless, tmp_path, "access", "block", "slack:U012AB")
    allowed = switchboard(keyless, tmp_path, "access", "allow", "console:bob")
    listed = switchboard(keyless, tmp_path, "access", "list")
    assert blocked.returncode == allowed.returncode == listed.returncode == 0, listed.stderr
    assert "slack:U012AB" in listed.stdout and "console:bob" in listed.stdout


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        (["quota", "set", "telegram:abc", "1", "daily"], "not a telegram user id"),
        (["quota", "set", "slack:alice", "1", "daily"], "not a slack user id"),
        (["quota", "set", "bob", "1", "daily"], "<channel>:<id>"),
    ],
)
def test_a_malformed_channel_id_is_one_clear_line(
    keyless: dict[str, str], tmp_path: Path, words: list[str], problem: str
) -> None:
    done = switchboard(keyless, tmp_path, *words)
    assert done.returncode == 2
    assert problem in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr


def test_an_admin_setting_is_checked_by_its_channel(
    keyless: dict[str, str], tmp_path: Path
) -> None:
    env = {**keyless, "SWITCHBOARD_ADMINS": "telegram:1,telegram:@alice"}
    done = switchboard(env, tmp_path, "quota", "show")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "switchboard: SWITCHBOARD_ADMINS: 'telegram:@alice' is not a valid telegram id"
    )


def test_console_admins_are_named_like_any_other(
    fake_openai: FakeOpenAI, keyless: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **keyless,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "SWITCHBOARD_ADMINS": "console:alice",
    }
    script = "/quota set telegram:42 0.25 daily\n/quota show\n"
    alice = switchboard(env, tmp_path, "chat", "--user", "alice", stdin=script)
    bob = switchboard(env, tmp_path, "chat", "--user", "bob", stdin=script)
    assert alice.returncode == bob.returncode == 0, alice.stderr + bob.stderr
    assert alice.stdout.splitlines()[0] == "Budget set: telegram:42, $0.25 daily."
    assert "telegram:42: $0.25 daily" in alice.stdout
    assert bob.stdout.splitlines() == ["Only admins can do that.", "Only admins can do that."]
