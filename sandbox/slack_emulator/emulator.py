"""`SlackEmulator`: one emulated workspace with one installed app, served on a loopback port.

Tests, the sandbox and the benchmarks drive it from here: people's actions go in as events,
and what the app did comes out as call records and as what each thread shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.local_server import LocalServer
from sandbox.slack_emulator import events
from sandbox.slack_emulator.commands import RESPONSE_PATH, SlashCommands
from sandbox.slack_emulator.delivery import Delivery, DeliveryMode, EventDelivery
from sandbox.slack_emulator.files import FILES_PATH, SIGN_IN_PATH, FileDownload, FileHost
from sandbox.slack_emulator.interactions import RESPONSE_PATH as ACTIONS_PATH
from sandbox.slack_emulator.interactions import Interaction, Interactions
from sandbox.slack_emulator.model import AppIdentity, Change, Ephemeral, User, Workspace
from sandbox.slack_emulator.people import PeopleActions
from sandbox.slack_emulator.rate_limits import (
    SLACK_BURSTS,
    SLACK_POST_BURST,
    SLACK_TIERS,
    RateLimiter,
)
from sandbox.slack_emulator.rendering import ShownMessage, show
from sandbox.slack_emulator.socket_mode import LINK_PATH, SocketAck, SocketHub
from sandbox.slack_emulator.web_api import ApiCall, WebApi

# What an app installed from chat-bridge's manifest holds (auth.test's x-oauth-scopes).
DEFAULT_SCOPES = frozenset(
    {"app_mentions:read", "assistant:write", "channels:history", "chat:write", "commands",
     "files:read", "groups:history", "im:history", "im:read", "im:write", "mpim:history",
     "reactions:read", "users:read"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class EmulatorStats:
    calls: dict[str, int]
    rate_limited: dict[str, int]  # 429 answers per method
    events_delivered: int
    retries: int
    acks: int
    events_dropped: int
    events_failed: int
    socket_connections: int  # open now
    socket_connects: int  # since start


class SlackEmulator(PeopleActions):
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        signing_secret: str = "test-secret",
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0APP",
        team_name: str = "Emulated Workspace",
        team_domain: str = "emulated",
        bot_name: str = "chat-bridge",
        clock: Callable[[], float] = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.identity = AppIdentity(
            bot_token=bot_token,
            app_token=app_token,
            signing_secret=signing_secret,
            team_id=team_id,
            team_name=team_name,
            team_domain=team_domain,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            app_id=app_id,
            bot_name=bot_name,
        )
        self.clock = clock
        self.workspace = Workspace(team_id, clock=clock)
        self.workspace.app_user_id = bot_user_id
        self.workspace.add_user(User(bot_user_id, bot_name, team_id, is_bot=True, bot_id=bot_id))
        self.limiter = RateLimiter(clock)
        self.sockets = SocketHub(app_id=app_id, clock=clock, on_ack=self._on_ack)
        self.events = EventDelivery(hub=self.sockets, signing_secret=signing_secret, clock=clock)
        self.commands = SlashCommands(self)
        self.file_host = FileHost(self)
        self.interactions = Interactions(self)
        # The bot token's scopes; tests remove some (files:read) to see what Slack does then.
        self.scopes: set[str] = set(DEFAULT_SCOPES)
        self._changed = asyncio.Event()
        self.workspace.subscribe(lambda _change: self.poke())
        self.events.on_change = self.poke
        self.sockets.on_change = self.poke
        self.calls: list[ApiCall] = []
        self.call_counts: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.dropped_answers: Counter[str] = Counter()  # see drop_connection_after
        # Behaviour switches; tests flip them freely.
        self.native_streaming = True
        # Slack documents no error for an app without the AI-app feature; a missing scope is the
        # likeliest answer, since enabling the feature is what grants assistant:write.
        self.streaming_disabled_error = "missing_scope"
        self.streaming_disabled_extra: dict[str, Any] = {
            "needed": "assistant:write",
            "provided": "chat:write,app_mentions:read,channels:history,im:history,users:read",
        }
        self.stream_ttl = 300.0
        self.max_text_chars = 40_000
        self.echo_own_messages = True  # Slack sends the app its own posts as message events
        app = web.Application()
        app.router.add_route("*", "/api/{method}", WebApi(self).handle)
        app.router.add_get(LINK_PATH, self.sockets.handle)
        app.router.add_post(RESPONSE_PATH, self.commands.handle_response_url)
        app.router.add_post(ACTIONS_PATH, self.interactions.handle_response_url)
        app.router.add_get(FILES_PATH, self.file_host.handle)
        app.router.add_get(SIGN_IN_PATH, self.file_host.sign_in_page)
        app.on_shutdown.append(self.sockets.close_all)
        self._server = LocalServer(app, host=host, port=port)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.events.start()
        await self._server.start()
        self.sockets.base_url = self._server.url.replace("http://", "ws://", 1)
        self.commands.base_url = self._server.url
        self.file_host.base_url = self._server.url
        self.interactions.base_url = self._server.url

    async def stop(self) -> None:
        await self.events.stop()
        await self.sockets.close_all()
        await self._server.stop()

    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def api_base_url(self) -> str:
        return f"{self._server.url}/api/"

    # ---- event delivery settings (owned by EventDelivery) -----------------------------------

    @property
    def delivery(self) -> DeliveryMode:
        return self.events.mode

    @delivery.setter
    def delivery(self, mode: DeliveryMode) -> None:
        if mode not in ("socket", "http"):
            raise ValueError(f"delivery must be 'socket' or 'http', not {mode!r}")
        self.events.mode = mode

    @property
    def event_url(self) -> str | None:
        return self.events.event_url

    @event_url.setter
    def event_url(self, url: str | None) -> None:
        self.events.event_url = url

    @property
    def interactivity_url(self) -> str | None:
        """Where clicks go over HTTP (the manifest's interactivity request_url); None: event_url,
        where Bolt takes them too."""
        return self.interactions.url

    @interactivity_url.setter
    def interactivity_url(self, url: str | None) -> None:
        self.interactions.url = url

    @property
    def ack_timeout(self) -> float:
        return self.events.ack_timeout

    @ack_timeout.setter
    def ack_timeout(self, seconds: float) -> None:
        self.events.ack_timeout = seconds

    @property
    def max_retries(self) -> int:
        return self.events.max_retries

    @max_retries.setter
    def max_retries(self, count: int) -> None:
        self.events.max_retries = count

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """Pauses before retries 1, 2, 3 (Slack's: 0 s, 60 s, 300 s)."""
        return self.events.retry_delays

    @retry_delays.setter
    def retry_delays(self, delays: tuple[float, ...]) -> None:
        self.events.retry_delays = tuple(delays)

    @property
    def status_ttl(self) -> float:
        return self.workspace.status_ttl

    @status_ttl.setter
    def status_ttl(self, seconds: float) -> None:
        self.workspace.status_ttl = seconds

    def disconnect_socket(self, reason: str = "refresh_requested") -> asyncio.Task[int]:
        """Send `{"type": "disconnect"}` to every open connection; await the task for the count."""
        return asyncio.create_task(self.sockets.disconnect(reason))

    # Bounded waits are the point of these two test helpers, hence the timeout parameters.
    async def wait_for_socket(self, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self.sockets.wait_for_connections(count)

    # ---- what the app did --------------------------------------------------------------------

    def thread(self, channel: str, thread_ts: str) -> list[ShownMessage]:
        return [show(m, self.workspace.users) for m in self.workspace.thread(channel, thread_ts)]

    def channel(self, channel: str) -> list[ShownMessage]:
        return [show(m, self.workspace.users) for m in self.workspace.top_level(channel)]

    def message(self, channel: str, ts: str) -> ShownMessage | None:
        found = self.workspace.find(channel, ts)
        return show(found, self.workspace.users) if found else None

    def ephemerals(
        self, user: str | None = None, channel: str | None = None, *, hidden: bool = False
    ) -> list[Ephemeral]:
        """What only `user` sees (in `channel`): chat.postEphemeral, slash command replies and
        Slack's own errors for a command, oldest first. `hidden=True` adds those Slack accepted
        but shows nowhere (sent into a thread that has no replies)."""
        return [
            shown
            for shown in self.workspace.ephemerals
            if user in (None, shown.user)
            and channel in (None, shown.channel)
            and (shown.visible or hidden)
        ]

    @property
    def clicks(self) -> list[Interaction]:
        return self.interactions.runs

    @property
    def file_downloads(self) -> list[FileDownload]:
        """Every request for a file's bytes, served or not."""
        return self.file_host.downloads

    def downloaded(self, file_id: str) -> bool:
        """Whether the file's bytes were ever served to the app."""
        return self.file_host.downloaded(file_id)

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    def status(self, channel: str, thread_ts: str) -> str:
        return self.workspace.status(channel, thread_ts)

    @property
    def titles(self) -> dict[tuple[str, str], str]:
        return self.workspace.titles

    @property
    def suggested_prompts(self) -> dict[tuple[str, str | None], dict[str, Any]]:
        return self.workspace.suggested_prompts

    @property
    def users(self) -> dict[str, User]:
        return self.workspace.users

    def add_user(self, user_id: str, name: str, is_bot: bool = False, real_name: str = "") -> User:
        return self.workspace.add_user(
            User(user_id, name, self.identity.team_id, is_bot=is_bot, real_name=real_name)
        )

    @property
    def deliveries(self) -> list[Delivery]:
        return self.events.deliveries

    @property
    def acks(self) -> dict[str, SocketAck]:
        return self.sockets.acks

    @property
    def stats(self) -> EmulatorStats:
        counted = self.events.stats
        return EmulatorStats(
            calls=dict(self.call_counts),
            rate_limited=dict(self.rate_limited),
            events_delivered=counted.events_delivered,
            retries=counted.retries,
            acks=counted.acks,
            events_dropped=counted.events_dropped,
            events_failed=counted.events_failed,
            socket_connections=len(self.sockets.open_connections()),
            socket_connects=self.sockets.connects,
        )

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        return self.workspace.subscribe(listener)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Re-check `predicate()` after every change (message, call, delivery, ack) until truthy.

        Returns its value; raises TimeoutError after `timeout` seconds. A slow re-check also runs
        for conditions no change announces, such as a status expiring with time.
        """
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
        return value

    def poke(self) -> None:
        """Wake `wait_for` callers: something observable changed."""
        self._changed.set()

    # ---- knobs -------------------------------------------------------------------------------

    def rate_limit(
        self, method: str, per_minute: int | None, *, per_channel: bool = False, burst: int = 0
    ) -> None:
        """`per_minute` calls in any minute; with `burst`, a bucket of that many calls refilled at
        the per-minute pace instead (1: strictly evenly spaced)."""
        self.limiter.limit(method, per_minute, per_channel=per_channel, burst=burst)

    def limit_posts(self, burst: int = SLACK_POST_BURST) -> None:
        """chat.postMessage in each channel: one a second after a burst of `burst` (Slack's "short
        bursts >1 allowed"); `burst=1`: strictly one a second, a 429 for anything closer."""
        self.limiter.limit("chat.postMessage", 60, per_channel=True, burst=burst)

    def apply_slack_tiers(self) -> None:
        """Limit every method like a real workspace would (see rate_limits.SLACK_TIERS and
        SLACK_BURSTS)."""
        for method, (per_minute, per_channel) in SLACK_TIERS.items():
            burst = SLACK_BURSTS.get(method, 0)
            self.limiter.limit(method, per_minute, per_channel=per_channel, burst=burst)

    def inject_429(self, method: str, count: int, retry_after: int = 1) -> None:
        self.limiter.inject(method, count, retry_after)

    def drop_connection_after(self, method: str, count: int = 1) -> None:
        """Carry out the next `count` calls to `method`, then close each connection unanswered,
        as when the network fails after Slack acted: slack_sdk raises ServerDisconnectedError and
        the call is recorded with `http_status` 0."""
        self.dropped_answers[method] += count

    def expire_stream(self, channel: str, ts: str) -> None:
        message = self._message(channel, ts)
        message.streaming = False
        self.workspace.notify(Change("updated", channel, ts, message))

    # ---- internals ---------------------------------------------------------------------------

    def echo(self, event: dict[str, Any]) -> None:
        """Tell the app about its own post in the background, as Slack does."""
        if self.echo_own_messages:
            self.events.spawn(events.event_callback(self.identity, event))

    def _on_ack(self, ack: SocketAck) -> None:
        self.events.on_ack(ack)
        self.commands.on_ack(ack)
        self.interactions.on_ack(ack)
