"""``switchboard models`` and ``switchboard models check`` as an operator runs them: a real
process, pointed at the fake OpenAI with OPENAI_BASE_URL (SPEC §3, §13)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from core.models.lifecycle import Status, status
from core.models.registry import load_registry
from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


@pytest.fixture
def env(fake_openai: FakeOpenAI) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake_openai.base_url}


def switchboard(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHBOARD, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by model id, cells split on runs of two or more spaces."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines()[2:]:
        if not line.strip():
            break
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        found[cells[1]] = cells
    return found


def test_models_lists_the_registry_with_lifecycle_and_prices(
    env: dict[str, str], tmp_path: Path
) -> None:
    del env["OPENAI_API_KEY"]  # listing needs no key
    result = switchboard(env, tmp_path, "models", "--date", "2026-12-20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == [
        "role",
        "model",
        "title",
        "shutdown",
        "successor",
        "prices",
        "in",
        "use",
        "status",
    ]
    table = rows(result.stdout)
    assert table["gpt-6-luna"] == [
        "chat",
        "gpt-6-luna",
        "GPT-6 Luna",
        "$0.10 / $0.10 / $0.50 per 1M tokens",
        "chat, vision",
    ]
    assert table["gpt-4o"][3:6] == [
        "2027-01-14",
        "gpt-6-luna",
        "$2.50 / $1.25 / $10.00 per 1M tokens",
    ]
    assert table["gpt-4o"][-1] == "retiring"
    assert table["gpt-5"][-1] == "retired"
    assert table["gpt-transcribe"][-2:] == ["$0.006 per minute", "transcription"]
    assert table["gpt-image-2.6-sunburst"][-2:] == [
        "$0.042 per medium image ($0.011-$0.25)",
        "image",
    ]
    speech = load_registry().media.speech
    unlisted = "" if "gpt-realtime-2.1-mini" in speech else " (not in registry)"
    assert table["tts-1"][3:5] == ["2027-01-06", f"gpt-realtime-2.1-mini{unlisted}"]
    assert table["text-embedding-3-small"][-1] == "$0.02 per 1M tokens"
    assert "retiring = shuts down within 30 days" in result.stdout


def test_models_marks_the_models_the_settings_choose(env: dict[str, str], tmp_path: Path) -> None:
    env["SWITCHBOARD_TRANSCRIPTION_MODEL"] = "whisper-1"
    result = switchboard(env, tmp_path, "models", "--date", "2027-02-01")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table["whisper-1"][-2:] == ["transcription", "retiring"]
    assert table["gpt-transcribe"][-1] == "$0.006 per minute"


def test_check_passes_when_the_account_offers_every_model(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    result = switchboard(env, tmp_path, "models", "check", "--date", "2026-12-07")
    assert result.returncode == 0, result.stderr
    entries = [e for table in load_registry().tables().values() for e in table.values()]
    retired = [e.id for e in entries if status(e, date(2026, 12, 7)) is Status.RETIRED]
    assert sorted(retired) == ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"]
    current = len(entries) - len(retired)
    assert result.stdout.splitlines() == [
        f"The account offers {current} of the registry's {current} current models "
        "(4 retired models not checked)."
    ]
    assert [r.path for r in fake_openai.requests] == ["/v1/models"]


def test_check_reports_models_the_account_does_not_offer(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.offered = [
        m for m in fake_openai.shutdowns if m not in ("gpt-6.2-astra", "gpt-transcribe")
    ]
    result = switchboard(env, tmp_path, "models", "check", "--date", "2026-12-07")
    assert result.returncode == 1
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["chat", "gpt-6.2-astra"] in lines
    assert ["transcription", "gpt-transcribe", "transcription"] in lines
    assert "A model in use is not offered" in result.stdout


def test_check_after_the_speech_endpoint_shut_down(
    env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.today = date(2027, 1, 15)
    env["SWITCHBOARD_SPEECH_MODEL"] = "gpt-4o-mini-tts"
    # The registry's own view a day before the fake's: the speech default is still current
    # to it, and gone at the account.
    result = switchboard(env, tmp_path, "models", "check", "--date", "2027-01-05")
    assert result.returncode == 1
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["speech", "gpt-4o-mini-tts", "speech"] in lines
    assert ["chat", "gpt-4.1-mini"] in lines
    assert not any("gpt-6-luna" in line for line in lines)


def test_check_with_a_bad_key_is_one_line_without_the_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["OPENAI_API_KEY"] = "sk-wrong-secret-key-123456"
    result = switchboard(env, tmp_path, "models", "check")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"switchboard: {env['OPENAI_BASE_URL']} refused OPENAI_API_KEY (401): check the key"
    ]
    assert "sk-wrong" not in result.stderr and "123456" not in result.stderr


def test_check_with_an_unreachable_api_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    env["SWITCHBOARD_OPENAI_TIMEOUT_SECONDS"] = "2"
    result = switchboard(env, tmp_path, "models", "check")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "switchboard: cannot reach http://127.0.0.1:9/v1 (APIConnectionError)"
    ]
    assert "Traceback" not in result.stderr


def test_check_without_a_key_names_the_variable(env: dict[str, str], tmp_path: Path) -> None:
    del env["OPENAI_API_KEY"]
    result = switchboard(env, tmp_path, "models", "check")
    assert result.returncode == 2
    assert result.stderr.strip() == "switchboard: OPENAI_API_KEY is not set"
