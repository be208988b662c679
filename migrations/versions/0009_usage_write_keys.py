"""usage write keys: each usage row the end-of-turn writes store carries a unique key, so
that a spooled write replayed twice (after a crash) stores its usage once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("write_key", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_usage_write_key"), "usage", ["write_key"], unique=True)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_usage_write_key"), table_name="usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("write_key")
