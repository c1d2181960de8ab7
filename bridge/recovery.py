"""Crash recovery the user sees: every message a process took on ends answered or with a notice.

A sweep (on start, then every `recovery.sweep_interval`) looks for user messages still waiting
for their answer whose owner is dead (see `bridge.ownership`), or that this very process holds
without working on them (a task lost to a bug). Each one is taken over atomically, so two
processes never settle the same message, then:
- a reply that was already on screen is finished there: the same messages show the stored text
  and the `notices.interrupted` notice, the cursor is gone, a Slack status is cleared and a native
  stream stopped;
- a message whose reply never began, or had shown only its placeholder, is answered now if it is
  recent (`recovery.answer_within`), in that placeholder if there was one; otherwise it gets the
  `notices.ask_again` notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.domain import ChatKey, MessageStatus, StoredMessage
from bridge.live_feed import GuardedFeed, watched_reply
from bridge.ownership import Liveness
from bridge.ports import (
    ChatStore,
    MessageLimit,
    Orphan,
    ReplyFeed,
    ReplyPlaces,
    ReplyProgress,
    ReplySurface,
    StoreUnavailable,
)
from bridge.responder import Responder
from bridge.writer import ReplyWriter

log = logging.getLogger(__name__)

BATCH = 100
# A message this process stored is left to its own task for this long before it counts as stuck.
OWN_GRACE_SECONDS = 60.0


@dataclass
class SweepReport:
    finished: int = 0  # replies on screen, ended with the notice
    answered: int = 0  # messages whose reply never began, answered now
    told: int = 0  # messages too old to answer, told to ask again
    unreachable: int = 0  # the platform is not configured: marked, not retried


class Recovery:
    def __init__(
        self,
        *,
        store: ChatStore,
        responder: Responder,
        places: Sequence[ReplyPlaces],
        liveness: Liveness,
        answer_within: float,
        clock: Callable[[], datetime] | None = None,
        settles: Callable[[ChatKey], bool] | None = None,
        feed: ReplyFeed | None = None,
    ) -> None:
        """`settles`: whether this process settles a chat's messages (`[cluster]`: the holder of
        its lease does; None: every chat). `feed`: who watches replies (the console's live page):
        a reply finished on screen as interrupted is told to it, as the responder tells its own
        (the ones recovery answers anew go through the responder)."""
        self._store = store
        self._feed = None if feed is None else GuardedFeed(feed)
        self._responder = responder
        self._places = {place.platform: place for place in places}
        self._liveness = liveness
        self._answer_within = answer_within
        self._clock = clock or (lambda: datetime.now(UTC))
        self._settles = settles
        # Messages taken over whose settling a database outage cut short.
        self._interrupted: set[int] = set()
        self._answering: set[asyncio.Task[object]] = set()
        self._lock = asyncio.Lock()
        self._stopping = False

    async def stop(self) -> None:
        """No further message is settled; the one being settled now ends normally (its edit and
        its rows), so nothing is left half done. What is left is the next start's to recover."""
        self._stopping = True
        async with self._lock:
            pass

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        if self._stopping or self._responder.draining:
            return report
        async with self._lock:  # the start-up sweep and the periodic one never overlap
            now = self._clock()
            dead = [o.id for o in await self._store.owners() if self._liveness.is_dead(o, now)]
            for owner in dead:
                await self._settle_all(owner, report, now)
                if self._stopping:
                    break
                if await self._store.forget_owner(owner):
                    log.info(
                        "recovery: process %s is gone and everything it held is settled", owner
                    )
            await self._settle_all(self._store.owner, report, now)
        if report.finished or report.answered or report.told or report.unreachable:
            log.warning("recovery: %s", report)
        return report

    async def _settle_all(self, owner: str, report: SweepReport, now: datetime) -> None:
        after = 0
        while True:
            orphans = await self._store.orphans([owner], limit=BATCH, after_id=after)
            for orphan in orphans:
                if self._stopping:
                    return
                after = orphan.user_message.id
                mine = owner == self._store.owner
                if mine and not self._stuck(orphan, now) and after not in self._interrupted:
                    continue
                if owner != self._store.owner and self._settles is not None:
                    if not self._settles(orphan.chat):
                        continue  # the holder of its lease settles it
                await self._settle(orphan, report, now)
            if len(orphans) < BATCH:
                return

    def _stuck(self, orphan: Orphan, now: datetime) -> bool:
        """One of our own messages that no task of ours works on any more."""
        if orphan.user_message.id in self._responder.in_flight:
            return False
        return _age(orphan.user_message, now) > OWN_GRACE_SECONDS

    async def _settle(self, orphan: Orphan, report: SweepReport, now: datetime) -> None:
        user = orphan.user_message
        where = {"platform": orphan.chat.platform, "chat_id": user.chat_id, "message_id": user.id}
        place = self._places.get(orphan.chat.platform)
        ids = [user.id, *(reply.id for reply in orphan.replies)]
        if place is None:
            if user.id in await self._store.take_over(ids, orphan.owner):
                log.warning("recovery: message %s is on %s, which is not enabled; not answered",
                            user.id, orphan.chat.platform, extra=where)  # fmt: skip
                await self._close(orphan, "its platform is not enabled")
                report.unreachable += 1
            return
        surface = place.surface_for(orphan.chat, user)
        if surface is None:
            return  # not connected right now: the next sweep tries again
        if user.id not in await self._store.take_over(ids, orphan.owner):
            return  # answered meanwhile, or another process was faster
        self._interrupted.discard(user.id)
        try:
            await self._settle_taken(orphan, place, surface, report, now, where)
        except _NotConnected:
            return  # now this process's own: its sweep settles it once the platform is back
        except (StoreUnavailable, OSError):
            # The database went away: the sweep stops and is tried again soon; the message is
            # this process's now, and the next sweep settles it without waiting to call it stuck.
            self._interrupted.add(user.id)
            raise
        except Exception:
            # One message that cannot be settled must not stall the others sweep after sweep:
            # logged once, closed, never tried again.
            log.exception("recovery: message %s could not be settled; closing it", user.id,
                          extra=where)  # fmt: skip
            await self._close(orphan, "recovery failed; see the log")

    async def _settle_taken(
        self,
        orphan: Orphan,
        place: ReplyPlaces,
        surface: ReplySurface,
        report: SweepReport,
        now: datetime,
        where: dict[str, object],
    ) -> None:
        user = orphan.user_message
        if orphan.replies and all(reply.status.finished for reply in orphan.replies):
            # The reply ended (its final state is stored and was shown); only the entry's end
            # was not saved.
            await self._store.mark_answered(user.id)
            return
        shown = [r for r in orphan.replies if r.platform_message_ids and not r.status.finished]
        recent = _age(user, now) <= self._answer_within
        numbers = sorted(reply.response_number for reply in shown)
        placeholders_only = not any(reply.content for reply in orphan.replies)
        choices = self._responder.stored_settings(user).n
        complete_set = numbers == list(range(choices))
        if shown and recent and placeholders_only and complete_set:
            # Only placeholders were on screen: the answer goes into them, as if never cut.
            placeholders = [i for reply in shown for i in reply.platform_message_ids]
            resumed = place.surface_for(orphan.chat, user, adopt=placeholders)
            if resumed is None:
                raise _NotConnected
            self._start_answer(user, orphan, resumed, sorted(shown, key=_number))
            report.answered += 1
            return
        if shown:
            ended = [await self._finish_on_screen(orphan, reply, where) for reply in shown]
            await self._close(
                orphan, "its process stopped while it streamed", [reply.id for reply in shown]
            )
            report.finished += len(shown)
            if self._feed is not None:
                # Told once it is all done: a reply told started must be told ended, and a
                # failure above leaves the message to the next sweep (which starts over).
                model = next((reply.model for reply in shown if reply.model), "")
                self._feed.started(watched_reply(user, orphan.chat, orphan.chat.platform, model))
                texts, errors = zip(*ended, strict=True)
                self._feed.shown(user.id, "\n\n".join(texts), updates=0, rate_limited=0)
                self._feed.ended(user.id, MessageStatus.INTERRUPTED, errors[0])
            return
        await self._close_replies(orphan, "its process stopped before it began")
        if recent:
            self._start_answer(user, orphan, surface, ())
            report.answered += 1
        else:
            notice = self._responder.settings.notices.ask_again
            await self._responder.notices.tell(surface, user, notice, where)
            report.told += 1

    def _start_answer(
        self,
        user: StoredMessage,
        orphan: Orphan,
        surface: ReplySurface,
        resume: Sequence[StoredMessage],
    ) -> None:
        answering = self._responder.answer(user, orphan.chat, surface, resume=resume)
        task = asyncio.get_running_loop().create_task(answering)
        self._answering.add(task)
        task.add_done_callback(self._answered)

    async def _finish_on_screen(
        self, orphan: Orphan, reply: StoredMessage, where: dict[str, object]
    ) -> tuple[str, str]:
        """The reply shown as ended, with the interrupted notice; (its text, the error stored)."""
        layout = reply.metadata.get("layout")
        limit = MessageLimit(int(layout[0]), layout[1]) if isinstance(layout, list) else None
        surface = self._places[orphan.chat.platform].surface_for(
            orphan.chat, orphan.user_message, adopt=reply.platform_message_ids, limit=limit
        )
        if surface is None:
            raise _NotConnected
        responder = self._responder
        writer = ReplyWriter(
            surface, responder.scheduler, style=responder.settings.style, log_extra=where
        )
        writer.adopt(reply.platform_message_ids, reply.content)
        await writer.finish(responder.settings.notices.interrupted)
        try:
            await surface.stop_typing()
        except Exception as exc:
            log.info("recovery: could not clear the status of reply %s: %s", reply.id, exc,
                     extra=where)  # fmt: skip
        error = "interrupted: its process stopped while it streamed"
        if writer.error:
            # Deleted, too old to edit, channel gone: marked once, never tried again.
            error += f"; the notice could not be shown: {writer.error}"
            log.warning("recovery: reply %s could not be finished on screen: %s", reply.id,
                        writer.error, extra=where)  # fmt: skip
        await self._store.save_reply(
            reply.id,
            ReplyProgress(
                content=reply.content,
                status=MessageStatus.INTERRUPTED,
                platform_message_ids=writer.platform_message_ids,
                error=error,
            ),
        )
        return writer.text, error

    async def _close(self, orphan: Orphan, why: str, finished: Sequence[int] = ()) -> None:
        await self._close_replies(orphan, why, finished)
        await self._store.mark_answered(orphan.user_message.id)

    async def _close_replies(self, orphan: Orphan, why: str, finished: Sequence[int] = ()) -> None:
        """Its replies not yet finished marked interrupted; `finished`: ids finished since the
        orphan was read (on screen, with their own error), which are left as they are."""
        for reply in orphan.replies:
            if reply.status.finished or reply.id in finished:
                continue
            progress = ReplyProgress(reply.content, MessageStatus.INTERRUPTED, error=why)
            await self._store.save_reply(reply.id, progress)

    def _answered(self, task: asyncio.Task[object]) -> None:
        self._answering.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recovery: answering a message failed", exc_info=task.exception())

    async def wait_answers(self) -> None:
        """Wait for the messages this recovery is answering (tests)."""
        while self._answering:
            await asyncio.gather(*list(self._answering), return_exceptions=True)


class _NotConnected(Exception):
    """The platform went away in the middle of a sweep."""


def _number(reply: StoredMessage) -> int:
    return reply.response_number


def _age(message: StoredMessage, now: datetime) -> float:
    if message.created_at is None:
        return 0.0
    return (now - message.created_at).total_seconds()
