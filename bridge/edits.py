"""Users editing or deleting their messages: the stored history follows, nothing is answered twice.

An edit of a message whose reply has not begun yet (it waits behind the chat's previous reply)
is answered with the edited text, because the prompt is read from the store when the reply
begins. An edit of an answered message changes what later turns see, without a new answer.
A deleted message stays stored (the inbox keeps its promises) but leaves later prompts.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from bridge.domain import ChatKey, Role
from bridge.ports import ChatStore
from bridge.text import clean_text

log = logging.getLogger(__name__)


class EditOutcome(StrEnum):
    UNKNOWN = "unknown"  # not a message the bridge stored
    BEFORE_ANSWER = "before_answer"  # its reply has not begun: the edited text is answered
    HISTORY = "history"  # answered (or being answered): only later turns see the edit
    UNCHANGED = "unchanged"


class UserEdits:
    def __init__(self, *, store: ChatStore, in_flight: set[int] | None = None) -> None:
        self._store = store
        # User messages whose reply has begun (queued ones are not in it): the responder's.
        self._begun = in_flight if in_flight is not None else set()

    def follow(self, begun: set[int]) -> None:
        self._begun = begun

    async def edited(self, chat: ChatKey, platform_message_id: str, text: str) -> EditOutcome:
        message = await self._store.find_message(chat, platform_message_id)
        if message is None or message.role is not Role.USER:
            return EditOutcome.UNKNOWN
        text = clean_text(text)
        if text == message.content:
            return EditOutcome.UNCHANGED
        await self._store.edit_message(message.id, text)
        outcome = (
            EditOutcome.BEFORE_ANSWER
            if not message.status.finished and message.id not in self._begun
            else EditOutcome.HISTORY
        )
        log.info("message %s edited by its author (%s)", message.id, outcome.value)
        return outcome

    async def deleted(self, chat: ChatKey, platform_message_id: str) -> bool:
        message = await self._store.find_message(chat, platform_message_id)
        if message is None or message.role is not Role.USER:
            return False
        await self._store.edit_message(message.id, message.content, deleted=True)
        log.info("message %s deleted by its author; left out of later prompts", message.id)
        return True
