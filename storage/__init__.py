"""Persistence behind the core's ChatStore port; the only package that speaks SQLAlchemy."""

from storage.database import create_engine, sqlite_path
from storage.migrate import migrate
from storage.store import SqlChatStore

__all__ = ["SqlChatStore", "create_engine", "migrate", "sqlite_path"]
