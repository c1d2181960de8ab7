"""The console's conversation pages: the list (filters from the query string, keyset paging by an
"older" link) and one conversation as a thread. They translate between HTTP and the
`ConversationBrowser` port; the templates only lay out what is handed to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.console.section import Render
from bridge.domain import MessageStatus, Role, StoredMessage
from bridge.ports import ChatCursor, ChatFilter, ConversationBrowser

PAGE_SIZE = 50
FILTERS = ("platform", "workspace", "channel", "user", "status", "since", "until", "q")


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as the thread shows it."""

    id: int
    kind: str  # "user", "reply", "calls" (a round's tool calls), "result" (one tool's result)
    role: str
    author: str
    status: str
    content: str
    created_at: str
    model: str | None = None
    tokens: str | None = None
    error: str | None = None
    attachments: tuple[str, ...] = ()
    calls: tuple[tuple[str, str], ...] = ()  # (name, arguments)
    tool: str | None = None  # a result's tool name and call id
    tool_seconds: float | None = None
    reasoning_seconds: float | None = None
    deleted: bool = False
    notes: tuple[str, ...] = field(default=())


class ConversationPages:
    def __init__(
        self, browser: ConversationBrowser, render: Render, *, page_size: int = PAGE_SIZE
    ) -> None:
        self._browser = browser
        self._render = render
        self._page_size = page_size

    async def conversations(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        where = parse_filter(query)
        after = parse_cursor(query.get("older"))
        page = await self._browser.browse(where, after=after, limit=self._page_size)
        kept = {name: query[name] for name in FILTERS if query.get(name)}
        older = None
        if page.next is not None:
            cursor = f"{page.next.last_activity.isoformat()},{page.next.chat_id}"
            older = "/conversations?" + urlencode({**kept, "older": cursor})
        return self._render(
            "conversations.html",
            request,
            {
                "chats": page.chats,
                "filters": {name: query.get(name, "") for name in FILTERS},
                "statuses": [status.value for status in MessageStatus],
                "older": older,
                "paged": after is not None,
                "first": "/conversations?" + urlencode(kept) if kept else "/conversations",
            },
        )

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        thread = await self._browser.conversation(int(request.match_info["chat_id"]))
        if thread is None:
            raise web.HTTPNotFound(text="No such conversation.")
        return self._render(
            "conversation.html",
            request,
            {
                "chat": thread.chat,
                "earlier": thread.earlier,
                "messages": [message_view(m) for m in thread.messages],
            },
        )


def parse_filter(query: Mapping[str, str]) -> ChatFilter:
    def text(name: str) -> str | None:
        value = query.get(name, "").strip()
        return value[:200] or None

    status = text("status")
    if status is not None and status not in {s.value for s in MessageStatus}:
        raise web.HTTPBadRequest(text=f"status: one of {', '.join(s.value for s in MessageStatus)}")
    since, until = _day(text("since"), "since"), _day(text("until"), "until")
    return ChatFilter(
        platform=text("platform"),
        workspace=text("workspace"),
        channel=text("channel"),
        user=text("user"),
        status=MessageStatus(status) if status else None,
        since=since,
        # "until" names the last day shown: activity before the next day's start.
        until=until + timedelta(days=1) if until is not None else None,
        text=text("q"),
    )


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a date as YYYY-MM-DD") from None


def parse_cursor(value: str | None) -> ChatCursor | None:
    if not value:
        return None
    moment, _, chat_id = value.rpartition(",")
    try:
        when = datetime.fromisoformat(moment)
        return ChatCursor(when if when.tzinfo else when.replace(tzinfo=UTC), int(chat_id))
    except ValueError:
        raise web.HTTPBadRequest(text="older: not a page of this list") from None


def message_view(message: StoredMessage) -> MessageView:
    meta = message.metadata
    calls = tuple(
        (str(call.get("name", "")), str(call.get("arguments", "")))
        for call in meta.get("tool_calls") or ()
        if isinstance(call, dict)
    )
    if message.role is Role.TOOL:
        kind = "result"
    elif calls:
        kind = "calls"
    elif message.role is Role.USER:
        kind = "user"
    else:
        kind = "reply"
    reasoning = meta.get("reasoning")
    usage = message.usage
    return MessageView(
        id=message.id,
        kind=kind,
        role=message.role.value,
        author=str(meta.get("author_name") or message.author_id or ""),
        status=message.status.value,
        content=message.content,
        created_at=_when(message.created_at),
        model=message.model if kind != "user" else None,
        tokens=(
            f"{usage.prompt_tokens} in, {usage.completion_tokens} out"
            if usage is not None
            else None
        ),
        # A tool's failure (error, timeout, refusal) is told in its result's content.
        error=message.error
        or ("the tool failed" if kind == "result" and meta.get("error") else None),
        attachments=tuple(
            str(entry.get("name", "file"))
            for entry in meta.get("attachments") or ()
            if isinstance(entry, dict)
        ),
        calls=calls,
        tool=(
            f"{meta.get('name', '?')} (call {meta.get('tool_call_id', '?')})"
            if kind == "result"
            else None
        ),  # fmt: skip
        tool_seconds=_number(meta.get("seconds")) if kind == "result" else None,
        reasoning_seconds=_number(reasoning.get("seconds"))
        if isinstance(reasoning, dict)
        else None,
        deleted=meta.get("deleted") is True,
        notes=_notes(meta),
    )


def _notes(meta: Mapping[str, Any]) -> tuple[str, ...]:
    notes = []
    if meta.get("imported"):
        notes.append("imported from the platform's history")
    if meta.get("edited_at"):
        notes.append(f"edited by its author at {meta['edited_at']}")
    return tuple(notes)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
