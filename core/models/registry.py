"""The model and mode registries: shipped TOML data files, merged with the operator's own."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import ConfigError, UnknownChoice

MICRO = 1_000_000
FINE_TUNING = "fine-tuning"
"""The capability of a model that can be the base of a fine-tuning job."""


class TokenPrices(BaseModel):
    """Prices in micro-dollars per one million tokens (so $0.40 / 1M tokens is 400_000)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: int = 0
    cached_input: int = 0
    output: int = 0

    @field_validator("input", "cached_input", "output", mode="before")
    @classmethod
    def _dollars_to_micro(cls, value: object) -> int:
        return _micro_per_million(value)


def _micro_per_million(value: object) -> int:
    amount = Decimal(str(value))
    if amount < 0:
        raise ValueError("prices cannot be negative")
    micro = amount * MICRO
    if micro != micro.to_integral_value():
        raise ValueError("prices are kept to the micro-dollar per 1M tokens")
    return int(micro)


class RealtimePrices(BaseModel):
    """A realtime model's prices in micro-dollars per one million tokens, text and audio
    apart (audio costs several times text). Cached audio defaults to the uncached price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text_input: int
    cached_text_input: int
    text_output: int
    audio_input: int
    cached_audio_input: int | None = None
    audio_output: int

    @field_validator("*", mode="before")
    @classmethod
    def _dollars_to_micro(cls, value: object) -> int | None:
        return None if value is None else _micro_per_million(value)

    @property
    def cached_audio(self) -> int:
        """The price of cached audio input (the uncached price when none is listed)."""
        return self.audio_input if self.cached_audio_input is None else self.cached_audio_input


class Entry(BaseModel):
    """What every registry entry has, whatever its role: its id, a title, and its lifecycle:
    the day OpenAI stops serving it and the model of the same role that takes over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str = ""
    shutdown: date | None = None
    successor: str | None = None


class ModelSpec(Entry):
    """One model: which API it speaks, its limits, capabilities and prices."""

    api: Literal["responses", "chat"]
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    capabilities: frozenset[str] = frozenset()
    encoding: str | None = None
    prices: TokenPrices = TokenPrices()
    training_example_tokens: int | None = Field(default=None, gt=0)
    """The most tokens one fine-tuning example may have (None: the context window)."""

    @property
    def supports_tools(self) -> bool:
        """Whether the model can call functions."""
        return "tools" in self.capabilities


class ModeSpec(BaseModel):
    """A persona: its system prompt, the tools it may use and, optionally, its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str = ""
    description: str = ""
    system_prompt: str
    tools: tuple[str, ...] = ()
    model: str | None = None


class ImageModelSpec(Entry):
    """An image model: the sizes and qualities it takes, whether it edits pictures, and
    whether it must be asked for inline data (older models answer with a URL otherwise)."""

    sizes: tuple[str, ...] = Field(min_length=1)
    qualities: tuple[str, ...] = Field(min_length=1)
    size: str
    quality: str
    edits: bool = False
    ask_for_b64: bool = False
    max_prompt_chars: int = Field(default=4000, gt=0)

    @model_validator(mode="after")
    def _defaults_are_offered(self) -> ImageModelSpec:
        if self.size not in self.sizes or self.quality not in self.qualities:
            raise ValueError("size and quality must be among sizes and qualities")
        return self


class TranscriptionModelSpec(Entry):
    """A speech-to-text model and the largest file it accepts."""

    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)


class SpeechModelSpec(Entry):
    """A text-to-speech model: its voices and the longest text one call takes.

    ``api = "speech"`` models use the speech endpoint, priced per character in
    prices.toml; ``api = "realtime"`` models speak through a Realtime API session and
    carry their token ``prices`` here.
    """

    api: Literal["speech", "realtime"] = "speech"
    voices: tuple[str, ...] = Field(min_length=1)
    max_input_chars: int = Field(default=4096, gt=0)
    prices: RealtimePrices | None = None

    @model_validator(mode="after")
    def _realtime_is_priced(self) -> SpeechModelSpec:
        if self.api == "realtime" and self.prices is None:
            raise ValueError("a realtime model needs its token prices")
        if self.api == "speech" and self.prices is not None:
            raise ValueError("speech-endpoint models are priced per character in prices.toml")
        return self

    @property
    def realtime(self) -> bool:
        """Whether this model speaks through a Realtime API session."""
        return self.api == "realtime"


class EmbeddingModelSpec(Entry):
    """An embedding model (priced per input token in the price table)."""


@dataclass(frozen=True)
class MediaModels:
    """The image, transcription and speech models, and which ones are used by default."""

    images: Mapping[str, ImageModelSpec] = field(default_factory=dict)
    transcription: Mapping[str, TranscriptionModelSpec] = field(default_factory=dict)
    speech: Mapping[str, SpeechModelSpec] = field(default_factory=dict)
    default_image: str = ""
    default_transcription: str = ""
    default_speech: str = ""
    default_vision: str = ""

    def image(self, name: str | None) -> ImageModelSpec:
        """The image model called ``name``, or the default; raises ``ConfigError``."""
        return _pick(self.images, name or self.default_image, "image")

    def transcriber(self, name: str | None) -> TranscriptionModelSpec:
        """The transcription model called ``name``, or the default."""
        return _pick(self.transcription, name or self.default_transcription, "transcription")

    def speaker(self, name: str | None) -> SpeechModelSpec:
        """The speech model called ``name``, or the default."""
        return _pick(self.speech, name or self.default_speech, "speech")


_Spec = TypeVar(
    "_Spec",
    "ModelSpec",
    "EmbeddingModelSpec",
    "ModeSpec",
    "ImageModelSpec",
    "TranscriptionModelSpec",
    "SpeechModelSpec",
)
_Media = TypeVar("_Media", "ImageModelSpec", "TranscriptionModelSpec", "SpeechModelSpec")


def _pick(entries: Mapping[str, _Media], name: str, kind: str) -> _Media:
    spec = entries.get(name)
    if spec is None:
        known = ", ".join(entries) or "none"
        raise ConfigError(f"unknown {kind} model {name!r}; the registry has: {known}")
    return spec


@dataclass(frozen=True)
class Registry:
    """Models and modes by id, with the defaults used when a conversation chose none.
    ``models`` grows while the bot runs: fine-tuned models join it (``add_fine_tuned``)."""

    models: dict[str, ModelSpec]
    modes: Mapping[str, ModeSpec]
    default_model: str
    default_mode: str
    media: MediaModels = field(default_factory=MediaModels)
    embeddings: Mapping[str, EmbeddingModelSpec] = field(default_factory=dict)
    checked: date | None = None
    """The day the registry's facts (dates, successors, prices) were last checked."""
    default_fine_tune: str = ""
    """The base model of ``/finetune`` when the conversation's model cannot be fine-tuned."""

    def tables(self) -> dict[str, Mapping[str, Entry]]:
        """Every role's entries by id; a successor names an entry of its own role's table."""
        return {
            "chat": self.models,
            "image": self.media.images,
            "transcription": self.media.transcription,
            "speech": self.media.speech,
            "embedding": self.embeddings,
        }

    def defaults(self) -> dict[str, str]:
        """The default model id of each role that has one (vision: a chat model)."""
        chosen = {
            "chat": self.default_model,
            "vision": self.media.default_vision,
            "image": self.media.default_image,
            "transcription": self.media.default_transcription,
            "speech": self.media.default_speech,
        }
        return {role: name for role, name in chosen.items() if name}

    def vision_model(self, current: ModelSpec) -> ModelSpec:
        """``current`` if it can see pictures, else the registry's default vision model."""
        if "vision" in current.capabilities:
            return current
        return self.model(self.media.default_vision or None)

    def fine_tune_base(self, current: ModelSpec) -> ModelSpec | None:
        """The model a fine-tune starts from: ``current`` if it can be fine-tuned, else the
        registry's default for fine-tuning; None if neither can."""
        for spec in (current, self.models.get(self.default_fine_tune)):
            if spec is not None and FINE_TUNING in spec.capabilities:
                return spec
        return None

    def add_fine_tuned(self, name: str, base: str) -> ModelSpec | None:
        """Offer the fine-tuned model ``name`` (an ``ft:…`` id) from now on, with the limits,
        prices, shutdown and successor of its ``base`` (it works until the base shuts down);
        None when the registry does not know the base. Adding it again changes nothing."""
        spec = self.models.get(name)
        if spec is not None:
            return spec
        origin = self.models.get(base)
        if origin is None:
            return None
        parts = name.split(":")
        label = parts[3] if len(parts) > 3 and parts[3] else name
        spec = origin.model_copy(
            update={
                "id": name,
                "title": f"{origin.title or origin.id} fine-tune {label}",
                "capabilities": origin.capabilities - {FINE_TUNING},
            }
        )
        self.models[name] = spec
        return spec

    def model(self, name: str | None) -> ModelSpec:
        """The model called ``name``, or the default; raises ``UnknownChoice``."""
        spec = self.models.get(name or self.default_model)
        if spec is None:
            raise UnknownChoice(f"Unknown model {name!r}. Try one of: {', '.join(self.models)}.")
        return spec

    def mode(self, name: str | None) -> ModeSpec:
        """The mode called ``name``, or the default; raises ``UnknownChoice``."""
        spec = self.modes.get(name or self.default_mode)
        if spec is None:
            raise UnknownChoice(f"Unknown mode {name!r}. Try one of: {', '.join(self.modes)}.")
        return spec


def load_registry(models_file: Path | None = None, modes_file: Path | None = None) -> Registry:
    """Load the shipped registry files with the operator's files over them: merged entry by
    entry, or, in a file that says ``replace = true``, each section the file has (such as
    ``[models]``) replacing the shipped one; ``[defaults]`` always merges key by key."""
    models_origin = str(models_file or "shipped models.toml")
    modes_origin = str(modes_file or "shipped modes.toml")
    models_data = _overlay(_shipped("models.toml"), _read(models_file), models_origin)
    modes_data = _overlay(_shipped("modes.toml"), _read(modes_file), modes_origin)
    models = {
        name: _validate(ModelSpec, name, spec, models_origin, "models")
        for name, spec in _tables(models_data, "models", models_origin).items()
    }
    modes = {
        name: _validate(ModeSpec, name, spec, modes_origin, "modes")
        for name, spec in _tables(modes_data, "modes", modes_origin).items()
    }
    default_model = str(models_data.get("defaults", {}).get("chat", ""))
    default_mode = str(modes_data.get("defaults", {}).get("mode", ""))
    if default_model not in models:
        raise ConfigError(f"{models_origin}: defaults.chat names no model in the registry")
    if default_mode not in modes:
        raise ConfigError(f"{modes_origin}: defaults.mode names no mode")
    for mode in modes.values():
        if mode.model is not None and mode.model not in models:
            raise ConfigError(f"mode {mode.id!r} uses unknown model {mode.model!r}")
    registry = Registry(
        models,
        modes,
        default_model,
        default_mode,
        _media(models_data, models, models_origin),
        {
            name: _validate(EmbeddingModelSpec, name, spec, models_origin, "embedding_models")
            for name, spec in _tables(models_data, "embedding_models", models_origin).items()
        },
        _checked(models_data.get("checked"), models_origin),
        _fine_tune_default(models_data, models, models_origin),
    )
    for table in registry.tables().values():
        _check_successors(table, models_origin)
    return registry


def _fine_tune_default(data: dict[str, Any], models: Mapping[str, ModelSpec], origin: str) -> str:
    name = str(data.get("defaults", {}).get("fine_tune", ""))
    spec = models.get(name)
    if name and (spec is None or FINE_TUNING not in spec.capabilities):
        raise ConfigError(
            f"{origin}: defaults.fine_tune must name a model with the {FINE_TUNING} capability"
        )
    return name


def _checked(value: object, origin: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ConfigError(f"{origin}: checked must be a date, such as 2026-12-07")


def _check_successors(table: Mapping[str, Entry], origin: str) -> None:
    """Refuse a successor chain that loops back on itself. A successor the table does not
    list is allowed (the operator's server may serve it, or another data file may add it);
    ``switchboard models`` and the start-up check point it out."""
    for start in table:
        seen = [start]
        entry = table[start]
        while entry.successor is not None and entry.successor in table:
            if entry.successor in seen:
                loop = " -> ".join([*seen[seen.index(entry.successor) :], entry.successor])
                raise ConfigError(f"{origin}: successors go round in a circle: {loop}")
            seen.append(entry.successor)
            entry = table[entry.successor]


def _media(data: dict[str, Any], models: Mapping[str, ModelSpec], origin: str) -> MediaModels:
    def entries(section: str, kind: type[_Media]) -> dict[str, _Media]:
        return {
            name: _validate(kind, name, spec, origin, section)
            for name, spec in _tables(data, section, origin).items()
        }

    defaults = data.get("defaults", {})
    media = MediaModels(
        images=entries("image_models", ImageModelSpec),
        transcription=entries("transcription_models", TranscriptionModelSpec),
        speech=entries("speech_models", SpeechModelSpec),
        default_image=str(defaults.get("image", "")),
        default_transcription=str(defaults.get("transcription", "")),
        default_speech=str(defaults.get("speech", "")),
        default_vision=str(defaults.get("vision", "")),
    )
    checks: tuple[tuple[str, str, Mapping[str, object]], ...] = (
        ("image", media.default_image, media.images),
        ("transcription", media.default_transcription, media.transcription),
        ("speech", media.default_speech, media.speech),
    )
    for what, name, known in checks:
        if name and name not in known:
            raise ConfigError(f"{origin}: defaults.{what} names no {what} model in the registry")
    vision = models.get(media.default_vision)
    if media.default_vision and (vision is None or "vision" not in vision.capabilities):
        raise ConfigError(f"{origin}: defaults.vision must name a model with the vision capability")
    return media


def _tables(data: dict[str, Any], section: str, origin: str) -> dict[str, dict[str, Any]]:
    entries = data.get(section, {})
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise ConfigError(f"{origin}: [{section}] must be a table of tables, one per entry")
    if not isinstance(data.get("defaults", {}), dict):
        raise ConfigError(f"{origin}: [defaults] must be a table")
    return entries


def _validate(
    kind: type[_Spec], name: str, spec: dict[str, Any], origin: str, section: str
) -> _Spec:
    try:
        return kind.model_validate({**spec, "id": name})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{origin}: {section}.{name}.{where}: {error['msg']}") from None


def _shipped(name: str) -> dict[str, Any]:
    text = resources.files("core.data").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _overlay(shipped: dict[str, Any], operator: dict[str, Any], origin: str) -> dict[str, Any]:
    replace = operator.pop("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{origin}: replace must be true or false")
    if replace:
        # An Ollama or other compatible server offers only its own models: /model must
        # list those, not OpenAI's. Shipped defaults naming a replaced entry go with it.
        replaced = [
            shipped[k] for k in operator if k != "defaults" and isinstance(shipped.get(k), dict)
        ]
        defaults = {
            key: name
            for key, name in shipped.get("defaults", {}).items()
            if not any(name in section for section in replaced)
        }
        shipped = {k: v for k, v in shipped.items() if k not in operator}
        shipped["defaults"] = defaults
    return _merge(shipped, operator)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
