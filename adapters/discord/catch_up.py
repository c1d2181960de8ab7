"""Catch-up on start: the mentions of the last `catch_up_minutes` that came while no process of the
bot listened, read from the history of this process's channels and handed to the adapter's live
path, oldest first. The policy, the store's claim of each message and the responder then decide
as for any message: one that an instance answered or stored already is not answered again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import discord

from adapters.discord.events import facts_of
from adapters.discord.ratelimits import RateHeaderCapture, WriteRefused
from bridge.ports import RateBucket
from bridge.scheduler import EditScheduler, Urgency

log = logging.getLogger(__name__)

PAGE = 100  # the most messages one history request returns
READERS = 4  # channels read at once; the scheduler's buckets pace their requests
TRIES = 5  # attempts per request, each after the 429's Retry-After
# Discord documents no numbers for history and member reads; the first response's headers
# correct these guesses.
READ_GUESS = (5, 5.0)
MEMBER_GUESS = (5, 5.0)
# Reads wait behind new replies' first texts and finished replies' final texts.
URGENCY = Urgency.PROGRESS

Readable = discord.TextChannel | discord.Thread
# Takes a message as the gateway would have delivered it; what it returns (if anything) says,
# once awaited, whether the core answered it.
Hand = Callable[[discord.Message], Awaitable[bool] | None]
T = TypeVar("T")


class GaveUp(Exception):
    """A read was refused with a 429 on every attempt."""


def since_snowflake(minutes: float, now: float) -> int:
    """The lowest id Discord gives a message sent `minutes` before `now` (epoch seconds)."""
    moment = datetime.fromtimestamp(now - minutes * 60, UTC)
    return discord.utils.time_snowflake(moment, high=False)


def calls_on_bot(message: discord.Message, bot_user_id: int) -> bool:
    """A user's message (not a bot's, a webhook's, a system message) that mentions the bot or
    its role."""
    facts = facts_of(message)
    if facts.author_id == bot_user_id or facts.author_is_bot or facts.webhook_id is not None:
        return False
    if facts.system:
        return False
    return bot_user_id in facts.mentioned_user_ids or facts.bot_role_id is not None


def readable_channels(client: discord.Client, since: int) -> list[Readable]:
    """The text channels and active threads of the client's guilds (its shards' only) that the
    bot may read and that had a message since `since`: a quiet channel costs no request."""
    channels: list[Readable] = []
    for guild in client.guilds:
        me = guild.me
        listed: list[Readable] = [*guild.text_channels, *guild.threads]
        for channel in listed:
            if (channel.last_message_id or 0) <= since:
                continue
            if isinstance(channel, discord.Thread) and channel.archived:
                continue
            if me is not None and not _may_read(channel, me):
                continue
            channels.append(channel)
    return channels


def _may_read(channel: Readable, me: discord.Member) -> bool:
    try:
        allowed = channel.permissions_for(me)
    except discord.ClientException:  # a thread whose parent discord.py has not cached
        return True
    return allowed.view_channel and allowed.read_message_history


class CatchUp:
    def __init__(
        self,
        client: discord.Client,
        *,
        bot_user_id: int,
        minutes: float,
        scheduler: EditScheduler,
        capture: RateHeaderCapture,
        global_budget: RateBucket,
        hand: Hand,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._bot_user_id = bot_user_id
        self._minutes = minutes
        self._scheduler = scheduler
        self._capture = capture
        self._global = global_budget
        self._hand = hand
        self._wall = wall
        self._members: dict[tuple[int, int], discord.Member | None] = {}

    async def run(self) -> int:
        """Read, pick and hand over; returns how many of the mentions the core answered."""
        since = since_snowflake(self._minutes, self._wall())
        channels = readable_channels(self._client, since)
        readers = asyncio.Semaphore(READERS)

        async def read(channel: Readable) -> list[discord.Message]:
            async with readers:
                return await self._mentions_in(channel, since)

        found = [m for picked in await asyncio.gather(*map(read, channels)) for m in picked]
        found.sort(key=lambda message: message.id)
        log.info(
            "discord: catch-up found %d mention(s) of the last %g minutes in %d channel(s) read; "
            "answering those no instance has answered",
            len(found), self._minutes, len(channels),
        )  # fmt: skip
        members = [message for message in found if await self._as_member(message)]
        answers = [
            asyncio.ensure_future(answer)
            for message in members
            if (answer := self._hand(message)) is not None
        ]
        # asyncio.wait, not gather: a catch-up cancelled by a stop leaves the replies to drain.
        done = (await asyncio.wait(answers))[0] if answers else set()
        answered = sum(1 for task in done if _answered(task))
        log.info(
            "discord: caught up %d mention(s) of the last %g minutes (%d found in %d channel(s) "
            "read; the others were answered before or not admitted)",
            answered, self._minutes, len(found), len(channels),
        )  # fmt: skip
        return answered

    async def _mentions_in(self, channel: Readable, since: int) -> list[discord.Message]:
        """The channel's messages after `since` that call on the bot and that the bot has not
        replied to (with an answer or a notice) in the channel."""
        bucket = RateBucket(f"discord:read:{channel.id}", *READ_GUESS, within=self._global)
        picked: dict[int, discord.Message] = {}
        replied: set[int] = set()
        after = since
        try:
            while True:
                page = await self._request(bucket, functools.partial(_page, channel, after))
                for message in page:
                    reference = message.reference
                    if message.author.id == self._bot_user_id and reference is not None:
                        replied.add(reference.message_id or 0)
                    elif calls_on_bot(message, self._bot_user_id):
                        picked[message.id] = message
                if len(page) < PAGE:
                    break
                after = page[-1].id
        except (discord.Forbidden, discord.NotFound) as exc:
            log.info("discord: catch-up may not read channel %s (%s)", channel.id, exc.text)
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError, GaveUp) as exc:
            log.warning("discord: catch-up could not read all of channel %s: %s", channel.id, exc)
        return [message for key, message in picked.items() if key not in replied]

    async def _as_member(self, message: discord.Message) -> bool:
        """Give a guild message its author's member object, which a message read over REST
        lacks, so that the policy sees their roles as it would live; False if they left."""
        guild = message.guild
        if guild is None or isinstance(message.author, discord.Member):
            return True
        key = (guild.id, message.author.id)
        if key not in self._members:
            bucket = RateBucket(f"discord:member:{guild.id}", *MEMBER_GUESS, within=self._global)
            fetch = functools.partial(guild.fetch_member, message.author.id)
            try:
                self._members[key] = await self._request(bucket, fetch)
            except discord.NotFound:
                self._members[key] = None
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError, GaveUp):
                log.warning("discord: catch-up could not look up member %s", message.author.id)
                self._members[key] = None
        member = self._members[key]
        if member is None:
            return False
        message.author = member
        return True

    async def _request(self, bucket: RateBucket, call: Callable[[], Awaitable[T]]) -> T:
        """One read, when the scheduler grants it; its headers teach the scheduler the bucket,
        a 429 blocks the bucket for its Retry-After and the read is tried again."""
        for _ in range(TRIES):
            await self._scheduler.acquire(bucket, URGENCY, self._scheduler.now())
            with self._capture.capturing() as slot:
                try:
                    return await call()
                except WriteRefused as refused:
                    self._scheduler.penalize(bucket, refused.retry_after)
                finally:
                    if slot.headers is not None:
                        seen = slot.headers.observation(self._capture.now())
                        if seen is not None:
                            self._scheduler.observe(bucket, seen)
        raise GaveUp(f"429 on {TRIES} attempts ({bucket.key})")


def _answered(task: asyncio.Future[bool]) -> bool:
    return not task.cancelled() and task.exception() is None and task.result()


async def _page(channel: Readable, after: int) -> list[discord.Message]:
    """One history request: the oldest `PAGE` messages after `after`, oldest first."""
    history = channel.history(limit=PAGE, after=discord.Object(after), oldest_first=True)
    return [message async for message in history]
