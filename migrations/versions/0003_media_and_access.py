"""pictures in history, spoken replies, usage units and runtime access rules

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("voice", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("image_count", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("units", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("unit", sa.String(length=16), nullable=True))
    op.create_table(
        "message_images",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "conversation_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("mime_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_images_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_message_images_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "position", name=op.f("pk_message_images")),
    )
    op.create_index(
        op.f("ix_message_images_conversation_id"), "message_images", ["conversation_id"]
    )
    op.create_table(
        "access_rules",
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("rule", sa.String(length=8), nullable=False),
        sa.Column("set_by", sa.String(length=256), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("principal", name=op.f("pk_access_rules")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("access_rules")
    op.drop_index(op.f("ix_message_images_conversation_id"), table_name="message_images")
    op.drop_table("message_images")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("unit")
        batch.drop_column("units")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("image_count")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("voice")
