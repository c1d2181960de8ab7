"""The cluster: leases (which instance answers a Slack workspace or a Discord shard) and handoffs
(events received by an instance that does not hold their lease).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "handoffs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("lease", sa.String(100), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("chat", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_by", sa.String(64), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("platform", "event_id", name="uq_handoffs_event"),
    )
    op.create_index("ix_handoffs_lease_id", "handoffs", ["lease", "id"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_lease_id", table_name="handoffs")
    op.drop_table("handoffs")
    op.drop_table("leases")
