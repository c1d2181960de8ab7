"""`DiscordEmulator`: Discord's REST API and gateway on one loopback port, and levers to script it.

Tests, the offline sandbox and the benchmarks all drive discord.py against this; everything they
observe (requests, shown messages, typing, threads, interactions, rate-limit stats) is read here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Self

from aiohttp import web

from sandbox.local_server import LocalServer

from .api import Context
from .cdn import MAX_ATTACHMENTS, Cdn, FileUpload
from .channels_api import ChannelRoutes
from .dispatches import EventFeed
from .faults import ServerFaults
from .gateway import Gateway
from .interactions_api import InteractionRoutes
from .invocation import chat_input_options
from .model import (
    ADMINISTRATOR,
    CATEGORY_CHANNEL,
    DM_CHANNEL,
    EPHEMERAL,
    TEXT_CHANNEL,
    Channel,
    Guild,
    Json,
    User,
)
from .people import PeopleActions
from .rate_limits import GLOBAL_RULE, BucketRule, RateLimiter, Scope
from .records import (
    Change,
    EmulatorStats,
    InteractionRecord,
    RecordedRequest,
    RegisteredCommand,
    ShownMessage,
    ThreadInfo,
    TypingEvent,
)
from .rest import API_PREFIX, BotRoutes, RestServer
from .snowflakes import SnowflakeGenerator
from .wire import Wire
from .world import World


class DiscordEmulator(PeopleActions, LocalServer):
    """A local Discord for one bot: guilds, channels, users, and the bot's view of them."""

    def __init__(
        self,
        token: str = "test-token",
        bot_name: str = "bridge-bot",
        *,
        message_content_intent: bool = True,
        heartbeat_interval: int = 41250,
        interaction_ack_timeout: float = 3.0,
        global_rate_limit: BucketRule | None = GLOBAL_RULE,
        shard_count: int = 1,
        max_guilds_per_shard: int = 2500,
        clock: Callable[[], float] = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.clock = clock
        self.world = World(
            bot_name=bot_name,
            message_content_intent=message_content_intent,
            clock=clock,
            snowflakes=SnowflakeGenerator(),
        )
        # Files users attach, served on this port at signed, expiring URLs.
        self.cdn = Cdn()
        wire = Wire(self.world, self.cdn)
        self.stats = EmulatorStats()
        self.gateway = Gateway(
            self.world, wire, self.stats, token=token, heartbeat_interval=heartbeat_interval
        )
        self.gateway.shard_count = shard_count
        self.gateway.max_guilds_per_shard = max_guilds_per_shard
        self.feed = EventFeed(wire, self.gateway)
        self._ctx = Context(
            self.world, wire, self.feed, interaction_ack_timeout=interaction_ack_timeout
        )
        self.limiter = RateLimiter(clock, time.time, global_rule=global_rate_limit)
        self.faults = ServerFaults()
        self._rest = RestServer(
            token=token, limiter=self.limiter, faults=self.faults, stats=self.stats, clock=clock
        )
        app = web.Application()
        shards = self.gateway
        bot_routes = BotRoutes(
            self._ctx,
            lambda: self.gateway_url,
            lambda: shards.shard_count,
            lambda: self.stats.identifies,
        )
        specs = [
            *bot_routes.specs(),
            *ChannelRoutes(self._ctx).specs(),
            *InteractionRoutes(self._ctx).specs(),
        ]
        self._rest.install(app, specs)
        app.router.add_get("/gateway", self.gateway.handle)
        self.cdn.install(app)
        super().__init__(app, host=host, port=port)
        self._webhooks: dict[tuple[int, str], User] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle and addresses -------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self.cdn.base_url = self.url

    async def stop(self) -> None:
        await self.gateway.close()
        await super().stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    @property
    def api_base_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def bot_user_id(self) -> int:
        return self.world.bot.id

    @property
    def application_id(self) -> int:
        return self.world.application.id

    @property
    def message_content_intent(self) -> bool:
        return self.world.application.message_content_intent

    @message_content_intent.setter
    def message_content_intent(self, granted: bool) -> None:
        self.world.application.message_content_intent = granted

    # --- setup -------------------------------------------------------------------------------

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None) -> int:
        """A guild the bot is in; `shard` = (id, count) picks an id on that shard."""
        guild = self.world.add_guild(name, shard=shard)
        self._in_background(self.feed.guild_created(guild))
        return guild.id

    def add_category(self, guild_id: int, name: str) -> int:
        """A category channel (type 4); text channels placed in it have it as `parent_id`."""
        category = self.world.add_category(self._guild(guild_id), name)
        self._in_background(self.feed.channel_created(category))
        return category.id

    def add_text_channel(
        self,
        guild_id: int,
        name: str,
        *,
        topic: str | None = None,
        category: int | None = None,
    ) -> int:
        guild = self._guild(guild_id)
        parent = None
        if category is not None:
            parent = self._channel(category)
            if parent.type != CATEGORY_CHANNEL:
                raise ValueError(f"channel {category} is not a category")
        channel = self.world.add_text_channel(guild, name, topic, category=parent)
        self._in_background(self.feed.channel_created(channel))
        return channel.id

    def add_role(self, guild_id: int, name: str, *, permissions: int = 0) -> int:
        """A role of the guild (GUILD_ROLE_CREATE); it grants `permissions` to its members."""
        guild = self._guild(guild_id)
        role = self.world.add_role(guild, name, permissions=permissions)
        self._in_background(self.feed.role_created(guild, role))
        return role.id

    def give_role(self, guild_id: int, user_id: int, role_id: int) -> None:
        """The member gets the role: their member objects list it from now on (messages,
        interactions, GUILD_MEMBER_UPDATE for sessions with GUILD_MEMBERS)."""
        guild = self._guild(guild_id)
        user = self._user(user_id)
        self.world.give_role(guild, user.id, role_id)
        self._in_background(self.feed.member_updated(guild, user))

    def make_admin(self, guild_id: int, user_id: int) -> int:
        """Gives the member the guild's "Admins" role (Administrator, permission bit 3), made on
        first use; returns the role's id."""
        guild = self._guild(guild_id)
        role_id = next(
            (r.id for r in guild.roles.values() if r.name == "Admins" and not r.managed), None
        )
        if role_id is None:
            role_id = self.add_role(guild_id, "Admins", permissions=ADMINISTRATOR)
        self.give_role(guild_id, user_id, role_id)
        return role_id

    def add_user(self, name: str, bot: bool = False) -> int:
        return self.world.add_user(name, bot=bot).id

    def dm_channel(self, user_id: int) -> int:
        return self.world.open_dm(self._user(user_id).id).id

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Setup is synchronous; a bot already connected still hears about what was added.
        if not self.gateway.sessions:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _caught_up(self) -> None:
        """Dispatches of setup done meanwhile go out first, in order, as Discord's event stream
        would have them (a role given before a message is known when the message arrives)."""
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- scripted activity -------------------------------------------------------------------

    async def user_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        mention_bot: bool = False,
        reply_to: int | None = None,
        *,
        embeds: Sequence[Json] | None = None,
        attachments: Sequence[FileUpload] = (),
        age: float = 0.0,
    ) -> int:
        """Posts as a user and dispatches MESSAGE_CREATE; `mention_bot` prefixes `<@bot>`.

        `attachments`: files the user attaches (at most 10, as Discord's client allows; the text
        may then be empty), served by the emulated CDN at the signed URLs of their attachment
        objects. `age` > 0: the message was sent that many seconds ago, while no bot listened:
        it is in the channel's history (id and timestamp of then) and nothing is dispatched."""
        channel = self._channel(channel_id)
        author = self._user(author_id)
        if channel.type == DM_CHANNEL and author.id != channel.recipient_id:
            raise ValueError("only the DM's recipient can write in it")
        mention = f"<@{self.bot_user_id}>"
        if mention_bot and mention not in content and f"<@!{self.bot_user_id}>" not in content:
            content = f"{mention} {content}"
        if len(content) > 2000:
            raise ValueError("Discord users cannot send more than 2000 characters either")
        if len(attachments) > MAX_ATTACHMENTS:
            raise ValueError(f"Discord users cannot attach more than {MAX_ATTACHMENTS} files")
        if not content and not attachments and not embeds:
            raise ValueError("Discord's client sends no empty message")
        files = [
            self.cdn.attachment(self.cdn.store(self.world.snowflakes.next(), channel.id, upload))
            for upload in attachments
        ]
        replied, reference = None, None
        if reply_to is not None:
            replied = self.world.message(channel.id, reply_to)
            if replied is None:
                raise LookupError(f"no message {reply_to} in channel {channel_id}")
            reference = {"type": 0, "channel_id": str(channel.id), "message_id": str(replied.id)}
            if channel.guild_id is not None:
                reference["guild_id"] = str(channel.guild_id)
        message = self.world.post_message(
            channel,
            author.id,
            content,
            embeds=list(embeds or []),
            attachments=files,
            reply_to=replied,
            reference=reference,
            age=age,
        )
        if age > 0:
            return message.id
        await self._caught_up()
        await self.feed.message_created(message)
        return message.id

    async def webhook_message(
        self, channel_id: int, content: str, *, username: str = "Captain Hook"
    ) -> int:
        """Posts as a channel webhook (author flagged bot, `webhook_id` set, no member)."""
        channel = self._channel(channel_id)
        if channel.guild_id is None:
            raise ValueError("webhooks post in guild channels only")
        hook = self._webhooks.get((channel.id, username))
        if hook is None:
            hook = self.world.add_user(username, bot=True, webhook=True)
            self._webhooks[(channel.id, username)] = hook
        message = self.world.post_message(channel, hook.id, content, webhook_id=hook.id)
        await self._caught_up()
        await self.feed.message_created(message)
        return message.id

    async def edit_user_message(self, channel_id: int, message_id: int, content: str) -> None:
        message = self.world.message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        if message.author_id == self.bot_user_id:
            raise ValueError("that is the bot's message; edit it through the bot")
        self.world.edit_message(message, content=content)
        await self._caught_up()
        await self.feed.message_updated(message)

    async def start_thread(
        self, channel_id: int, user_id: int, name: str, *, from_message: int | None = None
    ) -> int:
        """A user starts a public thread (from a message if given); dispatches THREAD_CREATE."""
        parent = self._channel(channel_id)
        if parent.type != TEXT_CHANNEL:
            raise ValueError("threads start in guild text channels")
        starter = None
        if from_message is not None:
            starter = self.world.message(parent.id, from_message)
            if starter is None:
                raise LookupError(f"no message {from_message} in channel {channel_id}")
        owner = self._user(user_id)
        thread = self.world.start_thread(parent, name, owner_id=owner.id, starter=starter)
        await self._caught_up()
        await self.feed.thread_created(thread)
        return thread.id

    async def slash_command(
        self,
        channel_id: int,
        user_id: int,
        name: str,
        options: Mapping[str, Any] | Sequence[Json] | None = None,
    ) -> int:
        """A user runs a registered chat-input command as Discord's client lets them; returns the
        interaction id.

        `name` is the full name: "reset", or "bridge trigger" for a subcommand. `options` maps
        the (sub)command's option names to values, checked as the client does (declared, the
        required ones given, one of the choices), or is raw option dicts, sent as they are.
        Raises PermissionError where the client would not offer the command: a member without
        every permission of its `default_member_permissions`, or a DM where it is not usable.
        """
        channel = self._channel(channel_id)
        user = self._user(user_id)
        top, *path = name.split()
        command = self.world.find_command(top, channel.guild_id)
        if command is None:
            raise LookupError(f"/{top} is not registered for channel {channel_id}")
        refusal = self.world.refusal(command, channel, user.id)
        if refusal is not None:
            raise PermissionError(refusal)
        if options is None or isinstance(options, Mapping):
            sent = chat_input_options(command, path, options or {})
        else:
            sent = list(options)
        interaction = self.world.new_interaction(command, channel, user.id, sent)
        await self._caught_up()
        await self.feed.interaction_created(interaction)
        return interaction.id

    async def replay(self, message_id: int) -> None:
        """Sends a message's MESSAGE_CREATE again, as a resumed session's replay can."""
        if not await self.feed.replay_create(message_id):
            raise LookupError(f"no MESSAGE_CREATE was dispatched for {message_id}")

    async def drop_gateway(self, code: int | None = None, *, outage: float = 0.0) -> int:
        """Closes the gateway sockets (code 4000 by default, which discord.py resumes from).

        For `outage` seconds new connections wait for HELLO, so dispatches made meanwhile are
        buffered and replayed on RESUME. Returns how many sockets were closed.
        """
        return await self.gateway.drop(4000 if code is None else code, outage)

    # --- rate limits -------------------------------------------------------------------------

    def set_bucket(self, route: str, limit: int, per: float) -> None:
        self.limiter.set_bucket(route, limit, per)

    def inject_429(
        self,
        route: str,
        count: int = 1,
        retry_after: float = 1.0,
        *,
        channel_id: int | None = None,
        scope: Scope = "user",
    ) -> None:
        """The next `count` requests on `route` (in `channel_id` if given) get a 429."""
        major = None if channel_id is None else str(channel_id)
        self.limiter.inject(route, count, retry_after, major=major, scope=scope)

    # --- server errors -----------------------------------------------------------------------

    def inject_server_error(
        self,
        route: str,
        count: int = 1,
        status: int = 500,
        *,
        channel_id: int | None = None,
        applied: bool = False,
    ) -> None:
        """The next `count` requests on `route` (in `channel_id` if given) that the rate limits
        admit are answered `status`. With `applied` each takes effect first (a create posts its
        message and dispatches MESSAGE_CREATE) and only its answer is the error, as when Discord
        fails between storing a message and replying. discord.py retries 500, 502, 504 and 524."""
        major = None if channel_id is None else str(channel_id)
        self.faults.inject(route, count, status, major=major, applied=applied)

    # --- observation -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._rest.requests

    @property
    def connected_shards(self) -> list[tuple[int, int] | None]:
        """The `[id, count]` each connected gateway session IDENTIFYed with (None: unsharded)."""
        return [s.shard for s in self.gateway.sessions.values() if s.link is not None]

    @property
    def typing_events(self) -> list[TypingEvent]:
        return self._ctx.typing

    def messages(self, channel_id: int, *, include_ephemeral: bool = False) -> list[ShownMessage]:
        return [
            m.shown()
            for m in self.world.messages(channel_id)
            if include_ephemeral or not m.flags & EPHEMERAL
        ]

    def message(self, message_id: int) -> ShownMessage | None:
        found = self.world.find_message(message_id)
        return None if found is None else found.shown()

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Call `listener` after every visible change; returns a function that unsubscribes."""
        return self.world.subscribe(listener)

    @property
    def threads(self) -> list[ThreadInfo]:
        return [t.thread_info() for t in self.world.threads()]

    @property
    def commands(self) -> list[RegisteredCommand]:
        return [c.registered() for c in self.world.commands.values()]

    @property
    def interactions(self) -> list[InteractionRecord]:
        return [i.record() for i in self.world.interactions.values()]

    def interaction(self, interaction_id: int) -> InteractionRecord:
        return self.world.interactions[interaction_id].record()

    def _guild(self, guild_id: int) -> Guild:
        guild = self.world.guilds.get(guild_id)
        if guild is None:
            raise LookupError(f"no guild {guild_id}")
        return guild

    def _channel(self, channel_id: int) -> Channel:
        channel = self.world.channels.get(channel_id)
        if channel is None:
            raise LookupError(f"no channel {channel_id}")
        return channel

    def _user(self, user_id: int) -> User:
        user = self.world.users.get(user_id)
        if user is None or user.webhook:
            raise LookupError(f"no user {user_id}")
        return user
