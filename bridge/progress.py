"""Saves a streaming reply's progress for crash recovery, off the path of its visible edits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from bridge.domain import MessageStatus
from bridge.ports import ChatStore, ReplyProgress
from bridge.writer import ReplyWriter

log = logging.getLogger(__name__)


class ProgressSaves:
    """Saves a reply's progress without holding up its edits; the final save waits for them.

    Progress is only for crash recovery, so the edit pump must not wait on the database; but a
    progress save still running when the final one starts could overwrite it, hence `settle`.
    """

    def __init__(self, store: ChatStore, where: Mapping[str, object]) -> None:
        self._store = store
        self._where = where
        self.ids: dict[int, int] = {}
        self._running: set[asyncio.Task[None]] = set()

    def saver(self, number: int) -> Any:
        async def save(writer: ReplyWriter) -> None:
            message_id = self.ids.get(number)
            if message_id is None:
                return  # the row is created right after the placeholder; the final save covers it
            progress = ReplyProgress(
                content=writer.text,
                status=MessageStatus.STREAMING,
                platform_message_ids=writer.platform_message_ids,
            )
            task = asyncio.get_running_loop().create_task(self._save(message_id, progress))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        return save

    async def _save(self, message_id: int, progress: ReplyProgress) -> None:
        try:
            await self._store.save_reply(message_id, progress)
        except Exception as exc:  # the final save will still record the reply
            where = {**self._where, "reply_id": message_id}
            log.warning("could not save progress of message %s: %s", message_id, exc, extra=where)

    async def settle(self) -> None:
        if self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
