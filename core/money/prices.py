"""The price table for billable units other than chat tokens (images, audio, embeddings,
batch discount): shipped TOML data merged with the operator's own, and integer cost maths."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.errors import ConfigError

PER_MILLION = 1_000_000
SECONDS_PER_MINUTE = 60
FULL_BP = 10_000
SHIPPED = "shipped prices.toml"

_PER_MODEL_SECTIONS = (
    "transcription_per_minute",
    "speech_per_million_chars",
    "embeddings_per_million_tokens",
    "fine_tuning_training_per_million_tokens",
)
_SECTIONS = ("batch_discount_bp", "images", *_PER_MODEL_SECTIONS)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Catches a file nested model → size → quality instead of model → quality → size.
_IMAGE_SIZE = re.compile(r"\d+x\d+|auto")


class PriceMissing(ConfigError):
    """The price table has no price for a unit that was used; the message names the unit."""


@dataclass(frozen=True, slots=True)
class ImagePrice:
    """The price of one image of ``model`` at ``size`` and ``quality``, in micro-dollars."""

    model: str
    size: str
    quality: str
    micros: int


@dataclass(frozen=True)
class PriceTable:
    """Prices in integer micro-dollars; every cost is rounded up to the next micro-dollar."""

    images: Mapping[tuple[str, str, str], int]
    transcription_per_minute: Mapping[str, int]
    speech_per_million_chars: Mapping[str, int]
    embeddings_per_million_tokens: Mapping[str, int]
    batch_discount_bp: int
    fine_tuning_training_per_million_tokens: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Training prices of the models that can be fine-tuned (``/finetune``)."""

    def image_price(self, model: str, size: str, quality: str) -> ImagePrice:
        """The price of one image, as recorded on a usage row; raises ``PriceMissing``."""
        micros = self.images.get((model, size, quality))
        if micros is None:
            raise PriceMissing(f"no price for a {size} {quality} image from {model!r}")
        return ImagePrice(model, size, quality, micros)

    def image_cost(self, model: str, size: str, quality: str) -> int:
        """Cost of one image in micro-dollars; raises ``PriceMissing``."""
        return self.image_price(model, size, quality).micros

    def transcription_cost(self, model: str, seconds: float) -> int:
        """Cost of transcribing ``seconds`` of audio, billed by real duration.

        ``seconds`` is read as the decimal it prints as, so 0.1 s is exactly a tenth of a
        second and float error never adds a micro-dollar.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"audio duration must be a finite number ≥ 0, not {seconds!r}")
        per_minute = _price(self.transcription_per_minute, model, "transcription")
        scaled = Fraction(str(seconds)) * per_minute
        return _ceil_div(scaled.numerator, scaled.denominator * SECONDS_PER_MINUTE)

    def speech_cost(self, model: str, characters: int) -> int:
        """Cost of speaking ``characters`` characters of text."""
        per_million = _price(self.speech_per_million_chars, model, "speech")
        return _ceil_div(_count(characters, "characters") * per_million, PER_MILLION)

    def embedding_cost(self, model: str, tokens: int) -> int:
        """Cost of embedding ``tokens`` input tokens."""
        per_million = _price(self.embeddings_per_million_tokens, model, "embeddings")
        return _ceil_div(_count(tokens, "tokens") * per_million, PER_MILLION)

    def training_cost(self, model: str, tokens: int) -> int:
        """Cost of fine-tuning ``model`` on ``tokens`` training tokens (epochs included);
        raises ``PriceMissing`` when the model has no training price."""
        per_million = _price(self.fine_tuning_training_per_million_tokens, model, "fine-tuning")
        return _ceil_div(_count(tokens, "tokens") * per_million, PER_MILLION)

    def batch_cost(self, token_cost_micros: int) -> int:
        """A batch job's token cost after the batch discount."""
        kept = FULL_BP - self.batch_discount_bp
        return _ceil_div(_count(token_cost_micros, "token cost") * kept, FULL_BP)


def load_prices(override: Path | None = None) -> PriceTable:
    """Load the shipped price table, merging the operator's file over it entry by entry."""
    text = resources.files("core.data").joinpath("prices.toml").read_text(encoding="utf-8")
    prices = _parse(tomllib.loads(text), SHIPPED)
    if override is not None:
        for section, entries in _parse(_read(override), str(override)).items():
            prices[section].update(entries)
    batch = prices["batch"]
    if "discount_bp" not in batch:
        raise ConfigError(f"{SHIPPED}: batch_discount_bp is missing")
    return PriceTable(
        images=MappingProxyType(prices["images"]),
        transcription_per_minute=MappingProxyType(prices["transcription_per_minute"]),
        speech_per_million_chars=MappingProxyType(prices["speech_per_million_chars"]),
        embeddings_per_million_tokens=MappingProxyType(prices["embeddings_per_million_tokens"]),
        batch_discount_bp=batch["discount_bp"],
        fine_tuning_training_per_million_tokens=MappingProxyType(
            prices["fine_tuning_training_per_million_tokens"]
        ),
    )


def _parse(data: dict[str, Any], origin: str) -> dict[str, dict[Any, int]]:
    """One file's prices, validated and flattened: images keyed by (model, size, quality)."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{origin}: unknown section {_path(unknown[0])}; expected one of {', '.join(_SECTIONS)}"
        )
    prices: dict[str, dict[Any, int]] = {
        section: {} for section in ("batch", "images", *_PER_MODEL_SECTIONS)
    }
    if "batch_discount_bp" in data:
        bp = _micros(data["batch_discount_bp"], origin, ("batch_discount_bp",))
        if bp > FULL_BP:
            raise ConfigError(f"{origin}: batch_discount_bp: must be at most {FULL_BP} (100%)")
        prices["batch"]["discount_bp"] = bp
    for model, qualities in _table(data.get("images", {}), ("images",), origin).items():
        for quality, sizes in _table(qualities, ("images", model), origin).items():
            for size, value in _table(sizes, ("images", model, quality), origin).items():
                where = ("images", model, quality, size)
                if not _IMAGE_SIZE.fullmatch(size):
                    raise ConfigError(
                        f"{origin}: {_path(*where)}: expected a size such as 1024x1024 or auto "
                        "(images are priced as images.<model>.<quality>.<size>)"
                    )
                prices["images"][(model, size, quality)] = _micros(value, origin, where)
    for section in _PER_MODEL_SECTIONS:
        for model, value in _table(data.get(section, {}), (section,), origin).items():
            prices[section][model] = _micros(value, origin, (section, model))
    return prices


def _table(value: object, where: tuple[str, ...], origin: str) -> dict[str, Any]:
    """``value``, the table at ``where``, refusing anything that is not a table of names."""
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: {_path(*where)}: expected a table, got {value!r}")
    if "" in value:
        raise ConfigError(f"{origin}: {_path(*where, '')}: names cannot be empty")
    return value


def _micros(value: object, origin: str, where: tuple[str, ...]) -> int:
    # bool is an int in Python; `true` is never a price.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{origin}: {_path(*where)}: expected a whole number ≥ 0, got {value!r}")
    return value


def _path(*parts: str) -> str:
    return ".".join(part if _BARE_KEY.fullmatch(part) else f'"{part}"' for part in parts)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _price(prices: Mapping[str, int], model: str, unit: str) -> int:
    price = prices.get(model)
    if price is None:
        raise PriceMissing(f"no {unit} price for {model!r}")
    return price


def _count(value: int, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what} cannot be negative, not {value}")
    return value


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
