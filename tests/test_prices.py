"""The price table for non-token units: shipped data, integer cost maths and its rounding,
operator overrides, and malformed files (SPEC §6, §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.money.prices import ImagePrice, PriceMissing, PriceTable, load_prices

GPT_IMAGE_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
GPT_IMAGE_QUALITIES = ("low", "medium", "high")
EXPECTED_IMAGES = {
    *(
        (model, size, quality)
        for model in ("gpt-image-1", "gpt-image-1-mini")
        for size in GPT_IMAGE_SIZES
        for quality in GPT_IMAGE_QUALITIES
    ),
    *(
        ("dall-e-3", size, quality)
        for size in ("1024x1024", "1024x1792", "1792x1024")
        for quality in ("standard", "hd")
    ),
    *(("dall-e-2", size, "standard") for size in ("256x256", "512x512", "1024x1024")),
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table(**overrides: object) -> PriceTable:
    """A small, hand-made table so the arithmetic tests do not depend on shipped prices."""
    fields: dict[str, object] = {
        "images": {("img", "1024x1024", "high"): 167_000},
        "transcription_per_minute": {"stt": 6_000, "cheap-stt": 3_000, "odd-stt": 7},
        "speech_per_million_chars": {"tts": 15_000_000, "odd-tts": 7},
        "embeddings_per_million_tokens": {"emb": 20_000, "odd-emb": 3},
        "batch_discount_bp": 5_000,
    }
    fields.update(overrides)
    return PriceTable(**fields)  # type: ignore[arg-type]


@pytest.fixture
def shipped() -> PriceTable:
    return load_prices()


# --- the shipped table ------------------------------------------------------------------


def test_shipped_table_prices_every_listed_image(shipped: PriceTable) -> None:
    missing = EXPECTED_IMAGES - set(shipped.images)
    assert not missing
    for key in EXPECTED_IMAGES:
        assert shipped.image_cost(*key) > 0, key


def test_shipped_table_prices_every_listed_audio_and_embedding_model(
    shipped: PriceTable,
) -> None:
    assert set(shipped.transcription_per_minute) >= {
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
    }
    assert set(shipped.speech_per_million_chars) >= {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
    assert set(shipped.embeddings_per_million_tokens) >= {
        "text-embedding-3-small",
        "text-embedding-3-large",
    }
    for prices in (
        shipped.transcription_per_minute,
        shipped.speech_per_million_chars,
        shipped.embeddings_per_million_tokens,
    ):
        assert all(isinstance(price, int) and price > 0 for price in prices.values())


def test_shipped_prices_match_openais_published_list_prices(shipped: PriceTable) -> None:
    assert shipped.image_cost("gpt-image-1", "1024x1024", "low") == 11_000
    assert shipped.image_cost("gpt-image-1", "1536x1024", "high") == 250_000
    assert shipped.image_cost("gpt-image-1-mini", "1024x1536", "medium") == 15_000
    assert shipped.image_cost("dall-e-3", "1792x1024", "hd") == 120_000
    assert shipped.image_cost("dall-e-2", "256x256", "standard") == 16_000
    assert shipped.transcription_per_minute["whisper-1"] == 6_000
    assert shipped.speech_per_million_chars["tts-1"] == 15_000_000
    assert shipped.speech_per_million_chars["tts-1-hd"] == 30_000_000
    assert shipped.embeddings_per_million_tokens["text-embedding-3-small"] == 20_000
    assert shipped.embeddings_per_million_tokens["text-embedding-3-large"] == 130_000
    assert shipped.batch_discount_bp == 5_000


def test_auto_size_is_priced_at_the_dearest_size_of_its_quality(shipped: PriceTable) -> None:
    for model in ("gpt-image-1", "gpt-image-1-mini"):
        for quality in GPT_IMAGE_QUALITIES:
            sizes = [shipped.image_cost(model, size, quality) for size in GPT_IMAGE_SIZES]
            assert shipped.image_cost(model, "auto", quality) == max(sizes)


def test_auto_quality_is_priced_as_high(shipped: PriceTable) -> None:
    for model in ("gpt-image-1", "gpt-image-1-mini"):
        for size in GPT_IMAGE_SIZES:
            assert shipped.image_cost(model, size, "auto") == shipped.image_cost(
                model, size, "high"
            )


def test_the_loaded_table_cannot_be_changed(shipped: PriceTable) -> None:
    with pytest.raises(TypeError):
        shipped.transcription_per_minute["whisper-1"] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        shipped.images[("gpt-image-1", "1024x1024", "low")] = 0  # type: ignore[index]


# --- images ---------------------------------------------------------------------------


def test_image_price_names_the_unit_priced() -> None:
    price = table().image_price("img", "1024x1024", "high")

    assert price == ImagePrice(model="img", size="1024x1024", quality="high", micros=167_000)
    assert table().image_cost("img", "1024x1024", "high") == 167_000


@pytest.mark.parametrize(
    ("model", "size", "quality"),
    [
        ("other", "1024x1024", "high"),
        ("img", "512x512", "high"),
        ("img", "1024x1024", "low"),
    ],
)
def test_an_unpriced_image_raises_price_missing_naming_it(
    model: str, size: str, quality: str
) -> None:
    with pytest.raises(PriceMissing) as caught:
        table().image_cost(model, size, quality)

    message = str(caught.value)
    assert model in message
    assert size in message
    assert quality in message
    assert isinstance(caught.value, ConfigError)


# --- transcription --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "micros"),
    [
        (0, 0),
        (0.0, 0),
        (0.001, 1),  # 0.1 micro-dollar, rounded up
        (0.01, 1),  # exactly 1 micro-dollar: not rounded up again
        (0.1, 10),  # exactly 10; float error would make it 11
        (0.3, 30),
        (1, 100),
        (1.5, 150),
        (59.999, 6_000),  # 5999.9, rounded up
        (59.99, 5_999),
        (60, 6_000),
        (60.0, 6_000),
        (60.001, 6_001),  # 6000.1, rounded up
        (90, 9_000),
        (3_600, 360_000),
    ],
)
def test_transcription_is_billed_by_real_duration_to_the_micro_dollar(
    seconds: float, micros: int
) -> None:
    assert table().transcription_cost("stt", seconds) == micros


@pytest.mark.parametrize(
    ("seconds", "micros"),
    [(1, 50), (1.001, 51), (1.2, 60), (0.02, 1), (0.02001, 2), (1e-05, 1)],
)
def test_transcription_rounds_up_only_what_is_not_a_whole_micro_dollar(
    seconds: float, micros: int
) -> None:
    assert table().transcription_cost("cheap-stt", seconds) == micros


def test_transcription_at_a_price_that_does_not_divide_a_minute() -> None:
    # 7 micro-dollars a minute: 30 s is 3.5, one minute 7, 61 s 7.1166…
    assert table().transcription_cost("odd-stt", 30) == 4
    assert table().transcription_cost("odd-stt", 60) == 7
    assert table().transcription_cost("odd-stt", 61) == 8


@pytest.mark.parametrize("seconds", [-0.001, float("nan"), float("inf")])
def test_transcription_refuses_an_impossible_duration(seconds: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        table().transcription_cost("stt", seconds)


def test_transcription_with_an_unpriced_model_raises_price_missing() -> None:
    with pytest.raises(PriceMissing, match=r"transcription price for 'whisper-9'"):
        table().transcription_cost("whisper-9", 10)


# --- speech, embeddings, batch --------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "characters", "micros"),
    [
        ("tts", 0, 0),
        ("tts", 1, 15),
        ("tts", 4_095, 61_425),
        ("tts", 1_000_000, 15_000_000),
        ("odd-tts", 1, 1),  # 0.000007 micro-dollar, rounded up
        ("odd-tts", 142_857, 1),  # 0.999999
        ("odd-tts", 142_858, 2),  # 1.000006
        ("odd-tts", 1_000_000, 7),
    ],
)
def test_speech_is_billed_per_character_rounded_up(
    model: str, characters: int, micros: int
) -> None:
    assert table().speech_cost(model, characters) == micros


@pytest.mark.parametrize(
    ("model", "tokens", "micros"),
    [
        ("emb", 0, 0),
        ("emb", 1, 1),  # 0.02 micro-dollar, rounded up
        ("emb", 50, 1),  # exactly 1
        ("emb", 51, 2),
        ("emb", 1_000_000, 20_000),
        ("odd-emb", 333_333, 1),  # 0.999999
        ("odd-emb", 333_334, 2),
    ],
)
def test_embeddings_are_billed_per_token_rounded_up(model: str, tokens: int, micros: int) -> None:
    assert table().embedding_cost(model, tokens) == micros


@pytest.mark.parametrize(
    ("discount_bp", "token_cost", "micros"),
    [
        (5_000, 0, 0),
        (5_000, 1, 1),  # half a micro-dollar, rounded up
        (5_000, 2, 1),
        (5_000, 3, 2),
        (5_000, 1_000_001, 500_001),
        (2_500, 4, 3),
        (2_500, 5, 4),  # 3.75
        (0, 12_345, 12_345),
        (10_000, 12_345, 0),
        (1, 10_000, 9_999),
    ],
)
def test_batch_discount_is_applied_in_basis_points_rounded_up(
    discount_bp: int, token_cost: int, micros: int
) -> None:
    assert table(batch_discount_bp=discount_bp).batch_cost(token_cost) == micros


def test_speech_and_embeddings_with_unpriced_models_raise_price_missing() -> None:
    with pytest.raises(PriceMissing, match=r"speech price for 'tts-9'"):
        table().speech_cost("tts-9", 10)
    with pytest.raises(PriceMissing, match=r"embeddings price for 'emb-9'"):
        table().embedding_cost("emb-9", 10)


def test_negative_quantities_are_refused() -> None:
    with pytest.raises(ValueError, match="characters"):
        table().speech_cost("tts", -1)
    with pytest.raises(ValueError, match="tokens"):
        table().embedding_cost("emb", -1)
    with pytest.raises(ValueError, match="token cost"):
        table().batch_cost(-1)


def test_shipped_costs_for_typical_calls(shipped: PriceTable) -> None:
    assert shipped.transcription_cost("whisper-1", 59.999) == 6_000
    assert shipped.transcription_cost("gpt-4o-mini-transcribe", 0.001) == 1
    assert shipped.speech_cost("tts-1-hd", 1_000) == 30_000
    assert shipped.embedding_cost("text-embedding-3-large", 1_000) == 130
    assert shipped.batch_cost(1_001) == 501


# --- operator overrides ---------------------------------------------------------------


def test_operator_file_replaces_one_price_and_keeps_the_rest(
    tmp_path: Path, shipped: PriceTable
) -> None:
    prices = write(
        tmp_path / "prices.toml",
        """
        [images."gpt-image-1".low]
        "1024x1024" = 12_000

        [transcription_per_minute]
        "whisper-1" = 5_000
        """,
    )

    merged = load_prices(prices)

    assert merged.image_cost("gpt-image-1", "1024x1024", "low") == 12_000
    assert merged.transcription_per_minute["whisper-1"] == 5_000
    changed = {("gpt-image-1", "1024x1024", "low")}
    assert {k: v for k, v in merged.images.items() if k not in changed} == {
        k: v for k, v in shipped.images.items() if k not in changed
    }
    assert (
        merged.transcription_per_minute["gpt-4o-transcribe"]
        == (shipped.transcription_per_minute["gpt-4o-transcribe"])
    )
    assert merged.speech_per_million_chars == shipped.speech_per_million_chars
    assert merged.embeddings_per_million_tokens == shipped.embeddings_per_million_tokens
    assert merged.batch_discount_bp == shipped.batch_discount_bp


def test_operator_file_adds_models_and_changes_the_batch_discount(
    tmp_path: Path, shipped: PriceTable
) -> None:
    prices = write(
        tmp_path / "prices.toml",
        """
        batch_discount_bp = 2_500

        [images."local-diffusion".standard]
        "512x512" = 0
        "768x768" = 1_000

        [speech_per_million_chars]
        "piper" = 0

        [embeddings_per_million_tokens]
        "nomic-embed-text" = 5
        """,
    )

    merged = load_prices(prices)

    assert merged.image_cost("local-diffusion", "768x768", "standard") == 1_000
    assert merged.image_cost("local-diffusion", "512x512", "standard") == 0
    assert merged.speech_cost("piper", 10_000) == 0
    assert merged.embedding_cost("nomic-embed-text", 1_000_000) == 5
    assert merged.batch_cost(100) == 75
    assert set(shipped.images) < set(merged.images)
    assert merged.speech_per_million_chars["tts-1"] == shipped.speech_per_million_chars["tts-1"]


def test_an_empty_operator_file_changes_nothing(tmp_path: Path, shipped: PriceTable) -> None:
    assert load_prices(write(tmp_path / "prices.toml", "")) == shipped


# --- malformed operator files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[transcription_per_minute]\n"whisper-1" = 0.006', "transcription_per_minute.whisper-1"),
        ('[transcription_per_minute]\n"whisper-1" = "6000"', "transcription_per_minute.whisper-1"),
        ('[speech_per_million_chars]\n"tts-1" = -1', "speech_per_million_chars.tts-1"),
        ('[speech_per_million_chars]\n"tts-1" = true', "speech_per_million_chars.tts-1"),
        (
            '[embeddings_per_million_tokens]\n"text-embedding-3-small" = [1]',
            "embeddings_per_million_tokens.text-embedding-3-small",
        ),
        ('[images."gpt-image-1".low]\n"1024x1024" = 1.5', "images.gpt-image-1.low.1024x1024"),
        ('[images."gpt-4.1-image".low]\n"1024x1024" = "x"', 'images."gpt-4.1-image".low.1024x1024'),
        ("batch_discount_bp = 0.5", "batch_discount_bp"),
        ('batch_discount_bp = "50%"', "batch_discount_bp"),
        ("batch_discount_bp = -1", "batch_discount_bp"),
    ],
)
def test_a_price_that_is_not_a_whole_number_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    prices = write(tmp_path / "prices.toml", text)

    with pytest.raises(ConfigError, match="whole number") as caught:
        load_prices(prices)

    assert str(caught.value).startswith(f"{prices}: {key}:")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("transcription_per_minute = 6000", "transcription_per_minute"),
        ('images = "none"', "images"),
        ('images."gpt-image-1" = 5', "images.gpt-image-1"),
        ('[images."gpt-image-1"]\nlow = 11000', "images.gpt-image-1.low"),
    ],
)
def test_a_value_where_a_table_belongs_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    prices = write(tmp_path / "prices.toml", text)

    with pytest.raises(ConfigError, match="expected a table") as caught:
        load_prices(prices)

    assert str(caught.value).startswith(f"{prices}: {key}:")


def test_image_prices_nested_size_before_quality_are_refused(tmp_path: Path) -> None:
    prices = write(tmp_path / "prices.toml", '[images."gpt-image-1"."1024x1024"]\nlow = 11000')

    with pytest.raises(ConfigError, match=r"images\.gpt-image-1\.1024x1024\.low: expected a size"):
        load_prices(prices)


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("[transcription]\nwhisper-1 = 6000", "transcription"),
        ('[models."gpt-4.1".prices]\ninput = 2', "models"),
        ("batch_discount = 5000", "batch_discount"),
    ],
)
def test_unknown_sections_are_refused_naming_them(tmp_path: Path, text: str, section: str) -> None:
    prices = write(tmp_path / "prices.toml", text)

    with pytest.raises(ConfigError, match=f"unknown section {section};") as caught:
        load_prices(prices)

    assert str(caught.value).startswith(f"{prices}: ")


def test_a_discount_above_one_hundred_percent_is_refused(tmp_path: Path) -> None:
    prices = write(tmp_path / "prices.toml", "batch_discount_bp = 10001")

    with pytest.raises(ConfigError, match=r"batch_discount_bp: must be at most 10000"):
        load_prices(prices)


def test_an_empty_model_name_is_refused(tmp_path: Path) -> None:
    prices = write(tmp_path / "prices.toml", '[speech_per_million_chars]\n"" = 1')

    with pytest.raises(ConfigError, match=r'speech_per_million_chars\."": names cannot be empty'):
        load_prices(prices)


def test_an_unreadable_or_invalid_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"cannot read {missing}"):
        load_prices(missing)

    broken = write(tmp_path / "broken.toml", "[speech_per_million_chars\n")
    with pytest.raises(ConfigError, match=f"{broken} is not valid TOML"):
        load_prices(broken)


def test_realtime_cost_prices_text_and_audio_apart_and_rounds_up() -> None:
    from core.models.realtime import RealtimeUsage
    from core.models.registry import RealtimePrices
    from core.money.pricing import realtime_cost

    prices = RealtimePrices(
        text_input="4.00",
        cached_text_input="0.40",
        text_output="16.00",
        audio_input="32.00",
        cached_audio_input="0.40",
        audio_output="64.00",
    )
    usage = RealtimeUsage(
        text_input=1_000,
        cached_text_input=400,
        audio_input=500,
        cached_audio_input=100,
        text_output=30,
        audio_output=700,
    )
    # 600 * 4 + 400 * 0.4 + 400 * 32 + 100 * 0.4 + 30 * 16 + 700 * 64 = 60 680 micro-dollars
    assert realtime_cost(prices, usage) == 60_680
    assert realtime_cost(prices, RealtimeUsage(text_input=1)) == 4
    assert realtime_cost(prices, RealtimeUsage(cached_text_input=1, text_input=1)) == 1  # 0.4 up
    assert realtime_cost(prices, RealtimeUsage()) == 0
