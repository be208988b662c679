"""The model and mode registry: shipped data, operator overrides, malformed files, and the
rule that no model id is hard-coded in Python (SPEC §4, §6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import ConfigError, UnknownChoice
from core.models.registry import Registry, load_registry
from core.money.prices import load_prices
from core.tools.builtin import builtin_tools
from core.tools.drawing import DRAW_TOOL

ROOT = Path(__file__).resolve().parent.parent


class FixedClock:
    """A clock stopped at one instant."""

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def shipped() -> Registry:
    return load_registry()


def test_shipped_registry_loads_with_its_defaults(shipped: Registry) -> None:
    assert shipped.models
    assert shipped.modes
    assert shipped.default_model in shipped.models
    assert shipped.default_mode in shipped.modes
    assert shipped.model(None).id == shipped.default_model
    assert shipped.mode(None).id == shipped.default_mode


def test_every_shipped_model_names_its_api_and_limits(shipped: Registry) -> None:
    for name, spec in shipped.models.items():
        assert spec.id == name
        assert spec.api in {"responses", "chat"}
        assert spec.context_window > spec.max_output_tokens > 0
        for price in (spec.prices.input, spec.prices.cached_input, spec.prices.output):
            assert isinstance(price, int)
            assert price >= 0
        assert spec.prices.output > 0, f"{name} has no output price"


def test_shipped_modes_only_use_builtin_tools_and_known_models(shipped: Registry) -> None:
    builtin = {item.name for item in builtin_tools(FixedClock())} | {DRAW_TOOL}
    for mode in shipped.modes.values():
        assert mode.system_prompt.strip()
        assert set(mode.tools) <= builtin, mode.id
        assert mode.model is None or mode.model in shipped.models


def test_prices_become_integer_micro_dollars_per_million(tmp_path: Path) -> None:
    models = write(
        tmp_path / "models.toml",
        """
        [models.local]
        api = "chat"
        context_window = 8192
        max_output_tokens = 1024
        prices = { input = "0.40", cached_input = "0.025", output = 1.6 }
        """,
    )

    prices = load_registry(models).model("local").prices

    assert (prices.input, prices.cached_input, prices.output) == (400_000, 25_000, 1_600_000)


def test_prices_finer_than_a_micro_dollar_per_million_are_refused(tmp_path: Path) -> None:
    models = write(
        tmp_path / "models.toml",
        """
        [models.local]
        api = "chat"
        context_window = 8192
        max_output_tokens = 1024
        prices = { input = "0.0000001" }
        """,
    )

    with pytest.raises(ConfigError, match=r"prices\.input"):
        load_registry(models)


def test_operator_file_changes_one_price_and_keeps_the_rest(
    tmp_path: Path, shipped: Registry
) -> None:
    name = shipped.default_model
    before = shipped.model(name)
    models = write(tmp_path / "models.toml", f'[models."{name}".prices]\ninput = "9.99"\n')

    after = load_registry(models).model(name)

    assert after.prices.input == 9_990_000
    assert after.prices.output == before.prices.output
    assert after.prices.cached_input == before.prices.cached_input
    assert after.model_copy(update={"prices": before.prices}) == before


def test_operator_file_adds_a_chat_model_and_keeps_the_shipped_ones(
    tmp_path: Path, shipped: Registry
) -> None:
    models = write(
        tmp_path / "models.toml",
        """
        [defaults]
        chat = "local-llama"

        [models.local-llama]
        title = "Llama on our GPU box"
        api = "chat"
        context_window = 32768
        max_output_tokens = 4096
        capabilities = ["tools"]
        prices = { input = "0", output = "0" }
        """,
    )

    registry = load_registry(models)

    added = registry.model(None)
    assert added.id == "local-llama"
    assert added.api == "chat"
    assert added.supports_tools
    assert set(shipped.models) < set(registry.models)


def test_operator_modes_file_adds_a_mode_on_a_model(tmp_path: Path, shipped: Registry) -> None:
    modes = write(
        tmp_path / "modes.toml",
        f"""
        [modes.pirate]
        system_prompt = "Talk like a pirate."
        tools = ["calculator"]
        model = "{shipped.default_model}"
        """,
    )

    registry = load_registry(None, modes)

    pirate = registry.mode("pirate")
    assert pirate.system_prompt == "Talk like a pirate."
    assert pirate.tools == ("calculator",)
    assert pirate.model == shipped.default_model
    assert set(shipped.modes) < set(registry.modes)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    models = write(tmp_path / "models.toml", "[models.broken\napi = chat\n")

    with pytest.raises(ConfigError, match=re.escape(str(models))):
        load_registry(models)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_registry(missing)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            '[models.local]\napi = "completions"\ncontext_window = 10\nmax_output_tokens = 1\n',
            "api",
        ),
        ('[models.local]\napi = "chat"\nmax_output_tokens = 1\n', "context_window"),
        (
            '[models.local]\napi = "chat"\ncontext_window = 10\nmax_output_tokens = 1\n'
            'prices = { input = "-0.10" }\n',
            "prices.input",
        ),
        (
            '[models.local]\napi = "chat"\ncontext_window = 10\nmax_output_tokens = 1\n'
            "temperature = 2\n",
            "temperature",
        ),
    ],
    ids=["unknown-api", "missing-context-window", "negative-price", "unknown-key"],
)
def test_invalid_model_entry_names_the_file_and_field(
    tmp_path: Path, body: str, field: str
) -> None:
    models = write(tmp_path / "models.toml", body)

    with pytest.raises(ConfigError) as raised:
        load_registry(models)

    message = str(raised.value)
    assert str(models) in message
    assert field in message


def test_default_naming_a_missing_model_is_refused(tmp_path: Path) -> None:
    models = write(tmp_path / "models.toml", '[defaults]\nchat = "gpt-nonexistent"\n')

    with pytest.raises(ConfigError, match=r"defaults\.chat") as raised:
        load_registry(models)

    assert str(models) in str(raised.value)


def test_default_naming_a_missing_mode_is_refused(tmp_path: Path) -> None:
    modes = write(tmp_path / "modes.toml", '[defaults]\nmode = "nonexistent"\n')

    with pytest.raises(ConfigError, match=r"defaults\.mode"):
        load_registry(None, modes)


def test_mode_on_an_unknown_model_is_refused(tmp_path: Path) -> None:
    modes = write(
        tmp_path / "modes.toml",
        '[modes.odd]\nsystem_prompt = "hi"\nmodel = "gpt-nonexistent"\n',
    )

    with pytest.raises(ConfigError, match="gpt-nonexistent"):
        load_registry(None, modes)


def test_invalid_mode_entry_names_the_modes_file(tmp_path: Path) -> None:
    modes = write(tmp_path / "modes.toml", '[modes.silent]\ntitle = "no prompt"\n')

    with pytest.raises(ConfigError) as raised:
        load_registry(None, modes)

    assert str(modes) in str(raised.value)
    assert "system_prompt" in str(raised.value)


def test_models_of_the_wrong_shape_are_a_config_error(tmp_path: Path) -> None:
    models = write(tmp_path / "models.toml", "models = 3\n")

    with pytest.raises(ConfigError):
        load_registry(models)


def test_unknown_model_lists_the_choices(shipped: Registry) -> None:
    with pytest.raises(UnknownChoice) as raised:
        shipped.model("gpt-nonexistent")

    message = str(raised.value)
    assert "gpt-nonexistent" in message
    for name in shipped.models:
        assert name in message


def test_unknown_mode_lists_the_choices(shipped: Registry) -> None:
    with pytest.raises(UnknownChoice) as raised:
        shipped.mode("juggler")

    for name in shipped.modes:
        assert name in str(raised.value)


def test_no_model_id_is_hard_coded_in_python(shipped: Registry) -> None:
    sources = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "bots").rglob("*.py"))
    assert sources
    quoted = [re.compile(rf"""(["']){re.escape(name)}\1""") for name in shipped.models]
    offenders = [
        f"{path.relative_to(ROOT)}: {pattern.pattern}"
        for path in sources
        for pattern in quoted
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_shipped_media_models_are_consistent_and_priced(shipped: Registry) -> None:
    prices = load_prices()
    media = shipped.media
    assert media.image(None).edits
    assert "vision" in shipped.vision_model(shipped.model(None)).capabilities
    for spec in media.images.values():
        for size in spec.sizes:
            for quality in spec.qualities:
                assert prices.image_cost(spec.id, size, quality) > 0, (spec.id, size, quality)
    for name in media.transcription:
        assert prices.transcription_cost(name, 60) > 0
    for speech in media.speech.values():
        # Realtime models carry token prices in the registry; the others are per character.
        priced = speech.prices is not None if speech.realtime else prices.speech_cost(speech.id, 1)
        assert speech.voices and priced


def test_media_defaults_must_name_known_models(tmp_path: Path) -> None:
    override = tmp_path / "models.toml"
    override.write_text('[defaults]\nspeech = "nonexistent-tts"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"defaults\.speech"):
        load_registry(override)
    override.write_text('[defaults]\nvision = "gpt-3.5-turbo"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"defaults\.vision"):
        load_registry(override)


def test_an_image_model_default_size_must_be_offered(tmp_path: Path) -> None:
    override = tmp_path / "models.toml"
    override.write_text('[image_models."dall-e-3"]\nsize = "640x480"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="dall-e-3"):
        load_registry(override)


def test_realtime_speech_models_carry_token_prices_and_lifecycle(
    shipped: Registry, tmp_path: Path
) -> None:
    default = shipped.media.speaker(None)
    assert (default.id, default.realtime) == ("gpt-realtime-2.1-mini", True)
    assert default.prices is not None and default.prices.audio_output == 20_000_000
    assert default.prices.cached_audio == default.prices.audio_input  # unlisted: uncached price
    older = shipped.media.speaker("gpt-realtime")
    assert (str(older.shutdown), older.successor) == ("2027-01-20", "gpt-realtime-2.1")
    override = tmp_path / "models.toml"
    override.write_text(
        '[speech_models."my-realtime"]\napi = "realtime"\nvoices = ["marin"]\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"my-realtime.*token prices"):
        load_registry(override)
    override.write_text(
        '[speech_models."tts-1"]\nprices = { text_input = "1", cached_text_input = "1", '
        'text_output = "1", audio_input = "1", audio_output = "1" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"tts-1.*per character"):
        load_registry(override)
