"""Alembic environment: always runs on the connection handed over by storage.migrate."""

from __future__ import annotations

from alembic import context

from storage.migrate import modelled
from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `chat-bridge migrate --config FILE`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=modelled,  # autogenerate leaves the search index (no model) alone
)
with context.begin_transaction():
    context.run_migrations()
