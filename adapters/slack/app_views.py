"""Slack's AI-app surfaces, chosen by `slack.app_view`:

- "assistant": the assistant view (manifest `features.assistant_view`). Opening the pane starts a
  thread and sends `assistant_thread_started`: its chat is created and the suggested prompts set.
- "agent": the agent view (manifest `features.agent_view`), where conversations start from the
  app's Messages tab. Opening the tab sends `app_home_opened` with `tab: "messages"`; the prompts
  are set for the tab itself (no thread_ts), once per DM and process run.
- "off": neither; `assistant_thread_started` is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import call
from adapters.slack.events import parse_assistant_thread, valid_channel
from adapters.slack.formatting import prompt_title
from bridge.config import SlackSettings
from bridge.ports import ChatStore, PlatformError, RateLimited

log = logging.getLogger(__name__)

MAX_TABS_REMEMBERED = 10_000


class AppViews:
    def __init__(self, settings: SlackSettings, client: AsyncWebClient, store: ChatStore) -> None:
        self._view = settings.app_view
        self._prompts = [
            {"title": prompt_title(prompt), "message": prompt}
            for prompt in settings.suggested_prompts
        ]
        self._client = client
        self._store = store
        self._prompted: set[str] = set()  # Messages tabs (DM channels) given their prompts

    async def thread_started(self, body: Mapping[str, Any]) -> None:
        """`assistant_thread_started`: the user opened the assistant pane (a new DM thread)."""
        if self._view == "off":
            log.debug("slack: assistant_thread_started ignored (slack.app_view is off)")
            return
        key = parse_assistant_thread(body)
        if key is None:
            return
        # The thread exists before its first message: its chat too, so that first message is not
        # taken for a mention in the middle of a thread (whose history would be read first).
        await self._store.get_or_create_chat(key)
        await self._suggest(key.channel, key.thread)

    async def home_opened(self, body: Mapping[str, Any]) -> None:
        """`app_home_opened`: under the agent view, the Messages tab is where conversations
        start, so it gets the suggested prompts (the Home tab gets nothing)."""
        event = body.get("event")
        if self._view != "agent" or not isinstance(event, Mapping):
            return
        channel = event.get("channel")
        if event.get("tab") != "messages" or not valid_channel(channel):
            return
        assert isinstance(channel, str)
        if channel in self._prompted:
            return
        if len(self._prompted) >= MAX_TABS_REMEMBERED:
            self._prompted.clear()
        self._prompted.add(channel)
        if not await self._suggest(channel, None):
            self._prompted.discard(channel)  # try again next time the tab opens

    async def _suggest(self, channel: str, thread_ts: str | None) -> bool:
        if not self._prompts:
            return True
        where = f"{channel}/{thread_ts or 'messages tab'}"
        try:
            await call(
                "assistant.threads.setSuggestedPrompts",
                where,
                # thread_ts may be left out since the agent view: prompts then sit at the top of
                # the Messages tab.
                self._client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, thread_ts=thread_ts, prompts=self._prompts
                ),
            )
        except (RateLimited, PlatformError) as exc:
            log.warning("slack: no suggested prompts in %s: %s", where, exc)
            return False
        return True
