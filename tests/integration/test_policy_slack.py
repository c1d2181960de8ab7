"""Admin policy as a Slack admin meets it: a whole bridge (real slack-bolt against the Slack
emulator, openai against the local LLM server) configured with [access], [limits] and
[[overrides]], and people talking to it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import SlackEmulator
from tests.integration.whole_bridge import (
    WallClock,
    base_config,
    eventually,
    settled,
    whole_bridge,
)

GENERAL, OTHER, DM = "C0GENERAL", "C0OTHER", "D0ALICE"
ALICE, BOB, CAROL, ADMIN = "U0ALICE", "U0BOB", "U0CAROL", "U0ADMIN"
DAVE, ERIN = "U0DAVE", "U0ERIN"
EVERYONE = (ALICE, BOB, CAROL, ADMIN, DAVE, ERIN)


@pytest.fixture
async def world() -> tuple[SlackEmulator, LLMServer]:  # type: ignore[misc]
    async with SlackEmulator() as emu, LLMServer(tick=0.01) as llm:
        emu.join(GENERAL, *EVERYONE)
        emu.join(OTHER, *EVERYONE)
        yield emu, llm


def config(tmp_path: Path, emu: SlackEmulator, llm: LLMServer, policy: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", llm.base_url)
        + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        + policy
    )
    return path


def secrets(emu: SlackEmulator) -> dict[str, str]:
    return {
        "CHAT_BRIDGE_SLACK__BOT_TOKEN": emu.identity.bot_token,
        "CHAT_BRIDGE_SLACK__APP_TOKEN": emu.identity.app_token,
    }


def answered(emu: SlackEmulator, channel: str, ts: str) -> list[str]:
    bot = emu.identity.bot_user_id
    return [m.text for m in emu.thread(channel, ts) if m.user == bot]


def stored_texts(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT content FROM messages ORDER BY id")]


def notices(emu: SlackEmulator, user: str) -> list[str]:
    return [e.text for e in emu.ephemerals(user)]


def mention(emu: SlackEmulator, text: str) -> str:
    return f"<@{emu.identity.bot_user_id}> {text}"


async def test_access_rules_refuse_without_a_model_call_or_stored_content(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    policy = (
        f'[access]\ndenied_users = ["{BOB}"]\nallowed_channels = ["{GENERAL}"]\n'
        "allow_dms = false\nnotify_denied = true\n"
    )
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        from_bob = await emu.user_message(GENERAL, mention(emu, "secret plan from bob"), BOB)
        elsewhere = await emu.user_message(OTHER, mention(emu, "secret plan elsewhere"), ALICE)
        in_dm = await emu.user_message(DM, "secret plan in a DM", ALICE, channel_type="im")
        # Called into a thread: its earlier messages are read, but not those of a refused user.
        root = await emu.user_message(GENERAL, "a plain root message", ALICE)
        await emu.user_message(GENERAL, "secret plan in the thread", BOB, thread_ts=root)
        allowed = await emu.user_message(GENERAL, mention(emu, "hello"), ALICE, thread_ts=root)
        await eventually(lambda: answered(emu, GENERAL, root))
        await settled(bridge)
        streams = [r for r in llm.requests if r.get("stream")]
        assert len(streams) == 1
        context = " ".join(m["content"] for m in streams[0]["messages"])
        assert "a plain root message" in context and "secret plan" not in context
        assert allowed
        for channel, ts in ((GENERAL, from_bob), (OTHER, elsewhere), (DM, in_dm)):
            assert answered(emu, channel, ts) == []
        assert not any("secret plan" in text for text in stored_texts(tmp_path / "bridge.db"))
        # Bob is told once (notify_denied), and only he sees it.
        assert notices(emu, BOB) == ["🚫 _You cannot use this bot here._"]
        assert [m.text for m in emu.channel(GENERAL) if "cannot use" in m.text] == []


async def test_trigger_always_answers_every_message_and_off_none(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    policy = (
        f'[[overrides]]\nchannel = "{GENERAL}"\ntrigger = "always"\n'
        f'[[overrides]]\nchannel = "{OTHER}"\ntrigger = "off"\n'
    )
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        plain = await emu.user_message(GENERAL, "no mention here, still answered", ALICE)
        await eventually(lambda: answered(emu, GENERAL, plain))
        muted = await emu.user_message(OTHER, mention(emu, "anyone?"), ALICE)
        await asyncio.sleep(0.5)
        await settled(bridge)
        assert answered(emu, OTHER, muted) == []
        assert len([r for r in llm.requests if r.get("stream")]) == 1


async def test_overrides_at_workspace_channel_and_thread_reach_the_model(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    team = emu.identity.team_id
    root = await emu.user_message(GENERAL, mention(emu, "start a thread"), ALICE)
    policy = (
        f'[[overrides]]\nworkspace = "{team}"\nmodel = "ws-model"\nsystem_prompt = "ws prompt"\n'
        f'[[overrides]]\nchannel = "{GENERAL}"\nmodel = "channel-model"\n'
        'system_prompt = "channel prompt"\n'
        f'[[overrides]]\nthread = "{GENERAL}/{root}"\nmodel = "thread-model"\n'
        'system_prompt = "thread prompt"\n'
    )
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        sent = [
            (OTHER, None, "in other"),
            (GENERAL, None, "in general"),
            (GENERAL, root, "in the thread"),
        ]
        for channel, thread, text in sent:
            ts = await emu.user_message(channel, mention(emu, text), ALICE, thread_ts=thread)
            await eventually(lambda c=channel, t=thread or ts: answered(emu, c, t))
            await settled(bridge)
        streams = [r for r in llm.requests if r.get("stream")]
        seen = [(r["model"], r["messages"][0]["content"]) for r in streams]
        assert seen == [
            ("ws-model", "ws prompt"),
            ("channel-model", "channel prompt"),
            ("thread-model", "thread prompt"),
        ]


async def test_limits_refuse_with_a_notice_that_names_the_limit(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    policy = (
        "[limits]\nuser_messages_per_minute = 2\nmax_input_chars = 60\n"
        "user_concurrent_replies = 1\nchannel_concurrent_replies = 2\n"
    )
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        # max_input_chars: nothing goes to the model.
        await emu.user_message(GENERAL, mention(emu, "x" * 80), CAROL)
        await eventually(lambda: notices(emu, CAROL))
        assert "more than the 60 allowed" in notices(emu, CAROL)[0]
        assert not [r for r in llm.requests if r.get("stream")]

        # user_concurrent_replies: a second question while the first streams.
        llm.script(ScriptedReply(text="slow " * 40, tokens_per_second=20))
        first = await emu.user_message(GENERAL, mention(emu, "one"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, first))
        await emu.user_message(OTHER, mention(emu, "two"), ALICE)
        await eventually(lambda: notices(emu, ALICE))
        assert "already have 1 answers on the way" in notices(emu, ALICE)[0]
        await settled(bridge)

        # channel_concurrent_replies: two streaming in #general, a third person is refused.
        llm.script(*(ScriptedReply(text="slow " * 40, tokens_per_second=20) for _ in range(2)))
        for user in (BOB, ADMIN):
            ts = await emu.user_message(GENERAL, mention(emu, "busy channel"), user)
            await eventually(lambda ts=ts: answered(emu, GENERAL, ts))
        await emu.user_message(GENERAL, mention(emu, "me too"), DAVE)
        await eventually(lambda: notices(emu, DAVE))
        assert "this channel already has 2 answers on the way" in notices(emu, DAVE)[0]
        await settled(bridge)

        # user_messages_per_minute: Erin's third message in a minute.
        for text in ("a", "b"):
            ts = await emu.user_message(OTHER, mention(emu, text), ERIN)
            await eventually(lambda ts=ts: answered(emu, OTHER, ts))
            await settled(bridge)  # one at a time: user_concurrent_replies is 1
        third = await emu.user_message(OTHER, mention(emu, "c"), ERIN)
        await eventually(lambda: notices(emu, ERIN))
        assert "2 messages in the last minute" in notices(emu, ERIN)[0]
        assert "Try again in" in notices(emu, ERIN)[0]
        assert answered(emu, OTHER, third) == []


async def test_a_daily_quota_outlives_a_restart_and_resets_at_midnight_utc(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    path = config(tmp_path, emu, llm, "[limits]\nuser_daily_tokens = 30\n")
    wall = WallClock()
    async with whole_bridge(path, secrets(emu), wall=wall) as bridge:
        llm.script(ScriptedReply(text="word " * 40))  # 40 completion tokens: over 30
        first = await emu.user_message(GENERAL, mention(emu, "spend it"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, first))
        await settled(bridge)
        refused = await emu.user_message(GENERAL, mention(emu, "more"), ALICE)
        await eventually(lambda: notices(emu, ALICE))
        assert "daily quota is 30" in notices(emu, ALICE)[0]
        assert "00:00 UTC" in notices(emu, ALICE)[0]
        assert answered(emu, GENERAL, refused) == []
    requests = len(llm.requests)
    async with whole_bridge(path, secrets(emu), wall=wall) as bridge:
        still = await emu.user_message(OTHER, mention(emu, "after a restart"), ALICE)
        await asyncio.sleep(0.5)
        await settled(bridge)
        assert answered(emu, OTHER, still) == [] and len(llm.requests) == requests
        wall.next_day()
        fresh = await emu.user_message(OTHER, mention(emu, "a new day"), ALICE)
        await eventually(lambda: answered(emu, OTHER, fresh))


async def test_llm_slots_queue_in_order_and_the_queue_limit_answers_busy(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    policy = (
        "[limits]\nllm_concurrent_requests = 1\nqueue_limit = 2\nshow_queued_after = 0.3\n"
        f'[[overrides]]\nchannel = "{OTHER}"\nnative_streaming = "never"\n'
    )
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        llm.script(ScriptedReply(text="long " * 30, tokens_per_second=20))
        await emu.user_message(GENERAL, mention(emu, "first"), ALICE)
        await eventually(lambda: llm.stats.streams_active == 1)
        # chat.update replies (native_streaming "never" here) say "queued" in the placeholder...
        second = await emu.user_message(OTHER, mention(emu, "second"), BOB)
        await eventually(lambda: any("Queued" in t for t in answered(emu, OTHER, second)))
        # ...a native stream has none: Slack's status line says it.
        third = await emu.user_message(GENERAL, mention(emu, "third"), DAVE)
        waiting = "is waiting for the model…"
        await eventually(
            lambda: any(
                c.args.get("status") == waiting and c.args.get("thread_ts") == third
                for c in emu.calls_to("assistant.threads.setStatus")
            )
        )
        fourth = await emu.user_message(GENERAL, mention(emu, "fourth"), CAROL)
        await eventually(lambda: notices(emu, CAROL))
        assert notices(emu, CAROL) == [
            "⏳ _Too many questions at once right now: please try again shortly._"
        ]
        await settled(bridge)
        assert answered(emu, GENERAL, fourth) == []
        assert "Queued" not in answered(emu, OTHER, second)[-1]
        asked = [r["messages"][-1]["content"] for r in llm.requests if r.get("stream")]
        assert asked == ["first", "second", "third"]  # in order of arrival
        assert llm.stats.peak_streams_active == 1


async def test_admin_commands_and_a_runtime_model_that_survives_a_restart(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    path = config(tmp_path, emu, llm, f'[access]\nadmins = ["{ADMIN}"]\n')
    async with whole_bridge(path, secrets(emu)):
        await emu.slash_command(BOB, GENERAL, "/chat-bridge", "model sneaky-model")
        assert "Only the bridge's admins" in notices(emu, BOB)[-1]
        await emu.slash_command(ADMIN, GENERAL, "/chat-bridge", "model runtime-model")
        await eventually(lambda: "runtime-model" in (notices(emu, ADMIN) or [""])[-1])
    async with whole_bridge(path, secrets(emu)) as bridge:
        ts = await emu.user_message(GENERAL, mention(emu, "which model?"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, ts))
        await settled(bridge)
        assert [r for r in llm.requests if r.get("stream")][-1]["model"] == "runtime-model"
        await emu.slash_command(ADMIN, GENERAL, "/chat-bridge", "settings")
        shown = await eventually(lambda: notices(emu, ADMIN)[-1] if "settings" in
                                 notices(emu, ADMIN)[-1].lower() else None)  # fmt: skip
        assert "runtime-model" in shown and f"set in chat for {GENERAL} by {ADMIN}" in shown


async def test_a_reload_applies_a_valid_file_and_refuses_a_broken_one(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer], caplog: pytest.LogCaptureFixture
) -> None:
    emu, llm = world
    path = config(tmp_path, emu, llm, "")
    original = path.read_text()
    async with whole_bridge(path, secrets(emu)) as bridge:
        assert bridge.reloader is not None
        path.write_text(
            original.replace('model = "local"', 'model = "reloaded-model"').replace(
                "edit_interval = 0.2", 'edit_interval = 0.2\nplaceholder = "..."'
            )
        )
        with caplog.at_level(logging.INFO, logger="bridge.reload"):
            assert await bridge.reloader.reload()
        assert "streaming.placeholder changed, but it needs a restart" in caplog.text
        ts = await emu.user_message(GENERAL, mention(emu, "after reload"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, ts))
        await settled(bridge)
        assert [r for r in llm.requests if r.get("stream")][-1]["model"] == "reloaded-model"

        caplog.clear()
        path.write_text(
            path.read_text().replace('"reloaded-model"', '"broken-model"')
            + '[[overrides]]\nchannel = "C1"\nthread = "C1/1.2"\n'
            + '[[overrides]]\nchannel = "C2"\ntrigger = "sometimes"\n'
        )
        with caplog.at_level(logging.INFO, logger="bridge.reload"):
            assert not await bridge.reloader.reload()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("overrides.0.thread: an override needs exactly one" in e for e in errors)
        assert any("overrides.1.trigger: Input should be" in e for e in errors)
        assert any("the running configuration stays in force" in e for e in errors)
        ts = await emu.user_message(GENERAL, mention(emu, "still the old config"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, ts))
        await settled(bridge)
        assert [r for r in llm.requests if r.get("stream")][-1]["model"] == "reloaded-model"

        # A change of the file is picked up without a signal.
        path.write_text(original.replace('model = "local"', 'model = "watched-model"'))
        await eventually(lambda: bridge.reloader.reloads >= 2, timeout=15)
        ts = await emu.user_message(GENERAL, mention(emu, "watched"), ALICE)
        await eventually(lambda: answered(emu, GENERAL, ts))
        await settled(bridge)
        assert [r for r in llm.requests if r.get("stream")][-1]["model"] == "watched-model"
