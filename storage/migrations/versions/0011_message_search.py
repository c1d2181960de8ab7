"""Console: an index for the conversations' text search (`q`), over finished messages.

On SQLite an FTS5 table with the trigram tokenizer (`messages_search`, external content: it keeps
only the index and reads the text from `messages`), kept by triggers; on PostgreSQL a partial GIN
index with pg_trgm's operator class. Both index substrings of three characters or more, and only
messages that no longer stream: a streaming reply's progress saves (about 30 a reply) never
touch them, its text enters once, when it ends. Where the database cannot have the index (SQLite
without FTS5, PostgreSQL without the right to create pg_trgm), the migration says so in a
warning and goes on: the search works as before, reading the messages.

On SQLite a later migration that rebuilds `messages` (Alembic's batch mode copies it into a new
table) drops these triggers with the old table: it must create them again. FTS5's 'rebuild'
must not be used on this index: it would index streaming messages too, and their later
'delete' (with other text) would break it; the fill below is the way to build it again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

log = logging.getLogger("chat_bridge.migrations")

# As in storage.search (a migration keeps its own copy: the code may change after it).
INDEXED = "status <> 'streaming'"

SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE messages_search USING fts5("
    "content, content='messages', content_rowid='id', tokenize='trigram')"
)
# The index holds exactly the messages that do not stream, each with its text: an external
# content table's "delete" must be given the text that was indexed, or the index breaks.
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER messages_search_insert AFTER INSERT ON messages
    WHEN new.{INDEXED}
    BEGIN
        INSERT INTO messages_search(rowid, content) VALUES (new.id, new.content);
    END""",
    f"""CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
    WHEN old.{INDEXED}
    BEGIN
        INSERT INTO messages_search(messages_search, rowid, content)
        VALUES ('delete', old.id, old.content);
    END""",
    # Skipped while a reply streams (both sides 'streaming'): a progress save costs nothing here.
    f"""CREATE TRIGGER messages_search_update AFTER UPDATE OF content, status ON messages
    WHEN old.{INDEXED} OR new.{INDEXED}
    BEGIN
        INSERT INTO messages_search(messages_search, rowid, content)
        SELECT 'delete', old.id, old.content
        WHERE old.{INDEXED} AND (NOT new.{INDEXED} OR old.content IS NOT new.content);
        INSERT INTO messages_search(rowid, content)
        SELECT new.id, new.content
        WHERE new.{INDEXED} AND (NOT old.{INDEXED} OR old.content IS NOT new.content);
    END""",
)
SQLITE_FILL = (
    f"INSERT INTO messages_search(rowid, content) SELECT id, content FROM messages WHERE {INDEXED}"
)
# IF NOT EXISTS: an admin may build it beforehand with CREATE INDEX CONCURRENTLY (the same
# statement), without this one's write lock on `messages` (about a minute a million messages).
POSTGRESQL_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_messages_content_trgm ON messages "
    f"USING gin (content gin_trgm_ops) WHERE {INDEXED}"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _upgrade_sqlite()
    elif bind.dialect.name == "postgresql":
        _upgrade_postgresql()


def _upgrade_sqlite() -> None:
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(SQLITE_TABLE)
    except DBAPIError as exc:
        log.warning(
            "this SQLite has no FTS5 trigram tokenizer (%s): the conversations' text search "
            "reads the messages (slow on a large database)",
            exc.orig,
        )
        return
    for trigger in SQLITE_TRIGGERS:
        op.execute(trigger)
    op.execute(SQLITE_FILL)


def _upgrade_postgresql() -> None:
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning(
            "pg_trgm could not be created (%s): the conversations' text search reads the "
            "messages (slow on a large database); docs/console.md says how to add its index",
            exc.orig,
        )
        return
    op.execute(POSTGRESQL_INDEX)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_search_{name}")
        op.execute("DROP TABLE IF EXISTS messages_search")
    elif bind.dialect.name == "postgresql":
        # The extension stays: other schemas of the database may use it.
        op.execute("DROP INDEX IF EXISTS ix_messages_content_trgm")
