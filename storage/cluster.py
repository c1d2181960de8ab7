"""The cluster's rows behind the ClusterStore port: leases on the database's clock, the handoff
queue (`FOR UPDATE SKIP LOCKED`) and wake-ups between instances (LISTEN/NOTIFY). Mixed into
`SqlChatStore`. SQLite runs the same statements for one process (tests); PostgreSQL is what
several instances need, and `run` refuses `[cluster]` on anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.ports import Acquired, Handoff, Lease, Subscription
from storage.models import HandoffRow, LeaseRow, OwnerRow, as_utc, utcnow
from storage.parts import StoreParts

log = logging.getLogger(__name__)

LEASES = cast(Table, LeaseRow.__table__)
HANDOFFS = cast(Table, HandoffRow.__table__)
_OWNERS = cast(Table, OwnerRow.__table__)
CHANNEL = "chat_bridge"
# A listener that lost its connection tries again after these many seconds (then every last).
_RECONNECT = (0.5, 1.0, 2.0, 5.0)
_PING_SECONDS = 30.0
_LIBPQ_OPTIONS = frozenset(
    {"ssl", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "application_name",
     "connect_timeout", "target_session_attrs", "passfile", "service"}
)  # fmt: skip


class ClusterRows(StoreParts):
    """Leases, handoffs and wake-ups; the lease checks compare the process run (`owner`), so a
    restarted instance with the same name waits for its previous run's leases to expire."""

    def _now(self) -> Any:
        # The database's clock: instances on different hosts agree on when a lease expires.
        if self._dialect == "postgresql":
            return func.now()
        return literal(utcnow(), LEASES.c.expires_at.type)

    def _later(self, seconds: float) -> Any:
        if self._dialect == "postgresql":
            return func.now() + timedelta(seconds=seconds)
        return literal(utcnow() + timedelta(seconds=seconds), LEASES.c.expires_at.type)

    # --- leases --------------------------------------------------------------------------------

    async def leases(self) -> list[Lease]:
        now = self._now()
        live = and_(LEASES.c.holder.is_not(None), LEASES.c.expires_at > now)
        query = select(LEASES, live.label("live")).order_by(LEASES.c.name)
        async with self._read() as conn:
            rows = list(await conn.execute(query))
        return [Lease(r.name, r.holder, r.owner, as_utc(r.expires_at), bool(r.live)) for r in rows]

    async def acquire_lease(self, name: str, holder: str, seconds: float) -> Acquired | None:
        now = self._now()
        before = select(LEASES.c.owner).where(LEASES.c.name == name)
        if self._dialect == "postgresql":
            before = before.with_for_update()
        insert = self._insert(LEASES).values(
            name=name,
            holder=holder[:64],
            owner=self._owner,
            expires_at=self._later(seconds),
            acquired_at=now,
        )
        statement = insert.on_conflict_do_update(
            index_elements=[LEASES.c.name],
            set_={
                "holder": insert.excluded.holder,
                "owner": insert.excluded.owner,
                "expires_at": insert.excluded.expires_at,
                "acquired_at": insert.excluded.acquired_at,
            },
            where=or_(
                LEASES.c.holder.is_(None),
                LEASES.c.expires_at.is_(None),
                LEASES.c.expires_at <= now,
                LEASES.c.owner == self._owner,
            ),
        ).returning(LEASES.c.name)
        async with self._begin() as conn:
            previous = (await conn.execute(before)).scalar_one_or_none()
            taken = (await conn.execute(statement)).first() is not None
            if taken:
                await self._notify(conn, "lease", name)
        self._writes += 1
        if not taken:
            return None
        return Acquired(previous if previous != self._owner else None)

    async def renew_leases(self, names: Sequence[str], holder: str, seconds: float) -> set[str]:
        if not names:
            return set()
        statement = (
            update(LEASES)
            .where(LEASES.c.name.in_(list(names)), LEASES.c.owner == self._owner)
            .values(expires_at=self._later(seconds), holder=holder[:64])
            .returning(LEASES.c.name)
        )
        async with self._begin() as conn:
            kept = {row.name for row in await conn.execute(statement)}
        self._writes += 1
        return kept

    async def release_leases(self, names: Sequence[str], holder: str) -> None:
        if not names:
            return
        statement = (
            update(LEASES)
            .where(LEASES.c.name.in_(list(names)), LEASES.c.owner == self._owner)
            .values(holder=None, owner=None, expires_at=None)
        )
        async with self._begin() as conn:
            await conn.execute(statement)
            for name in names:
                await self._notify(conn, "lease", name)
        self._writes += 1

    async def live_instances(self, within_seconds: float) -> int:
        since = self._now() - timedelta(seconds=within_seconds)
        if self._dialect != "postgresql":
            since = literal(utcnow() - timedelta(seconds=within_seconds), LEASES.c.expires_at.type)
        query = select(func.count()).where(
            _OWNERS.c.stopped_at.is_(None), _OWNERS.c.heartbeat_at > since
        )
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    # --- handoffs ------------------------------------------------------------------------------

    async def hand_over(
        self, lease: str, platform: str, event_id: str, chat: str, payload: dict[str, Any]
    ) -> bool:
        statement = (
            self._insert(HANDOFFS)
            .values(
                lease=lease,
                platform=platform,
                event_id=event_id[:128],
                chat=chat[:200],
                payload=payload,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(HANDOFFS.c.id)
        )
        async with self._begin() as conn:
            queued = (await conn.execute(statement)).first() is not None
            if queued:
                await self._notify(conn, "handoff", lease)
        self._writes += 1
        return queued

    async def take_handoffs(self, leases: Sequence[str], limit: int) -> list[Handoff]:
        if not leases:
            return []
        oldest = (
            select(HANDOFFS.c.id)
            .where(HANDOFFS.c.lease.in_(list(leases)), HANDOFFS.c.taken_by.is_(None))
            .order_by(HANDOFFS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(HANDOFFS)
            .where(HANDOFFS.c.id.in_(oldest.scalar_subquery()))
            .values(taken_by=self._owner, taken_at=utcnow())
            .returning(
                HANDOFFS.c.id,
                HANDOFFS.c.lease,
                HANDOFFS.c.platform,
                HANDOFFS.c.event_id,
                HANDOFFS.c.chat,
                HANDOFFS.c.payload,
            )
        )
        async with self._begin() as conn:
            rows = list(await conn.execute(statement))
        if rows:
            self._writes += 1
        taken = [
            # A payload that is not an object is handed on empty: the adapter refuses it, logged.
            Handoff(
                r.id,
                r.lease,
                r.platform,
                r.event_id,
                r.chat,
                dict(r.payload) if isinstance(r.payload, dict) else {},
            )  # fmt: skip
            for r in rows
        ]
        return sorted(taken, key=lambda handoff: handoff.id)  # RETURNING keeps no order

    async def finish_handoff(self, handoff_id: int) -> None:
        statement = delete(HANDOFFS).where(
            HANDOFFS.c.id == handoff_id, HANDOFFS.c.taken_by == self._owner
        )
        async with self._begin() as conn:
            await conn.execute(statement)
        self._writes += 1

    async def return_handoff(self, handoff_id: int) -> None:
        statement = (
            update(HANDOFFS)
            .where(HANDOFFS.c.id == handoff_id, HANDOFFS.c.taken_by == self._owner)
            .values(taken_by=None, taken_at=None)
        )
        async with self._begin() as conn:
            await conn.execute(statement)
        self._writes += 1

    async def reopen_handoffs(self, leases: Sequence[str]) -> int:
        if not leases:
            return 0
        statement = (
            update(HANDOFFS)
            .where(
                HANDOFFS.c.lease.in_(list(leases)),
                HANDOFFS.c.taken_by.is_not(None),
                HANDOFFS.c.taken_by != self._owner,
            )
            .values(taken_by=None, taken_at=None)
        )
        async with self._begin() as conn:
            result = await conn.execute(statement)
        self._writes += 1
        return int(getattr(result, "rowcount", 0) or 0)

    async def prune_handoffs(self, older_than_seconds: float) -> int:
        """Events queued longer than the events' retention for a lease nobody took (a lease no
        instance serves any more): their text is not kept for ever."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._begin() as conn:
            result = await conn.execute(delete(HANDOFFS).where(HANDOFFS.c.created_at < cutoff))
        self._writes += 1
        return int(getattr(result, "rowcount", 0) or 0)

    # --- wake-ups ------------------------------------------------------------------------------

    async def wake(self, topic: str, detail: str = "") -> None:
        if self._dialect != "postgresql":
            return
        async with self._begin() as conn:
            await self._notify(conn, topic, detail)

    async def _notify(self, conn: AsyncConnection, topic: str, detail: str) -> None:
        # Sent when the transaction commits, so the woken instance sees the row.
        if self._dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": f"{topic}:{detail}"[:7900]},
            )

    async def subscribe(self, on_wake: Callable[[str, str], None]) -> Subscription | None:
        if self._dialect != "postgresql":
            return None
        # asyncpg reads libpq's URL: the TLS and naming options pass, SQLAlchemy's own do not.
        url = self._engine.url
        query = {k: v for k, v in url.query.items() if k in _LIBPQ_OPTIONS}
        url = url.set(drivername="postgresql", query=query)
        listener = _Listener(url.render_as_string(hide_password=False), on_wake)
        await listener.start()
        return listener


class _Listener:
    """One dedicated asyncpg connection LISTENing on the bridge's channel; it reconnects when the
    connection is lost and then reports a "reconnected" wake-up (what was sent meanwhile is
    lost, so the woken parts look again)."""

    def __init__(self, dsn: str, on_wake: Callable[[str, str], None]) -> None:
        self._dsn = dsn
        self._on_wake = on_wake
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        self._lost = asyncio.Event()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _connect(self) -> None:
        import asyncpg

        self._lost.clear()
        connection = await asyncpg.connect(self._dsn, timeout=10)
        try:
            connection.add_termination_listener(lambda _: self._lost.set())
            await connection.add_listener(CHANNEL, self._received)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        topic, _, detail = payload.partition(":")
        try:
            self._on_wake(topic, detail)
        except Exception:
            log.exception("cluster: a wake-up could not be handled")

    async def _watch(self) -> None:
        while True:
            try:
                # A connection that died without a word (no RST) is found by asking it.
                await asyncio.wait_for(self._lost.wait(), _PING_SECONDS)
            except TimeoutError:
                try:
                    await asyncio.wait_for(self._connection.execute("SELECT 1"), 5)
                    continue
                except Exception:
                    self._lost.set()
            await self._disconnect()
            log.warning("cluster: the LISTEN connection was lost; reconnecting")
            for attempt in range(1_000_000):
                await asyncio.sleep(_RECONNECT[min(attempt, len(_RECONNECT) - 1)])
                try:
                    await self._connect()
                except Exception as exc:
                    if attempt == 0:
                        log.warning("cluster: LISTEN reconnect failed: %s", exc)
                    continue
                log.info("cluster: LISTEN connection back")
                self._received(None, 0, CHANNEL, "reconnected:")
                break
