"""The fine-tuned models store port: the models fine-tuning jobs made, kept in the database
so that every process, and a restart, offers them. ``core.models.sql_fine_tuned`` implements
it on SQLAlchemy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from core.models.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FineTunedModel:
    """A model a fine-tuning job made (``ft:…``) and the registry model it was made from."""

    name: str
    base: str


class FineTunedModels(Protocol):
    """The fine-tuned models; safe for several processes on one database."""

    async def add(self, model: FineTunedModel, job_id: int | None) -> None:
        """Keep ``model`` (made by the job ``job_id``); adding it again changes nothing."""

    async def all(self) -> list[FineTunedModel]:
        """Every fine-tuned model, oldest first."""


async def offer_fine_tuned(registry: Registry, models: FineTunedModels) -> list[str]:
    """Add the stored fine-tuned models that ``registry`` does not offer yet (made by
    another process, or before a restart); returns their names."""
    added: list[str] = []
    for model in await models.all():
        if model.name in registry.models:
            continue
        if registry.add_fine_tuned(model.name, model.base) is None:
            log.warning(
                "fine-tuned model %s is not offered: its base %s is not in the registry",
                model.name,
                model.base,
            )
            continue
        added.append(model.name)
    return added
