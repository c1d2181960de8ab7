"""One natively streamed Slack message (chat.startStream / appendStream / stopStream).

A stream can only grow: it appends what is new, holds back a tail that may still become a
mention (`<`, `@he`, `<!cha`), and says when a text is no longer an extension of what it shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import SlackCallFailed, call
from adapters.slack.events import ReplyPlace
from adapters.slack.formatting import neutralise_mentions, settled_length

log = logging.getLogger(__name__)


class StreamEnded(Exception):
    """The stream takes no more text (expired after about 5 minutes, or failed)."""


class NativeStream:
    def __init__(self, client: AsyncWebClient, place: ReplyPlace, ts: str, shown: str) -> None:
        self._client = client
        self._place = place
        self.ts = ts
        self.shown = shown  # the (mention-defused) text Slack shows so far
        self.last_text = ""  # the latest complete text asked for, held-back tail included
        self.open = True

    @classmethod
    async def start(cls, client: AsyncWebClient, place: ReplyPlace, text: str) -> NativeStream:
        """Start streaming `text` ("" for an empty message) as a reply in the thread.

        Raises RateLimited or SlackCallFailed (e.g. missing_scope when the app cannot stream).
        """
        shown = neutralise_mentions(text[: settled_length(text)])
        answer = await call(
            "chat.startStream",
            str(place),
            client.chat_startStream(
                channel=place.channel,
                thread_ts=place.thread_ts,
                markdown_text=shown or None,
                recipient_team_id=place.recipient_team,
                recipient_user_id=place.recipient_user,
            ),
        )
        stream = cls(client, place, str(answer["ts"]), shown)
        stream.last_text = text
        return stream

    async def extend(
        self, text: str, *, final: bool, blocks: Sequence[dict[str, Any]] = ()
    ) -> bool:
        """Show `text` (and stop, if `final`, with `blocks` under it: the feedback buttons);
        False when `text` does not extend what is shown.

        Raises RateLimited (nothing changed: retry later) or StreamEnded (the stream is closed).
        """
        target = text if final else text[: settled_length(text)]
        wanted = neutralise_mentions(target)
        if not wanted.startswith(self.shown):
            if not final and self.shown.startswith(wanted):
                self.last_text = text  # nothing settled beyond what is shown yet
                return True
            return False
        delta = wanted[len(self.shown) :]
        try:
            if final:
                await self._stop(delta, blocks)
            elif delta:
                await call(
                    "chat.appendStream",
                    str(self._place),
                    self._client.chat_appendStream(
                        channel=self._place.channel, ts=self.ts, markdown_text=delta
                    ),
                )
        except SlackCallFailed as exc:
            self.open = False
            raise StreamEnded(exc.code) from exc
        self.shown, self.last_text = wanted, text
        return True

    async def stop(self) -> None:
        """End the stream as it is; a stream that already ended is fine."""
        try:
            await self._stop("")
        except SlackCallFailed as exc:
            log.info("slack: stream in %s already ended (%s)", self._place, exc.code)
            self.open = False

    async def _stop(self, delta: str, blocks: Sequence[dict[str, Any]] = ()) -> None:
        await call(
            "chat.stopStream",
            str(self._place),
            self._client.chat_stopStream(
                channel=self._place.channel,
                ts=self.ts,
                markdown_text=delta or None,
                blocks=list(blocks) or None,
            ),
        )
        self.open = False
