"""Model lifecycle data and rules (SPEC §13): shutdown dates and successors in the registry,
the 30-day warning, the 90-day rule for defaults, and following successors."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bots.bootstrap import bootstrap
from core.errors import ConfigError
from core.models.lifecycle import (
    DEFAULT_HORIZON_DAYS,
    WARNING_DAYS,
    ModelLifecycle,
    Status,
    live,
    mark,
    offered,
    shuts_down_within,
    status,
    warnings,
)
from core.models.registry import Registry, load_registry
from core.money.prices import load_prices
from tests.conftest import SettingsFactory


class FixedClock:
    """A clock stopped at one day."""

    def __init__(self, day: date) -> None:
        self.day = day

    def now(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, 12, tzinfo=UTC)


@pytest.fixture
def shipped() -> Registry:
    return load_registry()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_defaults_have_no_shutdown_within_90_days_of_the_check(shipped: Registry) -> None:
    assert shipped.checked is not None
    tables = shipped.tables()
    late = {
        role: name
        for role, name in shipped.defaults().items()
        if shuts_down_within(
            tables["chat" if role == "vision" else role][name],
            shipped.checked,
            DEFAULT_HORIZON_DAYS,
        )
    }
    assert late == {}, late


def test_shipped_defaults_are_the_current_models(shipped: Registry) -> None:
    defaults = shipped.defaults()
    assert defaults["chat"] == defaults["vision"] == "gpt-6-luna"
    assert defaults["transcription"] == "gpt-transcribe"
    assert defaults["image"].startswith("gpt-image-2.6-")


def test_shipped_retirements_match_openais_announcements(shipped: Registry) -> None:
    models, media = shipped.models, shipped.media
    for name in ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini"):
        assert (models[name].shutdown, models[name].successor) == (date(2027, 1, 14), "gpt-6-luna")
    assert (models["gpt-5"].shutdown, models["gpt-5"].successor) == (
        date(2026, 12, 11),
        "gpt-6.1-sol",
    )
    assert models["gpt-5-mini"].successor == "gpt-6.1-terra"
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        entry = media.transcription[name]
        assert (entry.shutdown, entry.successor) == (date(2027, 2, 26), "gpt-transcribe")
    for name in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"):  # every speech-endpoint model
        entry = media.speech[name]
        assert (entry.shutdown, entry.successor) == (date(2027, 1, 6), "gpt-realtime-2.1-mini")
    assert (media.speech["gpt-realtime"].shutdown, media.speech["gpt-realtime"].successor) == (
        date(2027, 1, 20),
        "gpt-realtime-2.1",
    )
    for name in ("gpt-realtime-2.1", "gpt-realtime-2.1-mini"):
        assert media.speech[name].shutdown is None
    assert status(media.images["gpt-image-1"], date(2026, 12, 7)) is Status.RETIRED
    assert status(media.images["gpt-image-1-mini"], date(2026, 12, 7)) is Status.RETIRED
    assert set(shipped.embeddings) == {"text-embedding-3-small", "text-embedding-3-large"}


def test_new_models_are_priced_at_least_as_dearly_as_published(shipped: Registry) -> None:
    prices = load_prices()
    astra = shipped.models["gpt-6.2-astra"].prices
    assert (astra.input, astra.cached_input, astra.output) == (8_000_000, 400_000, 40_000_000)
    # Unpublished cached prices are charged as full input.
    for name in ("gpt-6.1-terra", "gpt-6-luna"):
        spec = shipped.models[name].prices
        assert spec.cached_input == spec.input
    # Unpublished image prices: never below the dearest known image model's.
    for model in ("gpt-image-2.6-sunburst", "gpt-image-2.6-flare"):
        spec = shipped.media.images[model]
        for size in spec.sizes:
            for quality in spec.qualities:
                assert prices.image_cost(model, size, quality) >= max(
                    prices.image_cost(old, size, quality)
                    for old in ("gpt-image-1", "gpt-image-1-mini")
                )
    assert prices.transcription_cost("gpt-transcribe", 60) == max(
        prices.transcription_per_minute.values()
    )


def test_every_shipped_successor_is_in_its_roles_table(shipped: Registry) -> None:
    for role, table in shipped.tables().items():
        for entry in table.values():
            if entry.successor is None:
                continue
            assert entry.successor in table, (role, entry.id, entry.successor)
            assert table[entry.successor].shutdown is None, entry.successor


def test_status_flags_the_30_days_before_a_shutdown(shipped: Registry) -> None:
    gpt4o = shipped.models["gpt-4o"]  # shuts down 2027-01-14
    assert WARNING_DAYS == 30
    assert status(gpt4o, date(2026, 12, 14)) is Status.CURRENT
    assert status(gpt4o, date(2026, 12, 15)) is Status.RETIRING
    assert status(gpt4o, date(2027, 1, 13)) is Status.RETIRING
    assert status(gpt4o, date(2027, 1, 14)) is Status.RETIRED
    assert status(shipped.models["gpt-6-luna"], date(2030, 1, 1)) is Status.CURRENT
    assert mark(gpt4o, date(2026, 12, 20)) == "shuts down 2027-01-14"
    assert mark(gpt4o, date(2027, 1, 20)) == "retired, now gpt-6-luna"
    assert mark(shipped.models["gpt-6-luna"], date(2026, 12, 20)) == ""


def test_offered_models_leave_out_the_retired_and_mark_the_retiring(shipped: Registry) -> None:
    marks = {entry.id: note for entry, note in offered(shipped.models, date(2026, 12, 20))}
    assert "gpt-5" not in marks and "gpt-5-mini" not in marks
    assert marks["gpt-4.1-mini"] == "shuts down 2027-01-14"
    assert marks["gpt-6-luna"] == marks["gpt-6.2-astra"] == ""


def test_live_follows_the_chain_past_retired_and_refused_models(tmp_path: Path) -> None:
    registry = load_registry(
        write(
            tmp_path / "models.toml",
            """
            [models.a]
            api = "chat"
            context_window = 1000
            max_output_tokens = 100
            shutdown = 2027-01-01
            successor = "b"

            [models.b]
            api = "chat"
            context_window = 1000
            max_output_tokens = 100
            shutdown = 2027-06-01
            successor = "c"

            [models.c]
            api = "chat"
            context_window = 1000
            max_output_tokens = 100
            successor = "not-listed"
            """,
        )
    )
    models = registry.models
    assert live(models, models["a"], date(2026, 12, 31)).id == "a"
    assert live(models, models["a"], date(2027, 1, 1)).id == "b"
    assert live(models, models["a"], date(2027, 6, 1)).id == "c"
    assert live(models, models["a"], date(2026, 12, 1), gone={"a", "b"}).id == "c"
    # The chain's end is not listed: keep the last listed model, and let its call fail.
    assert live(models, models["c"], date(2030, 1, 1), gone={"c"}).id == "c"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('shutdown = "next spring"', r"models\.local\.shutdown"),
        ("shutdown = 2027-02-30", "not valid TOML"),
        ('successor = "local"', r"successors go round in a circle: local -> local"),
    ],
    ids=["words-for-a-date", "impossible-date", "own-successor"],
)
def test_a_bad_lifecycle_entry_is_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    models = write(
        tmp_path / "models.toml",
        f'[models.local]\napi = "chat"\ncontext_window = 10\nmax_output_tokens = 1\n{body}\n',
    )
    with pytest.raises(ConfigError, match=expected) as raised:
        load_registry(models)
    assert str(models) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_successor_cycle_across_roles_tables_is_refused(tmp_path: Path) -> None:
    models = write(
        tmp_path / "models.toml",
        """
        [transcription_models.whisper-1]
        successor = "gpt-4o-transcribe"

        [transcription_models.gpt-4o-transcribe]
        successor = "whisper-1"
        """,
    )
    with pytest.raises(ConfigError) as raised:
        load_registry(models)
    assert "successors go round in a circle" in str(raised.value)
    assert "whisper-1 -> gpt-4o-transcribe -> whisper-1" in str(raised.value) or (
        "gpt-4o-transcribe -> whisper-1 -> gpt-4o-transcribe" in str(raised.value)
    )


def test_checked_must_be_a_date(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checked must be a date"):
        load_registry(write(tmp_path / "models.toml", 'checked = "yesterday"\n'))


HOUSE_VOICE = """
[speech_models.house-voice]
voices = ["alloy"]
shutdown = 2027-01-06
successor = "next-voice"
"""
"""A speech model whose successor the registry does not list."""


def test_warnings_name_each_model_in_use_once(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path / "models.toml", HOUSE_VOICE))
    day = date(2026, 12, 20)
    lines = warnings(registry, day, {"transcription": "whisper-1", "speech": "house-voice"})
    assert lines == [
        "model house-voice (speech) shuts down on 2027-01-06, in 17 days; then its successor "
        "next-voice is not in the registry"
    ]
    later = warnings(registry, date(2027, 2, 1), {"image": "gpt-image-1", "speech": "house-voice"})
    assert later == [
        "model gpt-image-1 (image) was shut down on 2026-10-23; calls go to its successor "
        "gpt-image-2.6-sunburst",
        "model house-voice (speech) was shut down on 2027-01-06; its successor next-voice is "
        "not in the registry",
    ]


def test_a_mode_on_a_retiring_model_is_warned_about(tmp_path: Path) -> None:
    registry = load_registry(
        None, write(tmp_path / "modes.toml", '[modes.old]\nsystem_prompt = "hi"\nmodel = "gpt-4o"')
    )
    lines = warnings(registry, date(2027, 1, 4), {"speech": "gpt-4o-mini-tts"})
    assert (
        "model gpt-4o (mode old) shuts down on 2027-01-14, in 10 days; then calls go to its "
        "successor gpt-6-luna"
    ) in lines
    assert len(lines) == 2


async def test_start_up_logs_one_warning_per_model_in_use_near_its_shutdown(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    prices = write(tmp_path / "prices.toml", '[speech_per_million_chars]\n"house-voice" = 1\n')
    settings = make_settings(
        SWITCHBOARD_MODELS_FILE=write(tmp_path / "models.toml", HOUSE_VOICE),
        SWITCHBOARD_PRICES_FILE=prices,
        SWITCHBOARD_TRANSCRIPTION_MODEL="whisper-1",
        SWITCHBOARD_SPEECH_MODEL="house-voice",
    )
    clock = FixedClock(date(2027, 2, 1))
    with caplog.at_level(logging.WARNING, logger="bots.bootstrap"):
        async with bootstrap(settings, clock=clock):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "bots.bootstrap"]
    assert lines == [
        "model whisper-1 (transcription) shuts down on 2027-02-26, in 25 days; then calls go "
        "to its successor gpt-transcribe",
        "model house-voice (speech) was shut down on 2027-01-06; its successor next-voice is "
        "not in the registry",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bots.bootstrap"):
        async with bootstrap(make_settings(), clock=FixedClock(date(2026, 12, 1))):
            pass
    # On the shipped defaults a month before any of them retires: nothing to say.
    assert [r for r in caplog.records if r.name == "bots.bootstrap"] == []


async def test_lifecycle_announces_a_retirement_once() -> None:
    registry = load_registry()
    told: list[tuple[str, str]] = []
    moves: list[tuple[str, str]] = []

    async def on_retired(old: str, new: str) -> None:
        told.append((old, new))

    async def move(old: str, new: str) -> int:
        moves.append((old, new))
        return 3

    clock = FixedClock(date(2027, 1, 15))
    lifecycle = ModelLifecycle(clock, on_retired=on_retired)
    old = registry.models["gpt-4.1-mini"]
    for _ in range(3):
        assert (await lifecycle.use(registry.models, old, move)).id == "gpt-6-luna"
    assert told == moves == [("gpt-4.1-mini", "gpt-6-luna")]
    clock.day -= timedelta(days=10)
    assert (await lifecycle.use(registry.models, old, move)) is old
