"""The core's ReplySurface on Discord: one reply to one user message, in its channel or thread.

The reply is a Discord reply to the user's message (a placeholder, then edits); continuations are
plain messages in the same channel. With auto_thread the public thread is opened here, on the first
write, so only a claimed (never a replayed) event opens one. Every write pings no one. While the
reply streams its message carries a Stop button; the last write of each message takes it away,
and the reply's last message gets 👍/👎 under an answer (`adapters.discord.components`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import aiohttp
import discord

from adapters.discord.components import ButtonsWanted, Shown, view_of
from adapters.discord.indicators import TypingIndicators
from adapters.discord.ratelimits import (
    WINDOW_ALLOWANCE,
    RateHeaderCapture,
    SeenHeaders,
    WriteRefused,
    scheduled_limit,
)
from bridge.ports import (
    MessageLimit,
    PermissionDenied,
    PlatformError,
    PlatformUnavailable,
    PostedMessage,
    RateBucket,
    RateLimited,
    RateObservation,
    ReplyEnding,
    ToolActivity,
)
from bridge.scheduler import EditScheduler, Urgency

if TYPE_CHECKING:
    from discord.abc import MessageableChannel

log = logging.getLogger(__name__)

T = TypeVar("T")

MESSAGE_LIMIT = MessageLimit(2000)
# What bots observe for message create and edit per channel; the headers correct it at run time.
GUESSED_LIMIT, GUESSED_PERIOD = 5, 5.0
_GUESS = (scheduled_limit(GUESSED_LIMIT), GUESSED_PERIOD)
# Discord's global limit: 50 requests per second per bot, over every route; no header announces
# it before a global 429. The scheduler's share leaves 5 of them to requests it does not see (login,
# command sync, threads, titles, interaction responses), and counts its window from its grants, so
# the window is longer than Discord's by the spread of grant-to-arrival delays (WINDOW_ALLOWANCE).
# A bot sharded over several processes divides it among them (`ShardPlan.share_of`).
GLOBAL_LIMIT, GLOBAL_PERIOD = 45, 1.0 + WINDOW_ALLOWANCE


def global_bucket(bot_user_id: int, limit: int = GLOBAL_LIMIT) -> RateBucket:
    """The bot's global budget (this process's share of it), which every write in every
    channel also draws from."""
    return RateBucket(f"discord:global:{bot_user_id}", limit, GLOBAL_PERIOD)


NO_PINGS = discord.AllowedMentions.none()
THREAD_ARCHIVE_MINUTES: Literal[1440] = 1440
THREAD_EXISTS = 160004  # "A thread has already been created for this message"


def post_nonce(reply_key: str, response_number: int, ordinal: int) -> str:
    """The nonce of one post of a reply: the same for every attempt at that post, different for
    every other post (24 hex characters; Discord takes at most 25).

    Sent with enforce_nonce, so Discord answers a repeated create with the message the first one
    made. discord.py already sends a random nonce per `send` call, which covers its own retries of
    a 5xx within the call; this one also covers a new call for the same post, after a call that
    failed without telling whether the message was made (a timeout, a 503, retries run out).
    """
    seed = f"{reply_key}:{response_number}:{ordinal}".encode()
    return hashlib.blake2b(seed, digest_size=12).hexdigest()


def _posted_content(posted: object) -> str | None:
    if isinstance(posted, discord.Message):
        return posted.content
    content = posted.get("content") if isinstance(posted, dict) else None
    return content if isinstance(content, str) else None


def _posted_id(body: object) -> str:
    if isinstance(body, dict) and "id" in body:
        return str(body["id"])
    raise PlatformError(f"discord: a posted message came back without an id: {body!r:.80}")


class DiscordReplySurface:
    """Made per inbound message by the adapter; the Responder drives it."""

    def __init__(
        self,
        source: discord.Message | discord.PartialMessage,
        *,
        client: discord.Client,
        bot_user_id: int,
        capture: RateHeaderCapture,
        typing: TypingIndicators,
        scheduler: EditScheduler,
        open_thread: bool = False,
        thread_name: str = "",
        global_budget: RateBucket | None = None,
        buttons: ButtonsWanted | None = None,
    ) -> None:
        """`global_budget`: the process's share of the bot's global limit (all of it if None).
        `buttons`: the Stop and feedback buttons replies show (None: no buttons at all)."""
        self._source = source
        self._client = client
        self._bot_user_id = bot_user_id
        self._capture = capture
        self._typing = typing
        self._scheduler = scheduler
        self._global = global_budget or global_bucket(bot_user_id)
        self._thread_pending = open_thread
        self._thread_name = thread_name
        self._thread_lock = asyncio.Lock()
        self._channel: MessageableChannel = source.channel
        # With auto_thread the thread will have the message's id; buckets are keyed by it now.
        self._channel_id = source.id if open_thread else source.channel.id
        self._typing_in: int | None = None
        self._posts: Counter[int] = Counter()
        self._shown: dict[str, str] = {}  # message id -> the text it was last given
        self._attempted: set[tuple[int, int]] = set()  # (response number, ordinal) of posts
        self._notices = 0  # notices posted, for their nonces
        # The nonces' seed: the message answered, and a part of this surface's own. A surface
        # made later for the same message (crash recovery finishing a reply) counts its posts
        # from zero again, and must not get the earlier surface's messages back for them.
        self.reply_key = f"{source.id}:{secrets.token_hex(8)}"
        # Keyed by task: the writer reads the observation in the task that made the write, and
        # the writers of several choices share this surface.
        self._seen: dict[asyncio.Task[object] | None, SeenHeaders] = {}
        # discord.py calls still sleeping out a bucket's window after their response was used.
        self._held: set[asyncio.Task[Any]] = set()
        self._buttons = buttons if buttons is not None and buttons.any else None
        self._ending: ReplyEnding | None = None
        # message id -> the buttons it carries; absent: not known (a message of a reply adopted
        # from a process that died), so its next write sets them whatever they are.
        self._carries: dict[str, Shown] = {}

    # --- the ReplySurface protocol -------------------------------------------------------------

    @property
    def message_limit(self) -> MessageLimit:
        return MESSAGE_LIMIT

    @property
    def shows_own_progress(self) -> bool:
        return False

    @property
    def channel_id(self) -> int:
        return self._channel_id

    def post_bucket(self) -> RateBucket:
        return RateBucket(f"discord:post:{self._channel_id}", *_GUESS, within=self._global)

    def edit_bucket(self) -> RateBucket:
        return RateBucket(f"discord:edit:{self._channel_id}", *_GUESS, within=self._global)

    async def start_typing(self, status: str = "") -> None:
        # Discord's typing indicator has no text: a status shows in the placeholder instead.
        channel = await self._destination()
        if self._typing_in is None:
            self._typing_in = channel.id

            async def send_typing() -> None:
                # Cosmetic: it waits for spare global budget, so twenty replies starting together
                # show their first text before their typing indicators are all sent.
                await self._scheduler.acquire(
                    self._global, Urgency.BACKGROUND, self._scheduler.now()
                )
                await channel.typing()

            self._typing.start(channel.id, send_typing)

    async def stop_typing(self) -> None:
        if self._typing_in is not None:
            self._typing.stop(self._typing_in)
            self._typing_in = None

    async def post(
        self, text: str, *, response_number: int, ends_reply: bool = False
    ) -> PostedMessage:
        channel = await self._destination()
        # Counted only once a post succeeded, so a post tried again gets the same nonce.
        ordinal = self._posts[response_number]
        nonce = post_nonce(self.reply_key, response_number, ordinal)
        repeated = (response_number, ordinal) in self._attempted
        self._attempted.add((response_number, ordinal))
        # Posted as the reply's end, it carries the end's buttons at once.
        carries = self._wanted(final=ends_reply, ends_reply=ends_reply)
        view = view_of(carries) if self._buttons is not None else None
        # The first message of each choice replies to the user's message.
        posted = await self._create(channel, text, nonce=nonce, reply=ordinal == 0, view=view)
        message_id = str(posted.id) if isinstance(posted, discord.Message) else _posted_id(posted)
        if self._buttons is not None and not repeated:
            self._carries[message_id] = carries
        made = _posted_content(posted)
        if repeated and made is not None and made != text:
            # An attempt that seemed to fail made the message after all, and this one got it
            # back with the text of then; the writer believes it shows `text`.
            self._shown[message_id] = made
            await self._extra_edit(PostedMessage(message_id), text, Urgency.FIRST_TEXT)
        self._posts[response_number] += 1
        self._shown[message_id] = text
        return PostedMessage(message_id)

    async def _extra_edit(self, message: PostedMessage, text: str, urgency: Urgency) -> None:
        """One edit besides the writer's, scheduled like theirs (not final: after the end, it
        takes the buttons away). The post's headers stay the ones the writer reads afterwards
        (for the post bucket); a 429 blocks the edit bucket here and reaches the writer as the
        post's, which it tries again (and gets the message again)."""
        task = asyncio.current_task()
        seen = self._seen.get(task)
        bucket = self.edit_bucket()
        await self._scheduler.acquire(bucket, urgency, self._scheduler.now())
        try:
            await self.update(message, text, final=False)
        except RateLimited as limited:
            self._scheduler.penalize(bucket, limited.retry_after)
            raise
        finally:
            if seen is None:
                self._seen.pop(task, None)
            else:
                self._seen[task] = seen

    async def update(
        self, message: PostedMessage, text: str, *, final: bool, ends_reply: bool = False
    ) -> None:
        wanted = self._wanted(final=final, ends_reply=ends_reply)
        buttons_right = self._buttons is None or self._carries.get(message.id) is wanted
        if self._shown.get(message.id) == text and buttons_right:
            # The writer marks each message final once; Discord has no stream to end, so an edit
            # to the same text would only spend the channel's bucket.
            return
        channel = await self._destination()
        partial = discord.PartialMessage(channel=channel, id=int(message.id))
        # allowed_mentions on every edit: without it Discord parses the new text with defaults.
        # Components only when they change: an edit without them keeps the message's own.
        if buttons_right:
            await self._write(lambda: partial.edit(content=text, allowed_mentions=NO_PINGS))
        else:
            view = view_of(wanted)
            await self._write(
                lambda: partial.edit(content=text, allowed_mentions=NO_PINGS, view=view)
            )
            self._carries[message.id] = wanted
        self._shown[message.id] = text

    def _wanted(self, *, final: bool, ends_reply: bool) -> Shown:
        """The buttons a write gives its message: Stop while the reply streams; once it ended,
        the end's buttons on the reply's last write, none on its other messages."""
        if self._buttons is None:
            return Shown.NONE
        if self._ending is None:
            # A message made final before the end is full: the reply goes on in the next one.
            return Shown.NONE if final else self._buttons.while_streaming()
        return self._buttons.at_end(self._ending) if ends_reply else Shown.NONE

    async def set_title(self, title: str) -> None:
        """Name the thread after the conversation, only if the bot opened it (not a user's)."""
        channel = await self._destination()
        name = title.strip()[:100]
        if isinstance(channel, discord.Thread) and channel.owner_id == self._bot_user_id and name:
            await channel.edit(name=name)

    async def notify(self, text: str) -> None:
        """A notice instead of an answer (a limit, a refusal): a reply to the user's message in
        its channel that pings no one. It never opens the auto_thread, which is for answers."""
        nonce = post_nonce(f"{self.reply_key}:notice", 0, self._notices)
        await self._create(self._channel, text, nonce=nonce, reply=True)
        self._notices += 1

    @property
    def controls_shown(self) -> bool:
        return self._buttons is not None

    def end_reply(self, ending: ReplyEnding) -> None:
        self._ending = ending

    def show_tools(self, activity: Sequence[ToolActivity]) -> bool:
        return False  # Discord has no task cards: the responder shows a status line

    def take_rate_observation(self) -> RateObservation | None:
        seen = self._seen.pop(asyncio.current_task(), None)
        return None if seen is None else seen.observation(self._capture.now())

    # --- writes ------------------------------------------------------------------------------

    async def _create(
        self,
        channel: MessageableChannel,
        text: str,
        *,
        nonce: str,
        reply: bool,
        view: discord.ui.View | None = None,
    ) -> object:
        """A new message of ours, pinging no one; with `reply`, a reply to the user's message
        if it is in that channel (a reply cannot point into another, e.g. a thread opened from
        it). `view`: its buttons."""
        options: dict[str, Any] = {"allowed_mentions": NO_PINGS, "nonce": nonce}
        if view is not None:
            options["view"] = view
        if reply and channel.id == self._source.channel.id:
            reference = self._source.to_reference(fail_if_not_exists=False)
            return await self._write(
                lambda: channel.send(text, reference=reference, mention_author=False, **options),
                wants_body=True,
            )
        return await self._write(lambda: channel.send(text, **options), wants_body=True)

    async def _write(
        self, call: Callable[[], Awaitable[T]], *, wants_body: bool = False
    ) -> T | object:
        """One write of ours, its headers captured and its failures in the core's terms.

        Returns the call's result, or (when discord.py holds the caller after a successful
        response until the bucket's window resets) the response's JSON body at once: the text is
        on screen, and the scheduler already knows the bucket is empty.
        """
        with self._capture.capturing() as slot:
            slot.wants_body = wants_body
            try:
                return await self._until_response(call, slot)
            except WriteRefused as refused:
                raise RateLimited(refused.retry_after, "(discord)") from None
            except discord.RateLimited as limited:  # discord.py refused to wait that long
                raise RateLimited(limited.retry_after, "(discord)") from None
            except discord.HTTPException as exc:
                if exc.status == 429:
                    raise RateLimited(_retry_after(exc), "(discord)") from None
                detail = f"discord {exc.status} ({exc.code}): {exc.text}"
                if exc.status >= 500:  # discord.py already retried these a few times
                    raise PlatformUnavailable(detail) from exc
                if exc.status == 403:  # 50001 Missing Access, 50013 Missing Permissions...
                    raise PermissionDenied(detail) from exc
                raise PlatformError(detail) from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                detail = f"discord unreachable: {type(exc).__name__}: {exc}"
                raise PlatformUnavailable(detail) from exc
            finally:
                if slot.headers is not None:
                    self._seen[asyncio.current_task()] = slot.headers

    async def _until_response(self, call: Callable[[], Awaitable[T]], slot: Any) -> T | object:
        task = asyncio.ensure_future(call())  # copies the context, so the capture slot goes along
        arrived = asyncio.ensure_future(slot.arrived.wait())
        try:
            await asyncio.wait({task, arrived}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()
        if task.done():
            return task.result()
        self._held.add(task)
        task.add_done_callback(self._release_held)
        body: object = slot.body
        return body

    def _release_held(self, task: asyncio.Task[Any]) -> None:
        self._held.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("discord: a write held for its bucket failed late: %s", task.exception())

    async def _destination(self) -> MessageableChannel:
        """Where the reply goes; with auto_thread, the thread, opened on first use."""
        if not self._thread_pending:
            return self._channel
        async with self._thread_lock:
            if self._thread_pending:
                self._channel = await self._open_thread()
                self._channel_id = self._channel.id
                self._thread_pending = False
        return self._channel

    async def _open_thread(self) -> MessageableChannel:
        name = self._thread_name.strip()[:100] or "Conversation"
        try:
            return await self._source.create_thread(
                name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except discord.HTTPException as exc:
            if exc.code == THREAD_EXISTS:
                # Opened before (by a user, or by us before a restart): it has the message's id.
                existing = await self._existing_thread()
                if existing is not None:
                    return existing
            log.warning(
                "could not open a thread for message %s (%s); replying in the channel",
                self._source.id,
                exc,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("could not open a thread for message %s (%s)", self._source.id, exc)
        # The Chat stays keyed by the message id, so later mentions start fresh: degraded, not lost.
        return self._source.channel

    async def _existing_thread(self) -> discord.Thread | None:
        guild = self._source.guild
        thread = guild.get_thread(self._source.id) if guild is not None else None
        if thread is not None:
            return thread
        try:
            fetched = await self._client.fetch_channel(self._source.id)
        except discord.HTTPException:
            return None
        return fetched if isinstance(fetched, discord.Thread) else None


def _retry_after(exc: discord.HTTPException) -> float:
    try:
        return float(exc.response.headers.get("Retry-After", 1.0))
    except (AttributeError, TypeError, ValueError):
        return 1.0
