"""A running bridge on Discord for the adapter's tests: the emulator driving the real discord.py,
the real Responder, policy (Intake, AdminCommands), SqlChatStore on SQLite, the openai SDK
against the local LLM server, and the shared EditScheduler with a short interval. The Intake and
AdminCommands also record what the adapter hands them (`Origin`s, command arguments)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord.gateway
import discord.http
import pytest
from pydantic import SecretStr

from adapters.discord import DiscordAdapter
from adapters.discord.events import chat_key
from adapters.llm import OpenAICompatibleModel
from bridge.config import DiscordSettings, LLMSettings, Settings, StreamingSettings
from bridge.domain import ChatKey
from bridge.edits import EditOutcome, UserEdits
from bridge.lifecycle import Lifecycle
from bridge.policy import build_policy
from bridge.policy.policy import Policy
from bridge.policy.settings import AccessSettings, LimitSettings, OverrideSettings
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.discord_emulator import DiscordEmulator
from sandbox.discord_emulator.records import RecordedRequest, ShownMessage
from sandbox.llm_server import LLMServer
from storage import SqlChatStore, create_engine, migrate
from tests.adapters.recording import RecordingCommands, RecordingIntake
from tests.fakes import RecordingControls
from tests.sandbox.discord_emulator_harness import wait_until

TOKEN = "test-token"
INTERVAL = 0.25
CREATE_ROUTE = "POST /channels/{channel_id}/messages"
EDIT_ROUTE = "PATCH /channels/{channel_id}/messages/{message_id}"
# Every step takes milliseconds; reaching this means it is not going to happen.


@dataclass
class Bridge:
    """One running bridge and the world around it."""

    scene: Scene
    llm: LLMServer
    core: Core
    adapter: DiscordAdapter

    @property
    def emu(self) -> DiscordEmulator:
        return self.scene.emu

    @property
    def store(self) -> SqlChatStore:
        return self.core.store

    @property
    def responder(self) -> Responder:
        return self.core.responder

    @property
    def guild_id(self) -> int:
        return self.scene.guild_id

    @property
    def channel_id(self) -> int:
        return self.scene.channel_id

    @property
    def alice(self) -> int:
        return self.scene.alice

    @property
    def bob(self) -> int:
        return self.scene.bob

    @property
    def bot_id(self) -> int:
        return self.emu.bot_user_id

    def bot_messages(self, channel_id: int | None = None) -> list[ShownMessage]:
        channel = self.channel_id if channel_id is None else channel_id
        return [m for m in self.emu.messages(channel) if m.author_id == self.bot_id]

    def writes(self, channel_id: int | None = None) -> list[RecordedRequest]:
        """The bot's message creates and edits in a channel, in arrival order."""
        channel = str(self.channel_id if channel_id is None else channel_id)
        return [
            r
            for r in self.emu.requests
            if r.route in (CREATE_ROUTE, EDIT_ROUTE) and r.major == channel
        ]

    async def mention(self, text: str, *, channel_id: int | None = None, author: int = 0) -> int:
        channel = self.channel_id if channel_id is None else channel_id
        return await self.emu.user_message(channel, author or self.alice, text, mention_bot=True)

    async def reply_shown(self, text: str, channel_id: int | None = None) -> ShownMessage:
        """Waits until a bot message in the channel shows exactly `text` (a finished reply)."""
        shown: ShownMessage = await wait_until(
            lambda: next((m for m in self.bot_messages(channel_id) if m.content == text), None)
        )
        return shown

    async def chat_id(self, channel_id: int | None = None) -> int:
        key = chat_key(self.guild_id, self.channel_id if channel_id is None else channel_id)
        chat = await self.store.get_chat(key)
        assert chat is not None
        return chat.id

    async def settled(self) -> None:
        """Waits until no reply is in progress and title generation is done."""
        await wait_until(lambda: not self.responder._active)
        await self.responder.wait_background()


def discord_settings(**overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {"enabled": True, "token": SecretStr(TOKEN)}
    return DiscordSettings(**{**values, **overrides})


@dataclass(frozen=True)
class Scene:
    """The emulated Discord before the bridge connects: one guild, one channel, two users."""

    emu: DiscordEmulator
    guild_id: int
    channel_id: int
    alice: int
    bob: int


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    async with DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu:
        guild_id = emu.add_guild("Test Guild")
        channel_id = emu.add_text_channel(guild_id, "general")
        yield Scene(emu, guild_id, channel_id, emu.add_user("alice"), emu.add_user("bob"))


@pytest.fixture
async def llm() -> AsyncIterator[LLMServer]:
    async with LLMServer(tick=0.01) as server:
        yield server


@dataclass
class Core:
    """The real core the adapter plugs into."""

    store: SqlChatStore
    responder: Responder
    scheduler: EditScheduler
    lifecycle: Lifecycle
    settings: Settings
    policy: Policy
    intake: RecordingIntake
    commands: RecordingCommands
    edits: RecordingEdits
    controls: RecordingControls


class RecordingEdits(UserEdits):
    """The core's UserEdits, remembering the edits and deletions the adapter passed on."""

    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.edits: list[tuple[ChatKey, str, str, EditOutcome]] = []
        self.deletions: list[tuple[ChatKey, str, bool]] = []

    async def edited(self, chat: ChatKey, platform_message_id: str, text: str) -> EditOutcome:
        outcome = await super().edited(chat, platform_message_id, text)
        self.edits.append((chat, platform_message_id, text, outcome))
        return outcome

    async def deleted(self, chat: ChatKey, platform_message_id: str) -> bool:
        found = await super().deleted(chat, platform_message_id)
        self.deletions.append((chat, platform_message_id, found))
        return found


@pytest.fixture
async def make_core(llm: LLMServer, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    cleanups: list[Callable[[], Any]] = []

    async def build(
        *,
        titles: bool = False,
        n: int = 1,
        url: str | None = None,
        access: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        **responder: Any,
    ) -> Core:
        """`url`: another database (default: SQLite in tmp_path); `access`, `limits`,
        `overrides`: the policy's sections; `responder`: more ResponderSettings (e.g.
        outage_tolerance)."""
        url = url or f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
        await migrate(url)
        engine = create_engine(url)
        llm_settings = LLMSettings(
            base_url=llm.base_url,
            api_key=SecretStr("k"),
            idle_timeout=5.0,
            model="local-llm",
            titles=titles,
            n=n,
        )
        # What the policy resolves for each reply: the same as the Responder's own settings.
        settings = Settings(
            llm=llm_settings,
            streaming=StreamingSettings(edit_interval=INTERVAL),
            access=AccessSettings(**(access or {})),
            limits=LimitSettings(**(limits or {})),
            overrides=[OverrideSettings(**o) for o in overrides or []],
        )
        model = OpenAICompatibleModel(llm_settings)
        cleanups.extend([model.stop, engine.dispose])
        scheduler = EditScheduler(interval=INTERVAL)
        store = SqlChatStore(engine)
        controls = RecordingControls(store=store)
        responder = Responder(
            store=store,
            llm=model,
            scheduler=scheduler,
            controls=controls,
            settings=ResponderSettings(
                model="local-llm", titles=titles, n=n, idle_timeout=5.0, **responder
            ),
        )
        await responder.start()
        cleanups.insert(0, responder.stop)
        policy = build_policy(settings, responder=responder, store=store).policy
        await policy.start()
        cleanups.insert(0, policy.stop)
        return Core(
            store,
            responder,
            scheduler,
            Lifecycle(),
            settings,
            policy,
            RecordingIntake(policy=policy, responder=responder, store=store),
            RecordingCommands(policy=policy, store=store),
            RecordingEdits(store=store, in_flight=responder.begun),
            controls,
        )

    yield build
    for cleanup in cleanups:
        await cleanup()


def adapter_for(scene: Scene, core: Core, **settings: Any) -> DiscordAdapter:
    emu = scene.emu
    return DiscordAdapter(
        discord_settings(api_base_url=emu.api_base_url, gateway_url=emu.gateway_url, **settings),
        responder=core.responder,
        store=core.store,
        lifecycle=core.lifecycle,
        intake=core.intake,
        commands=core.commands,
        reset_admins_only=core.settings.access.reset == "admins",
        guild_ready_timeout=0.05,
        controls=core.controls,
        edits=core.edits,
    )


BridgeFactory = Callable[..., contextlib.AbstractAsyncContextManager[Bridge]]


@pytest.fixture
def make_bridge(scene: Scene, llm: LLMServer, make_core: Callable[..., Any]) -> BridgeFactory:
    """`async with make_bridge(auto_thread=True, titles=True) as bridge:` a started bridge;
    `titles` and `n` (choices per reply) go to the Responder, `access`, `limits` and
    `overrides` to the policy, the rest to DiscordSettings."""

    @contextlib.asynccontextmanager
    async def running(
        *,
        titles: bool = False,
        n: int = 1,
        access: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        **settings: Any,
    ) -> AsyncIterator[Bridge]:
        core: Core = await make_core(
            titles=titles, n=n, access=access, limits=limits, overrides=overrides
        )
        adapter = adapter_for(scene, core, **settings)
        route_base = discord.http.Route.BASE
        gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        await adapter.start()
        try:
            yield Bridge(scene, llm, core, adapter)
        finally:
            await core.responder.stop()
            await adapter.stop()
            # The adapter points discord.py at the emulator only while it runs.
            assert discord.http.Route.BASE == route_base
            assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway

    return running


def within_fixed_windows(times: Iterable[float], limit: int, per: float) -> bool:
    """Whether requests arriving at `times` fit the emulator's buckets: fixed windows of `per`
    seconds, each opened by the first request after the previous one ended."""
    window_end, used = float("-inf"), 0
    for at in sorted(times):
        if at >= window_end:
            window_end, used = at + per, 0
        used += 1
        if used > limit:
            return False
    return True


def pings_no_one(body: Any) -> bool:
    allowed = (body or {}).get("allowed_mentions")
    return (
        isinstance(allowed, dict)
        and allowed.get("parse") == []
        and not allowed.get("users")
        and not allowed.get("roles")
        and not allowed.get("replied_user")
    )
