"""Usage page: monthly token counters beside the daily ones, kept by the database.

`token_usage_months` holds each user's and channel's sum of their `token_usage` rows per month;
triggers on `token_usage` add every insert, change and delete of a daily row to it, in the same
statement, whoever writes (the bridge's `add_usage`, retention, an instance still running the
previous version during an upgrade). A range of days then sums its whole months from it and
only its edge days from `token_usage` (storage/usage_browse.py). Upgrading fills it from the
daily rows.

On SQLite a migration that rebuilds `token_usage` (Alembic's batch mode copies it into a new
table) drops these triggers with the old table: it must create them again.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COUNTED = "('user', 'channel')"  # the platform's days are read day by day, never summed
# The month of a daily row: its first day, as each database keeps a date (SQLite: ISO text).
MONTH_OF = {
    "postgresql": "CAST(date_trunc('month', CAST({day} AS timestamp)) AS date)",
    "sqlite": "date({day}, 'start of month')",
}


def _add(dialect: str, row: str, sign: str = "", *, counted: bool = False) -> str:
    """Upsert `row`'s counts (NEW or OLD, `sign` "-" to take them away) into its month;
    `counted`: only if its scope is one the months count."""
    month = MONTH_OF[dialect].format(day=f"{row}.day")
    values = (
        f"{month}, {row}.scope, {row}.platform, {row}.key, {sign}{row}.tokens, {sign}{row}.replies"
    )
    # SELECT ... WHERE rather than VALUES for a condition (SQLite's trigger bodies have no IF).
    source = f"SELECT {values} WHERE {row}.scope IN {COUNTED}" if counted else f"VALUES ({values})"
    return (
        f"INSERT INTO token_usage_months (month, scope, platform, key, tokens, replies) "
        f"{source} ON CONFLICT (scope, month, platform, key) DO UPDATE "
        "SET tokens = token_usage_months.tokens + excluded.tokens, "
        "replies = token_usage_months.replies + excluded.replies"
    )


def _change(dialect: str) -> str:
    """A daily row's new counts into its month (its key unchanged): the difference."""
    month = MONTH_OF[dialect].format(day="NEW.day")
    return (
        "INSERT INTO token_usage_months (month, scope, platform, key, tokens, replies) "
        f"VALUES ({month}, NEW.scope, NEW.platform, NEW.key, "
        "NEW.tokens - OLD.tokens, NEW.replies - OLD.replies) "
        "ON CONFLICT (scope, month, platform, key) DO UPDATE "
        "SET tokens = token_usage_months.tokens + excluded.tokens, "
        "replies = token_usage_months.replies + excluded.replies"
    )


def _emptied(dialect: str) -> str:
    """OLD's month row once none of its days is left (every daily row counts a reply)."""
    month = MONTH_OF[dialect].format(day="OLD.day")
    return (
        f"DELETE FROM token_usage_months WHERE month = {month} AND scope = OLD.scope "
        "AND platform = OLD.platform AND key = OLD.key AND replies <= 0"
    )


SAME_ROW = (
    "NEW.day = OLD.day AND NEW.scope = OLD.scope AND NEW.platform = OLD.platform "
    "AND NEW.key = OLD.key"
)


def _sqlite_triggers() -> list[str]:
    on = "ON token_usage FOR EACH ROW"
    return [
        f"CREATE TRIGGER token_usage_months_insert AFTER INSERT {on} "
        f"WHEN NEW.scope IN {COUNTED} BEGIN {_add('sqlite', 'NEW')}; END",
        # A reply counted on a day already counted (add_usage's upsert): the hot path.
        f"CREATE TRIGGER token_usage_months_update AFTER UPDATE {on} "
        f"WHEN NEW.scope IN {COUNTED} AND {SAME_ROW} BEGIN {_change('sqlite')}; END",
        # A row moved to another day or key (no code does): out of one month, into another.
        f"CREATE TRIGGER token_usage_months_move AFTER UPDATE {on} WHEN NOT ({SAME_ROW}) BEGIN "
        f"{_add('sqlite', 'OLD', '-', counted=True)}; {_emptied('sqlite')}; "
        f"{_add('sqlite', 'NEW', counted=True)}; END",
        f"CREATE TRIGGER token_usage_months_delete AFTER DELETE {on} "
        f"WHEN OLD.scope IN {COUNTED} BEGIN "
        f"{_add('sqlite', 'OLD', '-')}; {_emptied('sqlite')}; END",
    ]


def _postgresql_triggers() -> list[str]:
    pg = "postgresql"
    return [
        "CREATE FUNCTION token_usage_months_keep() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        f"  IF TG_OP = 'UPDATE' AND {SAME_ROW} THEN\n"
        f"    IF NEW.scope IN {COUNTED} THEN {_change(pg)}; END IF;\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        f"  IF TG_OP <> 'INSERT' AND OLD.scope IN {COUNTED} THEN\n"
        f"    {_add(pg, 'OLD', '-')};\n"
        f"    {_emptied(pg)};\n"
        "  END IF;\n"
        f"  IF TG_OP <> 'DELETE' AND NEW.scope IN {COUNTED} THEN {_add(pg, 'NEW')}; END IF;\n"
        "  RETURN NULL;\n"
        "END $$",
        "CREATE TRIGGER token_usage_months AFTER INSERT OR UPDATE OR DELETE ON token_usage "
        "FOR EACH ROW EXECUTE FUNCTION token_usage_months_keep()",
    ]


def upgrade() -> None:
    # Keyed in the order the usage page reads it (a scope's months), and nothing else indexed:
    # SQLite keeps the rows in that key (no rowid), PostgreSQL can update a row's counts in
    # place (no index holds them), which the triggers do on every reply.
    op.create_table(
        "token_usage_months",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("replies", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    dialect = op.get_bind().dialect.name
    # The history, then the triggers, in the migration's transaction: on PostgreSQL the lock
    # taken first keeps a reply counted meanwhile (by the previous version) waiting until both
    # are in, so that it is counted in its month by the trigger, not lost between the two.
    if dialect == "postgresql":
        op.execute("LOCK TABLE token_usage IN SHARE ROW EXCLUSIVE MODE")
    month = MONTH_OF[dialect].format(day="day")
    op.execute(
        "INSERT INTO token_usage_months (month, scope, platform, key, tokens, replies) "
        f"SELECT {month}, scope, platform, key, sum(tokens), sum(replies) FROM token_usage "
        f"WHERE scope IN {COUNTED} GROUP BY {month}, scope, platform, key"
    )
    for statement in _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)
    if dialect == "postgresql":
        op.execute("ANALYZE token_usage_months")  # planned with its real size from the start


def downgrade() -> None:
    # The daily rows hold everything the months were summed from.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER token_usage_months ON token_usage")
        op.execute("DROP FUNCTION token_usage_months_keep()")
    else:
        for name in ("insert", "update", "move", "delete"):
            op.execute(f"DROP TRIGGER token_usage_months_{name}")
    op.drop_table("token_usage_months")
