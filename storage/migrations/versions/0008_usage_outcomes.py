"""Usage page: failed replies and 429s on the daily token counters (and a row per platform's
day), an index that sums a scope's rows over a range of days without reading the table, and
one of failed replies by time (the days counted before this revision).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# As in storage.models (a migration keeps its own copy: the models may change after it).
FAILED_REPLIES = (
    "status = 'failed' AND role = 'assistant' AND tool_step = 0 AND response_number = 0"
)


def upgrade() -> None:
    # Columns with a default on a small table (a row per day and user or channel): existing rows
    # read 0, and the days before this revision say their 429s are unknown (no platform row).
    with op.batch_alter_table("token_usage") as batch:
        batch.add_column(sa.Column("failed", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("rate_limited", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(
        "ix_token_usage_scope_day",
        "token_usage",
        ["scope", "day", "platform", "key", "tokens", "replies"],
    )
    # Partial: only failed replies are written into it (built from them alone, too).
    failed = sa.text(FAILED_REPLIES)
    op.create_index(
        "ix_messages_failed_replies",
        "messages",
        ["updated_at", "chat_id", "status", "role", "tool_step", "response_number"],
        sqlite_where=failed,
        postgresql_where=failed,
    )


def downgrade() -> None:
    # The code before this revision knows the users' and channels' rows only.
    op.drop_index("ix_messages_failed_replies", table_name="messages")
    op.drop_index("ix_token_usage_scope_day", table_name="token_usage")
    op.execute("DELETE FROM token_usage WHERE scope = 'platform'")
    with op.batch_alter_table("token_usage") as batch:
        batch.drop_column("rate_limited")
        batch.drop_column("failed")
