"""`SlackAdapter`: the Bolt app, its ingress (Socket Mode or HTTP) and the routing from Slack
events to the core's intake, and from the admin slash command to the core's admin commands;
also people's edits and deletions (to the core's `UserEdits`), the Stop and feedback buttons and
🛑 reactions (to `ReplyControls`), and the files of their messages (`files`, a `FileSource`).
A service of the lifecycle: `start()` returns once connected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import ReplaySafeRetryHandler, SlackCallFailed
from adapters.slack.app_views import AppViews
from adapters.slack.changes import MessageChange, is_change, parse_change
from adapters.slack.controls import (
    FEEDBACK_ACTION,
    STOP_ACTION,
    ControlRequest,
    ReplyButtons,
    SlackControls,
)
from adapters.slack.events import (
    PLATFORM,
    BotIdentity,
    CommandCall,
    ReplyPlace,
    SlackMessage,
    parse_command,
    parse_message,
)
from adapters.slack.files import MAX_FILES, SlackFiles, look_up_files
from adapters.slack.formatting import escaped_text
from adapters.slack.handoff import from_payload, to_payload
from adapters.slack.history import thread_history
from adapters.slack.ingress import HttpIngress, Identity, Ingress, SocketModeIngress
from adapters.slack.surface import SlackReplySurface, StreamingSupport
from bridge.admin import AdminCommands
from bridge.cluster.handoffs import NotReady
from bridge.cluster.router import lease_name
from bridge.config import SlackSettings
from bridge.controls import ReplyControls
from bridge.domain import ChatKey, Role, StoredMessage
from bridge.edits import UserEdits
from bridge.intake import Handoff, Intake, MayRead
from bridge.lifecycle import AccessRevoked, Lifecycle
from bridge.policy.effective import EffectiveSettings
from bridge.policy.origin import Origin
from bridge.policy.settings import NativeStreaming
from bridge.ports import ChatStore, MessageLimit, PlatformError, RateLimited
from bridge.responder import Responder

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 10.0
COMMAND_FAILED = "The command failed; the bridge's log says why."
RESET_IN_A_CHANNEL = (
    "Each thread is its own conversation: start a new thread for a fresh one. (Here, reset "
    "would clear every thread of the channel; only the bridge's admins may do that.)"
)
# auth.test errors that no retry fixes: the token is wrong, revoked, or the app is gone.
ACCESS_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
     "team_access_not_granted", "app_uninstalled", "no_permission"}
)  # fmt: skip


class SlackAdapter:
    """Hands the core every message it may answer (mentions, DMs, follow-ups in threads the bot
    takes part in, and other channel messages for channels whose trigger is "always"), and runs
    the admin slash command."""

    def __init__(
        self,
        settings: SlackSettings,
        *,
        responder: Responder,
        store: ChatStore,
        lifecycle: Lifecycle,
        intake: Intake,
        commands: AdminCommands,
        controls: ReplyControls | None = None,
        edits: UserEdits | None = None,
    ) -> None:
        """`controls`: the Stop and feedback buttons and 🛑 (None: off); `edits`: people's edits
        and deletions reach the stored history (None: ignored)."""
        if settings.bot_token is None:
            raise ValueError("slack.bot_token is required")
        if settings.mode == "socket" and settings.app_token is None:
            raise ValueError('slack.app_token is required when slack.mode is "socket"')
        if settings.mode == "http" and settings.signing_secret is None:
            raise ValueError('slack.signing_secret is required when slack.mode is "http"')
        self.name = "slack"
        self.platform = PLATFORM
        self._settings = settings
        self._responder = responder
        self._store = store
        self._lifecycle = lifecycle
        self._intake = intake
        self._commands = commands
        self._client = AsyncWebClient(
            base_url=settings.api_base_url,
            # Not the SDK's default: that one re-sends a post whose connection broke, doubling it.
            retry_handlers=[ReplaySafeRetryHandler()],
        )
        self._identity = Identity(self._client)
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else ""
        self._app = AsyncApp(
            name="chat-bridge",
            client=self._client,
            # Passed even when empty: Bolt reads SLACK_SIGNING_SECRET from the environment if None.
            signing_secret=secret,
            # Socket Mode has no signature to check; over HTTP every request must carry one.
            request_verification_enabled=settings.mode == "http",
            # Who the bot is, asked of Slack once (see Identity), not per event.
            authorize=self._identity.authorize(),
        )
        # The token after Bolt is built: given a client with one, Bolt would warn that `authorize`
        # makes it ignore the token. Each request's client gets it from `authorize`.
        self._client.token = settings.bot_token.get_secret_value()
        # The core downloads the files of admitted messages through this (`FileSource`).
        self.files = SlackFiles(settings.bot_token.get_secret_value(), settings.api_base_url)
        self._controls = None if controls is None else SlackControls(controls, self._client)
        self._buttons = ReplyButtons.of(controls)
        self._edits = edits
        self._views = AppViews(settings, self._client, store)
        self._register_listeners()
        self._ingress: Ingress
        if settings.mode == "socket":
            assert settings.app_token is not None
            app_token = settings.app_token.get_secret_value()
            self._ingress = SocketModeIngress(self._app, app_token, self._client)
        else:
            self._ingress = HttpIngress(self._app, settings.http_host, settings.http_port)
        self._streaming = StreamingSupport()
        self._placeholder = responder.settings.style.placeholder
        self._bot: BotIdentity | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._imports: dict[ChatKey, asyncio.Future[None]] = {}

    @property
    def connected(self) -> bool:
        """Events can reach the bridge (for /healthz and the ops metrics)."""
        return self._ingress.connected

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # One HTTP session for every Web API call instead of a new connection per call.
        self._client.session = aiohttp.ClientSession()
        try:
            try:
                auth = await self._identity.result()
            except SlackCallFailed as exc:
                raise _refused(exc, "slack.bot_token (the Bot User OAuth Token)") from None
            self._bot = BotIdentity(str(auth.bot_user_id), str(auth.bot_id), str(auth.team_id))
            log.info("slack: signed in as %s in workspace %s", self._bot.user_id, self._bot.team_id)
            try:
                await self._ingress.start()
            except SlackCallFailed as exc:
                raise _refused(exc, "slack.app_token (an App-Level Token)") from None
        except BaseException:
            await self._close_session()  # the ingress cleaned up after itself
            raise

    async def stop_intake(self) -> None:
        """Take no more events (the bridge drains): Socket Mode disconnects, so Slack delivers to
        another connection or retries later; over HTTP every request is answered 503 without
        being acknowledged, so Slack retries it against a running instance."""
        await self._ingress.stop_intake()

    async def stop(self) -> None:
        await self._ingress.stop()
        # The responder stops first and finishes its replies; what is left here is quick.
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.files.stop()
        await self._close_session()

    async def drain(self) -> None:
        """Wait until every event taken so far is handled (tests, and before a planned stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _close_session(self) -> None:
        session, self._client.session = self._client.session, None
        if session is not None:
            await session.close()

    # --- listeners ---------------------------------------------------------------------------

    def _register_listeners(self) -> None:
        app = self._app
        app.event("app_mention")(self._on_message)
        app.event("message")(self._on_message)
        app.event("assistant_thread_started")(self._on_assistant_thread)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("reaction_added")(self._on_reaction)
        app.event("agent_session_stopped")(self._on_session_stopped)
        app.event("app_uninstalled")(self._on_uninstalled)
        app.event("tokens_revoked")(self._on_tokens_revoked)
        app.command(self._settings.command)(self._on_command)
        # Registered even when the controls are off: a click on an older message is still
        # acknowledged (Slack shows the clicker an error otherwise).
        app.action(STOP_ACTION)(self._on_click)
        app.action(FEEDBACK_ACTION)(self._on_click)
        # Last: every other event is acknowledged too, so Bolt never answers 404 (and Slack never
        # retries an event nobody here wants).
        app.event(re.compile(".*"))(self._on_other_event)

    async def _on_message(self, body: dict[str, Any]) -> None:
        assert self._bot is not None, "events arrive only after start()"
        if is_change(body):
            change = parse_change(body, self._bot) if self._edits is not None else None
            if change is not None:
                self._spawn(self._follow_change(change))
            return  # an edit is never a new message to answer
        message = parse_message(body, self._bot, ignore_other_bots=self._settings.ignore_other_bots)
        if message is not None:
            self._spawn(self._answer(message))

    async def _follow_change(self, change: MessageChange) -> None:
        assert self._edits is not None
        if change.text is None:
            await self._edits.deleted(change.chat, change.ts)
        else:
            await self._edits.edited(change.chat, change.ts, change.text)

    async def _on_click(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # at once: Slack shows the clicker an error after 3 s
        if self._controls is not None:
            self._spawn(self._controls.handle(self._controls.click(body)))

    async def _on_reaction(self, body: dict[str, Any]) -> None:
        if self._controls is not None and self._bot is not None:
            self._spawn(self._controls.handle(self._controls.reaction(body, self._bot.user_id)))

    async def _on_session_stopped(self, body: dict[str, Any]) -> None:
        """Slack's own Stop button on an agent session (it stopped the streams already)."""
        if self._controls is None:
            return
        found = self._controls.session_stop(body)
        if found is not None:
            self._spawn(self._stop_session(*found))

    async def _stop_session(self, request: ControlRequest, message_ids: list[str]) -> None:
        assert self._controls is not None
        await self._controls.stop(request, message_ids)

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        self._spawn(self._views.home_opened(body))

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        # Acknowledged before anything else: Slack shows the person an error after 3 s, and
        # the command's work (the database) may take longer. The answer follows via response_url.
        await ack()
        call = parse_command(body)
        if call is not None:
            self._spawn(self._run_command(call, respond))

    async def _on_assistant_thread(self, body: dict[str, Any]) -> None:
        self._spawn(self._views.thread_started(body))

    async def _on_uninstalled(self, body: dict[str, Any]) -> None:
        self._lifecycle.fail(
            AccessRevoked("slack: the app was uninstalled from the workspace; reinstall it")
        )

    async def _on_tokens_revoked(self, body: dict[str, Any]) -> None:
        tokens = (body.get("event") or {}).get("tokens") or {}
        if self._bot is not None and self._bot.user_id in (tokens.get("bot") or ()):
            self._lifecycle.fail(
                AccessRevoked("slack: the bot token was revoked; reinstall the app for a new one")
            )

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        event_type = str((body.get("event") or {}).get("type"))[:64]
        log.debug("slack: no handling for %s events", event_type)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Bolt has acknowledged the event already; the reply runs in a task we own and await.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack: handling an event failed", exc_info=task.exception())

    # --- routing -----------------------------------------------------------------------------

    async def _answer(self, message: SlackMessage) -> None:
        where = f"{message.channel}/{message.thread_ts}"
        try:
            if message.files_to_look_up:
                message = await self._look_up_files(message)
            await self._route(message, handoff=functools.partial(to_payload, message))
        except Exception:
            log.exception("slack: answering message %s in %s failed", message.ts, where)

    async def _look_up_files(self, message: SlackMessage) -> SlackMessage:
        """Slack Connect announces files by id: files.info names them (metadata, no download),
        so the core can decide on them like on any other file."""
        room = MAX_FILES - len(message.inbound.attachments)
        found = await look_up_files(
            self._client, message.files_to_look_up[:room], f"{message.channel}/{message.ts}"
        )
        attachments = (*message.inbound.attachments, *found)
        inbound = dataclasses.replace(message.inbound, attachments=attachments)
        return dataclasses.replace(message, inbound=inbound, files_to_look_up=())

    async def _route(self, message: SlackMessage, *, handoff: Handoff | None) -> None:
        """Hand the message to the core with the facts its policy decides on. Whether the bot
        takes part in a thread costs a read, so only messages in threads pay it."""
        where = f"{message.channel}/{message.thread_ts}"
        if self._controls is not None:  # a 🛑 on the question finds its thread
            self._controls.threads.remember(message.channel, message.ts, message.thread_ts)
        addressed = message.is_dm or message.mentions_bot
        chat = None
        if message.in_existing_thread:
            chat = await self._store.get_chat(message.inbound.chat_key)
            addressed = addressed or chat is not None
        origin = Origin(
            PLATFORM,
            message.inbound.author_id,
            workspace=message.team,
            channel=message.channel,
            thread=where if message.in_existing_thread else "",
            is_dm=message.is_dm,
            addressed=addressed,
        )
        # Called into the middle of a thread: its earlier messages, once the core admits it.
        prepare = None
        if message.in_existing_thread and chat is None:
            prepare = functools.partial(self._import_thread, message)
        await self._intake.receive(
            message.inbound,
            origin,
            functools.partial(self._surface, message),
            prepare=prepare,
            handoff=handoff,
        )

    # --- several instances ([cluster]) ---------------------------------------------------------

    def leases_served(self) -> list[str]:
        """The workspace this app is installed in, once connected."""
        return [] if self._bot is None else [lease_name(PLATFORM, self._bot.team_id)]

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        """A message another instance received for this instance's workspace: answered here
        (not handed on again, even if the lease moved meanwhile: its stored claim keeps it
        from being answered twice). Failures reach the cluster's consumer, which retries."""
        if self._bot is None:
            raise NotReady("slack is not connected")
        await self._route(from_payload(payload), handoff=None)

    async def _run_command(self, call: CommandCall, respond: AsyncRespond) -> None:
        where = f"{call.origin.channel} ({call.name})"
        try:
            if (
                call.name == "reset"
                and not call.origin.is_dm
                and not self._commands.is_admin(call.origin)
            ):
                # Run in a channel, reset would clear every thread there, other people's too.
                answer = RESET_IN_A_CHANNEL
            else:
                answer = await self._commands.run(call.origin, call.name, call.argument)
        except Exception:
            log.exception("slack: the command in %s failed", where)
            answer = COMMAND_FAILED
        try:
            sent = await respond(text=escaped_text(answer), response_type="ephemeral")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("slack: the answer to the command in %s was not delivered: %r", where, exc)
            return
        if sent.status_code != 200:
            log.warning("slack: the answer to the command in %s was refused: %s %s", where,
                        sent.status_code, str(sent.body)[:200])  # fmt: skip

    async def _import_thread(self, message: SlackMessage, may_read: MayRead) -> None:
        """Called into the middle of a thread: its earlier messages become the context first.

        A mention arrives twice (app_mention and message): both wait for one read of the thread.
        """
        key = message.inbound.chat_key
        reading = self._imports.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read_thread(message, may_read))
            self._imports[key] = reading
            reading.add_done_callback(lambda _: self._imports.pop(key, None))
        await asyncio.shield(reading)

    async def _read_thread(self, message: SlackMessage, may_read: MayRead) -> None:
        assert self._bot is not None
        where = f"{message.channel}/{message.thread_ts}"
        try:
            entries = await thread_history(
                self._client,
                channel=message.channel,
                thread_ts=message.thread_ts,
                before_ts=message.ts,
                bot=self._bot,
            )
        except (RateLimited, PlatformError) as exc:
            log.warning("slack: earlier messages of %s not imported (%s)", where, exc)
            return
        # Messages of people [access] refuses are neither stored nor sent to the model.
        entries = [
            e for e in entries
            if e.role is not Role.USER or e.author_id is None or may_read(e.author_id)
        ]  # fmt: skip
        if entries:
            chat = await self._store.get_or_create_chat(message.inbound.chat_key)
            imported = await self._store.import_history(chat, entries)
            log.info("slack: imported %d earlier messages of %s", imported, where)

    def _surface(self, message: SlackMessage, effective: EffectiveSettings) -> SlackReplySurface:
        return self._surface_at(message.reply_place, effective.native_streaming)

    def _surface_at(self, place: ReplyPlace, native: NativeStreaming) -> SlackReplySurface:
        on_posted = None
        if self._controls is not None:  # a 🛑 on the reply finds its thread
            threads = self._controls.threads
            on_posted = functools.partial(
                threads.remember, place.channel, thread_ts=place.thread_ts
            )
        return SlackReplySurface(
            self._client,
            self._settings,
            place,
            self._streaming,
            native_streaming=native,
            placeholder=self._placeholder,
            scheduler=self._responder.scheduler,
            buttons=self._buttons,
            on_posted=on_posted,
        )

    def surface_for(
        self,
        chat: ChatKey,
        user_message: StoredMessage,
        *,
        adopt: Sequence[str] = (),
        limit: MessageLimit | None = None,
    ) -> SlackReplySurface | None:
        """A reply to a stored message (crash recovery), in its thread, to its author."""
        if self._bot is None:
            return None
        place = ReplyPlace(
            team=chat.workspace,
            channel=chat.channel,
            thread_ts=chat.thread,
            recipient_user=user_message.author_id or "",
            recipient_team=chat.workspace,
            is_dm=chat.channel.startswith("D"),
        )
        # The reply's own setting is not stored; a recovered reply that posts afresh uses the
        # adapter's default (an adopted one goes on with chat.update anyway).
        surface = self._surface_at(place, self._settings.native_streaming)
        if adopt:
            surface.adopt(adopt, limit)
        return surface


def _refused(exc: SlackCallFailed, token: str) -> Exception:
    """A token Slack will never accept is the admin's to fix: AccessRevoked (exit code 78)."""
    if exc.code in ACCESS_ERRORS:
        return AccessRevoked(f"slack: {exc}: check {token}, or reinstall the app")
    return exc
