"""The earlier messages of a thread the bot is first mentioned in, read once with
conversations.replies (heavily rate-limited since 2025, so never re-read after the import).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import call
from adapters.slack.events import USER_TEXT_SUBTYPES, BotIdentity, prompt_text, ts_order
from bridge.domain import HistoryEntry, Role

PAGE_SIZE = 200
MAX_PAGES = 10  # 2,000 messages is more context than any model takes; stop reading there


async def thread_history(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str,
    before_ts: str,
    bot: BotIdentity,
    page_size: int = PAGE_SIZE,
) -> list[HistoryEntry]:
    """The thread's messages older than `before_ts`, oldest first, as history entries."""
    messages: list[Mapping[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await call(
            "conversations.replies",
            f"{channel}/{thread_ts}",
            client.conversations_replies(
                channel=channel, ts=thread_ts, limit=page_size, cursor=cursor
            ),
        )
        messages.extend(m for m in page.get("messages") or () if isinstance(m, Mapping))
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
        if not page.get("has_more") or cursor is None:
            break
    return history_entries(messages, bot, before_ts)


def history_entries(
    messages: Iterable[Mapping[str, Any]], bot: BotIdentity, before_ts: str
) -> list[HistoryEntry]:
    """The bot's own messages become assistant turns, everyone else's (other bots too) user turns;
    the message that mentioned the bot and anything after it are left to their own events."""
    cutoff = ts_order(before_ts)
    entries: dict[str, HistoryEntry] = {}
    for message in messages:
        ts, text = message.get("ts"), message.get("text")
        if not isinstance(ts, str) or not isinstance(text, str) or not text.strip():
            continue
        subtype = message.get("subtype")
        if subtype not in USER_TEXT_SUBTYPES and subtype != "bot_message":
            continue
        try:
            if ts_order(ts) >= cutoff:
                continue
        except ValueError:
            continue
        user, bot_id = message.get("user"), message.get("bot_id")
        own = user == bot.user_id or (bot_id is not None and bot_id == bot.bot_id)
        author = user if isinstance(user, str) else bot_id if isinstance(bot_id, str) else None
        entries[ts] = HistoryEntry(
            role=Role.ASSISTANT if own else Role.USER,
            content=text if own else prompt_text(text, bot.user_id),
            author_id=author,
            platform_message_id=ts,
        )
    return [entries[ts] for ts in sorted(entries, key=ts_order)]
