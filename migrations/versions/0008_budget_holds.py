"""budget holds: each reservation under way, leased to its process, so that a dead
process's reservations are released when the lease runs out

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "budget_holds",
        sa.Column("id", _ID, nullable=False),
        sa.Column("reservation", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_holds")),
    )
    op.create_index(
        op.f("ix_budget_holds_reservation"), "budget_holds", ["reservation"], unique=False
    )
    op.create_index("ix_budget_holds_expiry", "budget_holds", ["released", "expires_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_budget_holds_expiry", table_name="budget_holds")
    op.drop_index(op.f("ix_budget_holds_reservation"), table_name="budget_holds")
    op.drop_table("budget_holds")
