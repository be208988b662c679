"""``switchboard models [check]``: the model registry with each model's lifecycle and prices,
and a check of it against the models the OpenAI account offers (``GET /v1/models``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import openai
from openai import AsyncOpenAI

from bots.bootstrap import media_options_of
from core.errors import ConfigError
from core.models.lifecycle import Status, status, uses
from core.models.registry import Entry, ModelSpec, Registry, load_registry
from core.money.money import format_usd
from core.money.prices import PriceTable, load_prices
from core.settings import Settings

HEADERS = ["role", "model", "title", "shutdown", "successor", "prices", "in use", "status"]
LEGEND = (
    "status: retiring = shuts down within 30 days; retired = its calls go to its successor.\n"
    "Chat prices are input / cached input / output."
)


@dataclass(frozen=True)
class Catalogue:
    """The registry and prices of ``settings``, and which models it uses for what."""

    registry: Registry
    prices: PriceTable
    uses: Mapping[tuple[str, str], list[str]]
    """(table role, model id) to the roles the model is used for."""


def catalogue(settings: Settings) -> Catalogue:
    """Load the registry and prices ``settings`` name; errors name the bad file or variable."""
    registry = load_registry(settings.models_file, settings.modes_file)
    prices = load_prices(settings.prices_file)
    options = media_options_of(settings, registry, prices)
    chosen = {
        "image": options.image.id,
        "transcription": options.transcription.id,
        "speech": options.speech.id,
    }
    return Catalogue(registry, prices, uses(registry, chosen))


def registry_table(found: Catalogue, today: date) -> list[list[str]]:
    """One row per registry entry, role by role, under ``HEADERS``."""
    rows: list[list[str]] = []
    for role, table in found.registry.tables().items():
        for entry in table.values():
            successor = entry.successor or ""
            if successor and successor not in table:
                successor += " (not in registry)"
            rows.append(
                [
                    role,
                    entry.id,
                    entry.title,
                    entry.shutdown.isoformat() if entry.shutdown else "",
                    successor,
                    _prices(found, role, entry),
                    ", ".join(found.uses.get((role, entry.id), [])),
                    "" if (state := status(entry, today)) is Status.CURRENT else state.value,
                ]
            )
    return rows


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """``rows`` as aligned plain-text columns under ``headers``."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def _prices(found: Catalogue, role: str, entry: Entry) -> str:
    prices = found.prices
    if isinstance(entry, ModelSpec):
        p = entry.prices
        return (
            f"{format_usd(p.input)} / {format_usd(p.cached_input)} / {format_usd(p.output)} "
            "per 1M tokens"
        )
    per_image = {
        (size, quality): micros
        for (model, size, quality), micros in prices.images.items()
        if model == entry.id
    }
    if per_image:
        spec = found.registry.media.images.get(entry.id)
        default = per_image.get((spec.size, spec.quality)) if spec else None
        low, high = min(per_image.values()), max(per_image.values())
        if default is not None and spec is not None:
            return (
                f"{format_usd(default)} per {spec.quality} image "
                f"({format_usd(low)}-{format_usd(high)})"
            )
        return f"{format_usd(low)}-{format_usd(high)} per image"
    units: tuple[tuple[Mapping[str, int], str], ...] = (
        (prices.transcription_per_minute, "per minute"),
        (prices.speech_per_million_chars, "per 1M characters"),
        (prices.embeddings_per_million_tokens, "per 1M tokens"),
    )
    for table, unit in units:
        if entry.id in table:
            return f"{format_usd(table[entry.id])} {unit}"
    return "no price"


async def offered_models(settings: Settings) -> set[str]:
    """The ids the account's ``GET /v1/models`` lists; a bad key or an unreachable API is a
    ``ConfigError`` with one line that names neither the key nor a traceback."""
    settings.require("OPENAI_API_KEY")
    assert settings.openai_api_key is not None
    where = settings.openai_base_url or "the OpenAI API"
    try:
        async with AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            max_retries=1,
            timeout=settings.openai_timeout_seconds,
        ) as client:
            return {model.id async for model in client.models.list()}
    except openai.AuthenticationError:
        raise ConfigError(f"{where} refused OPENAI_API_KEY (401): check the key") from None
    except openai.PermissionDeniedError:
        raise ConfigError(f"{where} does not let this key list models (403)") from None
    except openai.APIConnectionError as exc:
        raise ConfigError(f"cannot reach {where} ({type(exc).__name__})") from None
    except openai.APIStatusError as exc:
        raise ConfigError(f"{where} answered {exc.status_code} to GET /models") from None


def check_report(found: Catalogue, offered: set[str], today: date) -> tuple[str, bool]:
    """What the account lacks of the registry, and whether all is well: False when a model
    this configuration uses is not offered. Retired models are expected to be missing."""
    rows: list[list[str]] = []
    current = retired = 0
    broken = False
    for role, table in found.registry.tables().items():
        for entry in table.values():
            if status(entry, today) is Status.RETIRED:
                retired += 1
                continue
            current += 1
            if entry.id in offered:
                continue
            used_for = found.uses.get((role, entry.id), [])
            broken = broken or bool(used_for)
            rows.append([role, entry.id, ", ".join(used_for)])
    lines = [
        f"The account offers {current - len(rows)} of the registry's {current} current models "
        f"({retired} retired models not checked)."
    ]
    if rows:
        lines += [
            "",
            "Not offered by this account:",
            format_table(["role", "model", "in use"], rows),
        ]
    if broken:
        lines += [
            "",
            "A model in use is not offered: choose another in the settings or models file.",
        ]
    return "\n".join(lines), not broken
