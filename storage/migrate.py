"""Runs the Alembic migrations programmatically (`chat-bridge migrate`, and `run` on SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from storage.database import create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    # Imported here: Alembic costs about 14 MB of memory that a running bridge need not keep.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def modelled(name: str | None, kind: str, parent: object) -> bool:
    """Whether an object of the database is one `storage.models` describes: not revision 0011's
    search index (SQLite's FTS5 table and its shadow tables, PostgreSQL's pg_trgm index), which
    SQLAlchemy cannot. Alembic's `include_name` when it compares the models with a database."""
    from storage.browse import SEARCH_INDEX

    if kind == "table" and name is not None and name.startswith(SEARCH_INDEX["sqlite"]):
        return False
    return not (kind == "index" and name == SEARCH_INDEX["postgresql"])


def head_revision() -> str:
    """The newest migration's revision, read from the file names ("0006_tool_messages.py"):
    without importing Alembic, which a running bridge need not keep."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*.py"))


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
