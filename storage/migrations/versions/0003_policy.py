"""The admin policy: runtime overrides set in chat, and daily token usage per user and channel.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_overrides",
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "token_usage",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("replies", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_usage")
    op.drop_table("runtime_overrides")
