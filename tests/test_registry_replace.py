"""Registry files that replace the shipped models instead of adding to them (``replace =
true``): the Ollama example the README points to, and the demo registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.models.registry import load_registry
from core.money.prices import load_prices
from tests.conftest import API_KEY
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).parents[1]
OLLAMA = ROOT / "docs" / "ollama.models.toml"
DEMO = ROOT / "core" / "data" / "demo_models.toml"
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def test_the_ollama_example_replaces_the_chat_models_and_keeps_media() -> None:
    registry = load_registry(OLLAMA)
    assert list(registry.models) == ["llama3.2", "qwen2.5", "gemma3"]
    assert registry.default_model == "llama3.2"
    assert registry.vision_model(registry.model(None)).id == "gemma3"
    assert all(m.api == "chat" and m.prices.output == 0 for m in registry.models.values())
    assert registry.media.images  # no [image_models] in the file: the shipped ones stay


def test_the_demo_registry_has_only_its_stand_ins_and_zero_prices() -> None:
    registry = load_registry(DEMO)
    prices = load_prices(DEMO.with_name("demo_prices.toml"))
    assert list(registry.models) == ["demo"]
    assert list(registry.media.images) == ["demo-draw"]
    assert list(registry.media.transcription) == ["demo-listen"]
    assert list(registry.media.speech) == ["demo-voice"]
    assert prices.image_cost("demo-draw", "512x512", "standard") == 0
    assert prices.transcription_cost("demo-listen", 60) == 0
    assert prices.speech_cost("demo-voice", 1000) == 0


def test_replacing_needs_defaults_of_its_own(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text(
        'replace = true\n[models.local]\napi = "chat"\ncontext_window = 8192\n'
        "max_output_tokens = 512\n",
        encoding="utf-8",
    )
    # The shipped default (an OpenAI model) went with the shipped models.
    with pytest.raises(ConfigError, match=r"defaults\.chat names no model"):
        load_registry(file)


def test_replace_must_be_a_boolean(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text('replace = "yes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="replace must be true or false"):
        load_registry(file)


def test_model_command_lists_only_the_ollama_models(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    result = subprocess.run(
        [SWITCHBOARD, "chat", "--user", "ada"],
        input="/model\n/model gpt-4.1-mini\n/model qwen2.5\n",
        env={
            "PATH": "/usr/bin:/bin",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
            "SWITCHBOARD_MODELS_FILE": str(OLLAMA),
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("Unknown model")[0]
    assert "• llama3.2" in listing and "• qwen2.5" in listing and "• gemma3" in listing
    assert "gpt" not in listing
    assert "Unknown model 'gpt-4.1-mini'. Try one of: llama3.2, qwen2.5, gemma3." in result.stdout
    assert "Qwen 2.5 7B (Ollama)" in result.stdout
