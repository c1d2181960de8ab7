"""What the store's row mixins (`PolicyStore`, `ClusterRows`, `ConversationRows`) use of
`SqlChatStore`: declared once for the type checker; `SqlChatStore` provides it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.domain import StoredMessage


class StoreParts:
    _dialect: str
    _engine: AsyncEngine
    _owner: str
    _writes: int

    if TYPE_CHECKING:  # provided by SqlChatStore

        def _begin(
            self, *, priority: bool = False
        ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...

        def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...

        def _insert(self, table: Table) -> Any: ...

        async def _notify(self, conn: AsyncConnection, topic: str, detail: str) -> None: ...

        @staticmethod
        def _stored(row: Any) -> StoredMessage: ...
