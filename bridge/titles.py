"""A short title for a conversation after its first exchange: stored, and shown where the platform
has a place for it (a Slack assistant thread's title, a Discord thread the bot opened)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.domain import Chat, Role, StoredMessage
from bridge.ports import (
    ChatStore,
    ChatTurn,
    CompletionRequest,
    LanguageModel,
    LLMError,
    ReplySurface,
)
from bridge.telemetry import ErrorKind, ReplyObserver

if TYPE_CHECKING:
    from bridge.responder import ResponderSettings

# Held around the title request: an LLM slot (see bridge.policy.limits.Ticket.side_slot).
Slot = Callable[[], contextlib.AbstractAsyncContextManager[None]]

log = logging.getLogger(__name__)

TITLE_INSTRUCTION = (
    "Write a title of at most six words for the conversation below. "
    "Answer with the title only, no quotes, no final period."
)


class Titles:
    def __init__(
        self,
        store: ChatStore,
        llm: LanguageModel,
        settings: ResponderSettings,
        observer: ReplyObserver,
    ) -> None:
        self._store = store
        self._llm = llm
        self._settings = settings
        self._observer = observer
        # Chats whose title this process made or is making: a reply that loaded its chat before
        # the first title was stored must not ask again (the later answer, about the later
        # exchange, would win). Bounded: past the cap it starts afresh.
        self._titled: set[int] = set()

    async def make(
        self,
        chat: Chat,
        user_message: StoredMessage,
        reply: str,
        surface: ReplySurface,
        platform: str,
        model: str | None = None,
        *,
        slot: Slot | None = None,
    ) -> None:
        """`model`: the reply's model (an override's), used unless llm.title_model is set;
        `slot`: held around the request (limits.llm_concurrent_requests counts titles too)."""
        if chat.id in self._titled:
            return
        if len(self._titled) >= 100_000:
            self._titled.clear()
        self._titled.add(chat.id)
        if not await self._make(chat, user_message, reply, surface, platform, model, slot):
            self._titled.discard(chat.id)  # the next exchange may try again

    async def _make(
        self,
        chat: Chat,
        user_message: StoredMessage,
        reply: str,
        surface: ReplySurface,
        platform: str,
        model: str | None,
        slot: Slot | None,
    ) -> bool:
        where = {"platform": platform, "chat_id": chat.id, "message_id": user_message.id}
        conversation = f"User: {user_message.content[:1500]}\n\nAssistant: {reply[:1500]}"
        request = CompletionRequest(
            model=self._settings.title_model or model or self._settings.model,
            messages=[ChatTurn(Role.SYSTEM, TITLE_INSTRUCTION), ChatTurn(Role.USER, conversation)],
            temperature=0.2,
            max_tokens=24,
        )
        try:
            async with slot() if slot is not None else contextlib.nullcontext():
                raw = await self._llm.complete(request)
        except LLMError as exc:
            log.info("no title for chat %s: %s", chat.id, exc, extra=where)
            self._observer.error(platform, ErrorKind.TITLE)
            return False
        title = clean_title(raw)
        if not title:
            return False
        await self._store.set_title(chat.id, title)
        try:
            await surface.set_title(title)
        except Exception as exc:  # cosmetic: the title is stored either way
            log.warning("could not set title: %s", exc, extra=where)
        return True


def clean_title(raw: str) -> str:
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    title = lines[0].strip("\"'*# ").removeprefix("Title:").strip().rstrip(".")
    return title[:100]
