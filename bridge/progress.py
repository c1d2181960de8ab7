"""Saves a streaming reply's progress for crash recovery, off the path of its visible edits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from bridge.domain import MessageStatus
from bridge.ports import ChatStore, ReplyProgress
from bridge.writer import Persist, ReplyWriter

log = logging.getLogger(__name__)


def layout_of(writer: ReplyWriter) -> list[object]:
    """How the reply is laid out over its messages: crash recovery lays it out the same way."""
    limit = writer.surface.message_limit
    return [limit.size, limit.unit]


class ProgressSaves:
    """Saves a reply's progress without holding up its edits; the final save waits for them.

    Progress is only for crash recovery, so the edit pump must not wait on the database; but a
    progress save still running when the final one starts could overwrite it, hence `settle`.
    Each choice has at most one save in flight: an update made meanwhile is saved when it ends,
    with the text as it is then. On a busy database, saves thin out instead of queueing up, each
    holding its own copy of the text.
    """

    def __init__(self, store: ChatStore, where: Mapping[str, object]) -> None:
        self._store = store
        self._where = where
        self.ids: dict[int, int] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._behind: set[int] = set()  # choices updated while their save was in flight

    def saver(self, number: int) -> Persist:
        async def save(writer: ReplyWriter) -> None:
            message_id = self.ids.get(number)
            if message_id is None:
                return  # the row is created right after the placeholder; the final save covers it
            if number in self._running:
                self._behind.add(number)
                return
            task = asyncio.get_running_loop().create_task(self._saves(number, message_id, writer))
            self._running[number] = task

        return save

    async def _saves(self, number: int, message_id: int, writer: ReplyWriter) -> None:
        try:
            while True:
                progress = ReplyProgress(
                    content=writer.text,
                    status=MessageStatus.STREAMING,
                    platform_message_ids=writer.platform_message_ids,
                    metadata={"layout": layout_of(writer)},
                )
                await self._save(message_id, progress)
                if number not in self._behind:
                    return
                self._behind.discard(number)
        finally:
            del self._running[number]

    async def _save(self, message_id: int, progress: ReplyProgress) -> None:
        try:
            await self._store.save_reply(message_id, progress)
        except Exception as exc:  # the final save will still record the reply
            where = {**self._where, "reply_id": message_id}
            log.warning("could not save progress of message %s: %s", message_id, exc, extra=where)

    async def settle(self) -> None:
        if self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
