"""The soak's PostgreSQL side: throwaway databases (migrated, dropped at the end), their URLs
directly or through the soak's proxy, and what the harness reads there itself, past the proxy:
who holds which lease, which messages a process was answering when it was killed.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg


class SoakDatabases:
    def __init__(self, admin_url: str) -> None:
        """`admin_url`: postgresql://user@host:port/db, a database to issue CREATE DATABASE in."""
        self.admin_url = admin_url
        self.names: dict[str, str] = {}  # key -> database name
        self._pools: dict[str, asyncpg.Pool] = {}

    def url(self, key: str, *, proxy_port: int | None = None, driver: bool = False) -> str:
        """The database `key` on the server, or through the proxy on `proxy_port`; `driver`: in
        the form SQLAlchemy takes (`postgresql+asyncpg://`)."""
        parts = urlsplit(self.admin_url)
        netloc = parts.netloc
        if proxy_port is not None:
            user = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
            netloc = f"{user}127.0.0.1:{proxy_port}"
        scheme = "postgresql+asyncpg" if driver else parts.scheme
        return str(urlunsplit((scheme, netloc, "/" + self.names[key], parts.query, "")))

    def upstream(self) -> str:
        """host:port of the server, for the proxy."""
        parts = urlsplit(self.admin_url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"

    async def create(self, keys: list[str]) -> None:
        from storage import migrate

        admin = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            for key in keys:
                name = f"chat_bridge_soak_{uuid.uuid4().hex[:10]}"
                await admin.execute(f'CREATE DATABASE "{name}"')
                self.names[key] = name
        finally:
            await admin.close()
        for key in keys:
            await migrate(self.url(key, driver=True))
            self._pools[key] = await asyncpg.create_pool(self.url(key), min_size=1, max_size=2)

    async def drop(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        if not self.names:
            return
        admin = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            for name in self.names.values():
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def leases(self, key: str) -> dict[str, str | None]:
        """Each lease's live holder (None: expired or released), by the database's clock."""
        rows = await self._pools[key].fetch(
            "SELECT name, holder, expires_at > now() AS live FROM leases"
        )
        return {row["name"]: row["holder"] if row["live"] else None for row in rows}

    async def pending(self, key: str, platform: str, pid: int) -> list[str]:
        """Platform ids of the messages process `pid` owns that wait for their reply's end: the
        ones it was answering, or had stored and queued."""
        rows = await self._pools[key].fetch(
            "SELECT m.platform_message_id FROM messages m JOIN chats c ON c.id = m.chat_id "
            "JOIN owners o ON o.id = m.owner WHERE m.role = 'user' AND m.status = 'pending' "
            "AND c.platform = $1 AND o.pid = $2",
            platform,
            pid,
        )
        return [str(r[0]) for r in rows]

    async def owner_of(self, key: str, pid: int) -> str | None:
        """The id process `pid` registered itself with (its rows' `owner`)."""
        found = await self._pools[key].fetchval(
            "SELECT id FROM owners WHERE pid = $1 ORDER BY started_at DESC LIMIT 1", pid
        )
        return None if found is None else str(found)
