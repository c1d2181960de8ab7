"""A whole bridge around the Slack adapter: the real slack-bolt and slack_sdk against the Slack
emulator, the real policy, Responder and SqlChatStore (SQLite in tmp_path), openai against the
local LLM.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.llm import OpenAICompatibleModel
from adapters.slack import SlackAdapter
from bridge.config import LLMSettings, SlackSettings, load_settings
from bridge.domain import ChatKey
from bridge.edits import EditOutcome, UserEdits
from bridge.lifecycle import Lifecycle
from bridge.policy import build_policy
from bridge.policy.policy import Policy
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.llm_server import LLMServer
from sandbox.slack_emulator import ShownMessage, SlackEmulator
from storage import SqlChatStore, create_engine, migrate
from tests.adapters.recording import RecordingCommands, RecordingIntake
from tests.fakes import RecordingControls

GENERAL = "C0GENERAL"
DM = "D0ALICE"
BOT = "U0BOT"
EDIT_INTERVAL = 0.2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Bridge:
    emu: SlackEmulator
    llm: LLMServer
    store: SqlChatStore
    responder: Responder
    adapter: SlackAdapter
    lifecycle: Lifecycle
    settings: SlackSettings
    policy: Policy
    intake: RecordingIntake
    commands: RecordingCommands
    controls: RecordingControls
    edits: RecordingEdits

    def bot_messages(self, channel: str, thread_ts: str) -> list[ShownMessage]:
        """The bot's replies (not the root Slack posts for it when an assistant thread opens)."""
        thread = self.emu.thread(channel, thread_ts)
        return [m for m in thread if m.user == BOT and m.subtype != "assistant_app_thread"]

    def status_calls(self, channel: str, thread_ts: str) -> list[str]:
        return [
            str(call.args["status"])
            for call in self.emu.calls_to("assistant.threads.setStatus")
            if call.args.get("channel_id") == channel and call.args.get("thread_ts") == thread_ts
        ]

    async def reply_done(self, channel: str, thread_ts: str, replies: int = 1) -> None:
        """Wait until `replies` replies in the thread ended (each clears the status once)."""
        await self.emu.wait_for(
            lambda: self.status_calls(channel, thread_ts).count("") >= replies, timeout=15
        )
        await self.settle()

    async def settle(self) -> None:
        """Wait until every event was delivered and everything the adapter started is done."""
        for _ in range(3):
            await self.emu.wait_for(lambda: not self.emu.events.busy, timeout=15)
            # Bolt runs a listener in a task after acknowledging the event: let it start.
            await asyncio.sleep(0.05)
            await self.adapter.drain()

    def llm_turns(self) -> list[tuple[str, str]]:
        """The conversation the model was given for the latest reply (not a title request)."""
        request = [r for r in self.llm.requests if r.get("stream")][-1]
        return [(m["role"], m["content"]) for m in request["messages"] if m["role"] != "system"]


Factory = Callable[..., Awaitable[Bridge]]


class RecordingEdits(UserEdits):
    """The core's UserEdits, remembering the edits and deletions the adapter reported."""

    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.calls: list[tuple[str, ChatKey, str, str | None]] = []

    async def edited(self, chat: ChatKey, platform_message_id: str, text: str) -> EditOutcome:
        self.calls.append(("edited", chat, platform_message_id, text))
        return await super().edited(chat, platform_message_id, text)

    async def deleted(self, chat: ChatKey, platform_message_id: str) -> bool:
        self.calls.append(("deleted", chat, platform_message_id, None))
        return await super().deleted(chat, platform_message_id)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test copies it instead of running Alembic again."""
    path = tmp_path_factory.mktemp("template") / "bridge.db"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
async def llm() -> AsyncIterator[LLMServer]:
    async with LLMServer(default_tokens_per_second=400, tick=0.01) as server:
        yield server


@pytest.fixture
async def make_bridge(
    emu: SlackEmulator, llm: LLMServer, tmp_path: Path, migrated_template: Path
) -> AsyncIterator[Factory]:
    started: list[tuple[Bridge, Any, OpenAICompatibleModel]] = []

    async def make(
        *,
        mode: str = "socket",
        titles: bool = False,
        sections: dict[str, Any] | None = None,
        controls: bool = False,
        edits: bool = False,
        store_wrapper: Callable[[Any], Any] | None = None,
        **slack: Any,
    ) -> Bridge:
        """`sections`: more of the configuration ([access], [limits], [[overrides]]...).
        `controls`: the Stop and feedback buttons and 🛑 (the app's default; off here so other
        tests see replies as before); `edits`: people's edits reach the store.
        `store_wrapper`: wraps the store the controls and edits use."""
        database = tmp_path / f"bridge{len(started)}.db"
        shutil.copy(migrated_template, database)
        engine = create_engine(f"sqlite+aiosqlite:///{database}")
        store = SqlChatStore(engine)
        side_store = store_wrapper(store) if store_wrapper is not None else store
        recording_controls = RecordingControls(store=side_store)
        model = OpenAICompatibleModel(
            LLMSettings(base_url=llm.base_url, api_key=SecretStr("k"), idle_timeout=5.0)
        )
        responder = Responder(
            store=store,
            llm=model,
            scheduler=EditScheduler(interval=EDIT_INTERVAL),
            settings=ResponderSettings(model="m", titles=titles, idle_timeout=5.0, max_retries=0),
            controls=recording_controls,
        )
        port = free_port()
        fields: dict[str, Any] = {
            "enabled": True,
            "mode": mode,
            "api_base_url": emu.api_base_url,
            "bot_token": SecretStr(emu.identity.bot_token),
            "app_token": SecretStr(emu.identity.app_token),
            "signing_secret": SecretStr(emu.identity.signing_secret),
            "http_port": port,
        }
        # The policy resolves each reply's settings from these: the same as the responder's.
        config = load_settings(
            None,
            {},
            values={
                "slack": {**fields, **slack},
                "llm": {
                    "base_url": llm.base_url,
                    "model": "m",
                    "titles": titles,
                    "system_prompt": "",
                },  # fmt: skip
                "streaming": {"edit_interval": EDIT_INTERVAL},
                **(sections or {}),
            },
        )
        settings = config.slack
        parts = build_policy(config, responder=responder, store=store)
        intake = RecordingIntake(policy=parts.policy, responder=responder, store=store)
        commands = RecordingCommands(policy=parts.policy, store=store)
        recording_controls.set_admin_check(commands.is_admin)
        recording_edits = RecordingEdits(store=side_store, in_flight=responder.begun)
        lifecycle = Lifecycle()
        adapter = SlackAdapter(
            settings,
            responder=responder,
            store=store,
            lifecycle=lifecycle,
            intake=intake,
            commands=commands,
            controls=recording_controls if controls else None,
            edits=recording_edits if edits else None,
        )
        if mode == "http":
            emu.delivery = "http"
            emu.event_url = f"http://127.0.0.1:{settings.http_port}/slack/events"
        bridge = Bridge(emu, llm, store, responder, adapter, lifecycle, settings, parts.policy,
                        intake, commands, recording_controls, recording_edits)  # fmt: skip
        started.append((bridge, engine, model))
        await parts.policy.start()
        await responder.start()
        await adapter.start()
        if mode == "socket":
            await emu.wait_for_socket()
        return bridge

    yield make
    # The lifecycle's order: the responder finishes its replies while the platform still works.
    for bridge, engine, model in reversed(started):
        await bridge.responder.stop()
        await bridge.adapter.stop()
        await model.stop()
        await engine.dispose()


@pytest.fixture(params=["socket", "http"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
