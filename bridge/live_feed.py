"""The writers' side of the `ReplyFeed` port (the responder's replies, and the ones recovery
finishes): a guard that keeps a failing watcher from failing (or flooding the log of) the reply
it watches, and the reply as its watchers first see it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bridge.domain import ChatKey, MessageStatus, StoredMessage
from bridge.ports import LiveReply, ReplyFeed

log = logging.getLogger(__name__)


class GuardedFeed:
    """`feed` with every call guarded: an error is logged once (with its traceback), then only
    counted in `failures`; the reply goes on either way."""

    def __init__(self, feed: ReplyFeed) -> None:
        self._feed = feed
        self.failures = 0

    def started(self, reply: LiveReply) -> None:
        self._call(self._feed.started, reply)

    def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
        self._call(self._feed.shown, reply_id, text, updates=updates, rate_limited=rate_limited)

    def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None:
        self._call(self._feed.ended, reply_id, status, error)

    def _call(self, method: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("the live reply feed failed; later failures are not logged")


def watched_reply(
    user_message: StoredMessage, key: ChatKey, platform: str, model: str
) -> LiveReply:
    """A reply as its watchers first see it (`ReplyFeed.started`)."""
    return LiveReply(
        reply_id=user_message.id,
        chat_id=user_message.chat_id,
        platform=platform,
        workspace=key.workspace,
        channel=f"{key.channel} / {key.thread}" if key.thread else key.channel,
        user=user_message.author_id or "",
        model=model,
        started_at=time.time(),
    )
