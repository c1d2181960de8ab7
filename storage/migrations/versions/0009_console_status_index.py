"""Console: an index for "conversations with a reply of this status".

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it SQLite answered the status filter's EXISTS from ix_messages_status_updated_at,
    # reading every message of that status once per conversation walked (5 s at a million
    # messages); with it each conversation is one probe. An index only: no row changes.
    op.create_index("ix_messages_chat_id_status", "messages", ["chat_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_messages_chat_id_status", table_name="messages")
