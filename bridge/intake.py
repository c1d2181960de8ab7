"""Where every user message enters the core: the policy admits it or not, then the responder
answers it with the settings resolved for it. Adapters call `receive`; nothing else decides
whether a message is answered.

Order of the checks, cheapest first: [access] (no content is read or stored for a message it
refuses), the trigger, then [limits] (the token quotas last: they read the database). A message
over a limit causes no LLM call and gets the `notices.limited` notice, at most one a minute per
user.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from bridge.cluster.router import Router
from bridge.domain import InboundMessage, MessageStatus
from bridge.policy.effective import EffectiveSettings
from bridge.policy.limits import OverLimit
from bridge.policy.origin import Origin
from bridge.policy.policy import Policy
from bridge.policy.rules import Rules
from bridge.ports import (
    ChatStore,
    PlatformError,
    RateLimited,
    ReplyOutcome,
    ReplySurface,
    StoreUnavailable,
)
from bridge.responder import Responder
from bridge.scheduler import Urgency
from bridge.telemetry import EventOutcome, ReplyReport

log = logging.getLogger(__name__)

RECENT_MESSAGES = 10_000

# Builds the surface a reply (or a refusal notice) is written to, with the resolved settings
# (Slack reads `native_streaming` from them).
SurfaceFactory = Callable[[EffectiveSettings], ReplySurface]
# Runs once the message is admitted (Slack reads the earlier messages of a thread); it is given
# whether [access] lets a user in, so the messages of a refused user are not read into context.
MayRead = Callable[[str], bool]
Prepare = Callable[[MayRead], Awaitable[None]]
# What the adapter needs to handle the message on another instance (`[cluster]`): JSON.
Handoff = Callable[[], Mapping[str, Any]]


class Intake:
    def __init__(self, *, policy: Policy, responder: Responder, store: ChatStore) -> None:
        self._policy = policy
        self._responder = responder
        self._store = store
        self._scheduler = responder.scheduler
        # Platform messages seen lately: Slack sends a mention twice (app_mention and message),
        # and the copy must not count twice against the limits (the store answers it once).
        self._seen: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._router: Router | None = None

    def route_through(self, router: Router) -> None:
        """Several instances (`[cluster]`): a message whose lease another instance holds is
        handed to it once [access] and the trigger let it through."""
        self._router = router

    async def receive(
        self,
        inbound: InboundMessage,
        origin: Origin,
        surfaces: SurfaceFactory,
        *,
        prepare: Prepare | None = None,
        handoff: Handoff | None = None,
    ) -> ReplyReport | None:
        """Answer `inbound` if the policy lets it through; None when it is not answered.

        `prepare` runs once the message is admitted and before it is stored (Slack reads the
        earlier messages of a thread the bot was just called into): nothing of a message that
        is not admitted is read or stored. `handoff`: how the adapter hands the message to the
        instance that answers it (`[cluster]`; None: it is answered here).
        """
        seen = (inbound.chat_key, inbound.platform_message_id)
        if seen in self._seen:
            self._responder.observer.event(origin.platform, EventOutcome.DUPLICATE)
            return None
        policy = self._policy
        rules = policy.rules  # one snapshot for the whole decision, even across a reload
        where = {"platform": origin.platform, "event_id": inbound.event_id}
        user = f"{origin.platform}:{origin.user}"
        denial = rules.denial(origin)
        if denial is not None and not origin.addressed:
            return None  # chatter in a channel the bot may not serve: not even worth a log line
        if denial is not None:
            self._remember(seen)
            self._responder.observer.event(origin.platform, EventOutcome.DENIED)
            log.info("not answering %s: %s", inbound.event_id, denial.reason, extra=where)
            if rules.notify_denied and origin.addressed and policy.notice_gate.may_tell(user):
                await self._notify(surfaces(rules.defaults), rules.notices.denied, where)
            return None
        effective = policy.resolve(origin)
        if effective.trigger == "off" or (effective.trigger == "mention" and not origin.addressed):
            return None
        router = self._router
        if router is None or handoff is None:
            self._remember(seen)
            return await self._admit(inbound, origin, surfaces, effective, rules, prepare, where)
        if not await router.answers_here(origin.platform, origin.workspace):
            # Not remembered here: this instance may take the lease, and the event back, later.
            await self._hand_over(router, inbound, origin, surfaces(effective), handoff, where)
            return None
        if seen in self._seen:  # the copy that arrived while the lease was looked up
            self._responder.observer.event(origin.platform, EventOutcome.DUPLICATE)
            return None
        self._remember(seen)
        with router.working(origin.platform, origin.workspace):
            return await self._admit(inbound, origin, surfaces, effective, rules, prepare, where)

    def _remember(self, seen: tuple[object, ...]) -> None:
        self._seen[seen] = None
        if len(self._seen) > RECENT_MESSAGES:
            self._seen.popitem(last=False)

    async def _admit(
        self,
        inbound: InboundMessage,
        origin: Origin,
        surfaces: SurfaceFactory,
        effective: EffectiveSettings,
        rules: Rules,
        prepare: Prepare | None,
        where: Mapping[str, object],
    ) -> ReplyReport | None:
        """The limits, then the reply."""
        policy = self._policy
        user = f"{origin.platform}:{origin.user}"
        surface = surfaces(effective)
        channel = f"{origin.platform}:{origin.channel}"
        limits = rules.limits
        over = None
        if limits.user_daily_tokens or limits.channel_daily_tokens:
            # First, the one check that awaits: from here to `admit` nothing may, or a burst of
            # messages would all pass the counts below before any of them is counted.
            over = await self._over_quota(origin, limits.user_daily_tokens,
                                          limits.channel_daily_tokens, where)  # fmt: skip
        over = over or policy.limiter.check(limits, user, channel, inbound.text)
        if over is None and policy.limiter.over_queue(limits):
            log.warning("not answering %s: limits.queue_limit (%d) reached", inbound.event_id,
                        limits.queue_limit, extra=where)  # fmt: skip
            self._responder.observer.event(origin.platform, EventOutcome.LIMITED)
            if policy.notice_gate.may_tell(user):
                await self._notify(surface, rules.notices.busy, where)
            return None
        if over is not None:
            log.info("not answering %s: over limits.%s", inbound.event_id, over.name, extra=where)
            self._responder.observer.event(origin.platform, EventOutcome.LIMITED)
            if policy.notice_gate.may_tell(user):
                notice = rules.notices.limited.format(limit=over.limit, resets=over.resets)
                await self._notify(surface, notice, where)
            return None
        notices = rules.notices
        ticket = policy.limiter.admit(
            user, channel, limits.show_queued_after, notices.queued, notices.queued_status
        )
        try:
            if prepare is not None:
                await prepare(lambda author: rules.denial(replace(origin, user=author)) is None)
            report = await self._responder.handle(
                origin.platform, inbound, surface, settings=effective.reply, ticket=ticket
            )
        finally:
            ticket.release()
        if report is not None:
            await self._count(origin, report, where)
        return report

    async def _hand_over(
        self,
        router: Router,
        inbound: InboundMessage,
        origin: Origin,
        surface: ReplySurface,
        handoff: Handoff,
        where: Mapping[str, object],
    ) -> None:
        try:
            await router.hand_over(
                origin.platform, origin.workspace, inbound.event_id, str(inbound.chat_key),
                handoff, where,
            )  # fmt: skip
            self._responder.observer.event(origin.platform, EventOutcome.HANDED_OVER)
        except (StoreUnavailable, OSError) as exc:
            self._responder.observer.event(origin.platform, EventOutcome.REFUSED)
            await self._responder.notices.refuse(inbound, surface, origin.platform, exc)

    async def _over_quota(
        self, origin: Origin, user_quota: int, channel_quota: int, where: Mapping[str, object]
    ) -> OverLimit | None:
        try:
            used_user, used_channel = await self._store.usage_of(
                self._policy.today(), origin.platform, user=origin.user, channel=origin.channel
            )
        except (StoreUnavailable, OSError) as exc:
            # The reply needs the database too: it fails visibly if it stays down.
            log.warning("token quota not checked: %s", exc, extra=where)
            return None
        resets = _resets_in(self._policy.wall())
        if user_quota and used_user >= user_quota:
            return OverLimit(
                "user_daily_tokens",
                f"you used {used_user:,} tokens today, your daily quota is {user_quota:,}",
                resets,
            )
        if channel_quota and used_channel >= channel_quota:
            return OverLimit(
                "channel_daily_tokens",
                f"this channel used {used_channel:,} tokens today, its daily quota is "
                f"{channel_quota:,}",
                resets,
            )
        return None

    async def _count(
        self, origin: Origin, report: ReplyReport, where: Mapping[str, object]
    ) -> None:
        """Add the reply's tokens to its user's and channel's day, and its outcome (failed,
        429s) to its platform's day (one write). The server's reported usage when it sent one,
        else the estimate (a model that reports none still counts against the quotas)."""
        if report.usage is not None:
            tokens = report.usage.total_tokens
        elif any(report.texts):
            tokens = report.estimated_prompt_tokens + sum(len(t) for t in report.texts) // 4
        else:
            tokens = 0  # nothing answered (an error before the first token): no charge
        outcome = ReplyOutcome(
            failed=report.status is MessageStatus.FAILED, rate_limited=report.rate_limited
        )
        try:
            await self._store.add_usage(
                self._policy.today(), origin.platform, user=origin.user, channel=origin.channel,
                tokens=max(tokens, 0), outcome=outcome,
            )  # fmt: skip
        except Exception as exc:  # counting must never fail a reply that is already shown
            log.warning("tokens of message %s not counted: %s", report.user_message_id, exc,
                        extra=where)  # fmt: skip

    async def _notify(self, surface: ReplySurface, text: str, where: Mapping[str, object]) -> None:
        try:
            await self._scheduler.acquire(
                surface.post_bucket(), Urgency.FIRST_TEXT, self._scheduler.now()
            )
            await surface.notify(text)
        except (RateLimited, PlatformError, OSError) as exc:
            log.info("could not post a notice: %s", exc, extra=where)
        except Exception as exc:
            log.warning("could not post a notice: %s: %s", type(exc).__name__, exc, extra=where)


def _resets_in(now: datetime) -> str:
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = max(1, round((midnight - now).total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    left = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"It resets at 00:00 UTC (in {left})."
