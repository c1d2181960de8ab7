"""Tools: the rows of a reply's tool rounds (its calls, their results) among the messages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row stored before this revision is a message or a reply: step 0. The role column
    # (a plain string, no constraint) takes the new value "tool" as it is.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("tool_step", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # A tool row would read as a reply (or, role "tool", as a user's message) without the column.
    op.execute("DELETE FROM messages WHERE tool_step > 0")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("tool_step")
