"""Owners: which process is answering each message, and whether that process is still alive.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Rows stored before this revision have no owner: nobody recovers them (they predate it).
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    op.create_index("ix_messages_owner_status", "messages", ["owner", "status"])
    # Replies a process of the previous version left unfinished cannot be recovered by owner.
    op.execute(
        "UPDATE messages SET status = 'interrupted' WHERE status IN ('pending', 'streaming')"
    )
    op.create_index("ix_messages_reply_to_id", "messages", ["reply_to_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_reply_to_id", table_name="messages")
    op.drop_index("ix_messages_owner_status", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("owner")
    op.drop_table("owners")
