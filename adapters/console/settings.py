"""The console's Settings page: the effective settings of a place (which layer supplied each value)
and the admin actions of the chat commands (`/bridge model`, `prompt`, `trigger`,
`reset-settings`, `reset`) as forms. It translates between HTTP and `bridge.admin.AdminActions`,
the object the chat commands call, so a change here reaches the next message exactly as one made
in chat does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.console.section import SESSION, Render
from bridge.admin import RESET_DONE, AdminActions, Refused
from bridge.policy.origin import Origin
from bridge.policy.policy import CONSOLE_SETTER
from bridge.ports import ConversationBrowser, RuntimeOverride

log = logging.getLogger(__name__)

PLATFORMS = ("slack", "discord")
TRIGGERS = ("mention", "always", "off")
MAX_ID_CHARS = 100
# Shown instead of any value whose key names a credential; none of today's settings does, and
# the render's redaction cuts the config's secrets out of every value besides.
HIDDEN = "[hidden]"
_SECRET_KEY = re.compile(r"(^|_)(api_key|key|token|secret|password|credentials?)$")
# What a redirect after a change says (a code in the query string, never text from it).
NOTICES = {
    "set-model": "The model is set here. It is kept across restarts; Clear removes it.",
    "set-system_prompt": "The system prompt is set here. It is kept across restarts; Clear "
    "removes it.",
    "set-trigger": "The trigger is set here. It is kept across restarts; Clear removes it.",
    "cleared": "The model, prompt and trigger set here at run time are removed.",
    "nothing": "Nothing was set here at run time; the settings come from the configuration file.",
    "reset": RESET_DONE,
}


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message would come from, as far as the settings care: the facts of an `Origin`."""

    platform: str
    workspace: str = ""
    channel: str = ""
    thread: str = ""
    category: str = ""

    def origin(self, user: str = "") -> Origin:
        return Origin(
            platform=self.platform,
            user=user,
            workspace=self.workspace,
            channel=self.channel,
            thread=self.thread,
            category=self.category,
        )

    @property
    def scope(self) -> str:
        """Where runtime settings are kept for it (as a chat command there keeps them)."""
        return self.origin().scope

    def describe(self) -> str:
        where = f"{self.platform} {'thread' if self.scope == self.thread else 'channel'} "
        return where + self.scope + (f" (workspace {self.workspace})" if self.workspace else "")

    def query(self, **extra: str) -> str:
        fields = {key: value for key, value in asdict(self).items() if value}
        return urlencode({**fields, **extra})


class SettingsSection:
    """`GET /settings`: a place's effective settings and runtime overrides (or every runtime
    override, when no place is chosen); `POST /settings/override`, `/settings/clear` and
    `/settings/reset`: the chat commands' actions, each logged with the session's id."""

    nav = ("/settings", "Settings")

    def __init__(self, actions: AdminActions, *, browser: ConversationBrowser) -> None:
        self._actions = actions
        self._browser = browser
        self._render: Render | None = None

    def add_routes(self, router: web.UrlDispatcher, render: Render) -> None:
        self._render = render
        router.add_get("/settings", self.page)
        router.add_post("/settings/override", self.override)
        router.add_post("/settings/clear", self.clear)
        router.add_post("/settings/reset", self.reset)

    async def close(self) -> None:
        return None  # nothing held open: every request is answered at once

    # --- pages ---------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        chat_id = query.get("chat", "").strip()
        if chat_id:
            return await self._place_page(request, await self._place_of_chat(chat_id), chat_id)
        if not query.get("platform") and not query.get("channel"):
            return self._page(request, None, overrides=await self._actions.runtime_overrides())
        notice = NOTICES.get(query.get("done", ""))
        if query.get("done") == "reset" and query.get("count", "").isdigit():
            count = int(query["count"])
            notice = (
                f"{notice} ({count} conversation{'' if count == 1 else 's'})"
                if count
                else "Nothing to reset: no conversation is stored for this place (is the "
                "workspace right?)."
            )
        return await self._place_page(request, parse_place(query), notice=notice)

    async def _place_page(
        self,
        request: web.Request,
        place: Place,
        chat_id: str = "",
        *,
        notice: str | None = None,
        error: str | None = None,
        typed: dict[str, str] | None = None,
        confirm_reset: bool = False,
        status: int = 200,
    ) -> web.Response:
        origin = place.origin()
        effective = self._actions.effective(origin)
        rows = [(key, masked(key, value), source) for key, value, source in effective.shown()]
        here = await self._actions.overrides_at(origin)
        return self._page(
            request,
            place,
            chat_id=chat_id,
            rows=rows,
            here=[override_view(o) for o in here],
            form_values={
                "model": effective.reply.model,
                "system_prompt": effective.reply.system_prompt,
                "trigger": effective.trigger,
                **(typed or {}),
            },
            notice=notice,
            error=error,
            confirm_reset=confirm_reset,
            status=status,
        )

    def _page(
        self,
        request: web.Request,
        place: Place | None,
        *,
        overrides: Sequence[RuntimeOverride] = (),
        status: int = 200,
        **values: Any,
    ) -> web.Response:
        assert self._render is not None, "add_routes first"
        return self._render(
            "settings.html",
            request,
            {
                "place": place,
                "where": place.describe() if place is not None else "",
                "place_query": place.query() if place is not None else "",
                "platforms": PLATFORMS,
                "triggers": TRIGGERS,
                "all_overrides": [override_view(o) for o in overrides],
                **values,
            },
            status=status,
        )

    async def _place_of_chat(self, chat_id: str) -> Place:
        if not chat_id.isdigit() or len(chat_id) > 18:
            raise web.HTTPBadRequest(text="chat: a conversation's number")
        thread = await self._browser.conversation(int(chat_id), limit=1)
        if thread is None:
            raise web.HTTPNotFound(text="No such conversation.")
        key = thread.chat.key
        # A Slack thread's messages carry "<channel>/<thread_ts>"; a Discord thread is a channel
        # of its own (its parent and category are not stored: the form takes them).
        slack_thread = f"{key.channel}/{key.thread}" if key.thread else ""
        return Place(
            platform=key.platform,
            workspace=key.workspace,
            channel=key.channel,
            thread=slack_thread if key.platform == "slack" else key.thread,
        )

    # --- actions -------------------------------------------------------------------------------

    async def override(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        place = parse_place(form)
        key, value = _text(form, "key"), _text(form, "value", limit=20_000)
        session = request[SESSION]
        try:
            stored = await self._actions.set(
                place.origin(f"{CONSOLE_SETTER}{session.id}"), key, value
            )
        except Refused as refused:
            log.info("console: session %s: %s for %s refused: %s", session.id, key or "?",
                     place.describe(), refused)  # fmt: skip
            return await self._place_page(
                request,
                place,
                _chat(form),
                error=str(refused),
                typed={key: value} if key in ("model", "system_prompt", "trigger") else None,
                status=400,
            )
        shown = repr(stored) if key != "system_prompt" else f"({len(stored):,} characters)"
        log.info("console: session %s set %s = %s for %s", session.id, key, shown,
                 place.describe())  # fmt: skip
        raise web.HTTPSeeOther(f"/settings?{place.query(done='set-' + key)}")

    async def clear(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        place = parse_place(form)
        session = request[SESSION]
        cleared = await self._actions.clear(place.origin(f"{CONSOLE_SETTER}{session.id}"))
        log.info("console: session %s cleared the runtime settings of %s (%s)", session.id,
                 place.describe(), "removed" if cleared else "none were set")  # fmt: skip
        raise web.HTTPSeeOther(f"/settings?{place.query(done='cleared' if cleared else 'nothing')}")

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """Without `confirmed`, the page asking to confirm (nothing changes yet)."""
        form = await request.post()
        place = parse_place(form)
        if form.get("confirmed") != "yes":
            return await self._place_page(request, place, _chat(form), confirm_reset=True)
        session = request[SESSION]
        count = await self._actions.reset(place.origin(f"{CONSOLE_SETTER}{session.id}"))
        log.info("console: session %s reset the conversation of %s (%d conversations)",
                 session.id, place.describe(), count)  # fmt: skip
        raise web.HTTPSeeOther(f"/settings?{place.query(done='reset', count=str(count))}")


def parse_place(values: Any) -> Place:
    """The place of a query string or a form; 400 for a missing or malformed id."""
    platform = _text(values, "platform")
    if platform not in PLATFORMS:
        raise web.HTTPBadRequest(text=f"platform: one of {', '.join(PLATFORMS)}")
    ids = {name: _id(values, name) for name in ("workspace", "channel", "thread", "category")}
    if not ids["channel"]:
        raise web.HTTPBadRequest(text="channel: the channel's id (Discord: or a thread's)")
    if platform == "slack":
        ids["category"] = ""  # Slack has none
        if ids["thread"] and "/" not in ids["thread"]:  # a bare thread_ts
            ids["thread"] = f"{ids['channel']}/{ids['thread']}"
    return Place(platform, **ids)


def _text(values: Any, name: str, *, limit: int = MAX_ID_CHARS) -> str:
    value = values.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _chat(form: Any) -> str:
    """The conversation the page was opened from (for its link back), when it is one."""
    chat = _text(form, "chat", limit=18)
    return chat if chat.isdigit() else ""


def _id(values: Any, name: str) -> str:
    value = _text(values, name, limit=MAX_ID_CHARS + 1)
    if len(value) > MAX_ID_CHARS or any(c.isspace() for c in value):
        raise web.HTTPBadRequest(text=f"{name}: an id of at most {MAX_ID_CHARS} characters")
    return value


def masked(key: str, value: str) -> str:
    return HIDDEN if _SECRET_KEY.search(key.lower()) else value


@dataclass(frozen=True, slots=True)
class OverrideView:
    platform: str
    scope: str
    values: tuple[tuple[str, str], ...]
    set_by: str
    set_at: str


def override_view(override: RuntimeOverride) -> OverrideView:
    return OverrideView(
        platform=override.platform,
        scope=override.scope,
        values=tuple(
            (key, masked(key, _short(value))) for key, value in sorted(override.values.items())
        ),
        set_by=override.set_by,
        set_at=_when(override.set_at),
    )


def _short(value: str) -> str:
    return value if len(value) <= 120 else value[:119] + "…"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
