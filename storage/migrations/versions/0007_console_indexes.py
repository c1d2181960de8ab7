"""Console: indexes for listing conversations by last activity and finding a user's.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-06
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Indexes only: no row changes, so a database of any size goes up (and down) as it is.
    op.create_index("ix_chats_updated_at_id", "chats", ["updated_at", "id"])
    op.create_index("ix_messages_author_id_chat_id", "messages", ["author_id", "chat_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_author_id_chat_id", table_name="messages")
    op.drop_index("ix_chats_updated_at_id", table_name="chats")
