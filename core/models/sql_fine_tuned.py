"""``FineTunedModels`` on SQLAlchemy 2 async, in the ``fine_tuned_models`` table."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models.fine_tuned import FineTunedModel
from core.storage.schema import FineTunedModelRow

_models = cast(Table, FineTunedModelRow.__table__)


class SqlFineTunedModels:
    """Fine-tuned models as rows keyed by their name."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, model: FineTunedModel, job_id: int | None) -> None:
        """Insert the row unless it is there already (another process may race us)."""
        exists = select(_models.c.name).where(_models.c.name == model.name)
        try:
            async with self._engine.begin() as connection:
                if (await connection.execute(exists)).first() is None:
                    await connection.execute(
                        insert(_models).values(
                            name=model.name, base_model=model.base, job_id=job_id
                        )
                    )
        except IntegrityError:
            pass  # inserted by another process in between: the same model

    async def all(self) -> list[FineTunedModel]:
        """Oldest first."""
        query = select(_models.c.name, _models.c.base_model).order_by(
            _models.c.created_at, _models.c.name
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [FineTunedModel(row.name, row.base_model) for row in rows]
