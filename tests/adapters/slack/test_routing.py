"""What the adapter does not answer, what it refuses, and the context it gathers first."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from bridge.lifecycle import AccessRevoked
from bridge.policy.origin import Origin
from sandbox.llm_server import ScriptedReply
from sandbox.slack_emulator import Message
from sandbox.slack_emulator.events import event_callback, message_event
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Factory


async def test_own_other_bot_edited_and_unaddressed_messages_cause_no_llm_call(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    ts = await emu.user_message(GENERAL, f"<@{BOT}> start", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)  # the bot now takes part in this thread
    assert len(bridge.llm.requests) == 1

    await emu.bot_message(GENERAL, "beep from another bot", thread_ts=ts)
    await emu.bot_message(DM, "a bot in a DM", channel_type="im")
    own = Message(ts=emu.workspace.next_ts(), channel=GENERAL, text="mine", user=BOT,
                  bot_id="B0BOT", thread_ts=ts)  # fmt: skip
    emu.workspace.add(own)
    await emu.deliver(message_event(own, "channel"))
    followup = await emu.user_message(GENERAL, "typo", user="U0ALICE", thread_ts=ts)
    await bridge.settle()
    llm_calls = len(bridge.llm.requests)  # the follow-up itself is answered
    await emu.edit_user_message(GENERAL, followup, "no typo")
    await emu.delete_user_message(GENERAL, followup)
    await emu.user_message(GENERAL, "chatting without the bot", user="U0BOB")
    other = await emu.user_message(GENERAL, "a thread without the bot", user="U0BOB")
    await emu.user_message(GENERAL, "a reply in it", user="U0ALICE", thread_ts=other)
    await bridge.settle()

    assert llm_calls == 2 and len(bridge.llm.requests) == 2
    assert bridge.bot_messages(GENERAL, other) == []


async def test_other_bots_are_answered_when_allowed(make_bridge: Factory) -> None:
    bridge = await make_bridge(ignore_other_bots=False)
    ts = await bridge.emu.bot_message(DM, "hello from a bot", channel_type="im")
    await bridge.reply_done(DM, ts)
    assert [m.rendered for m in bridge.bot_messages(DM, ts)] == ["You said: hello from a bot"]


async def test_requests_with_a_bad_missing_or_stale_signature_get_401(make_bridge: Factory) -> None:
    bridge = await make_bridge(mode="http")
    emu = bridge.emu
    message = Message(ts=emu.workspace.next_ts(), channel=DM, text="hi", user="U0ALICE")
    emu.workspace.add(message)
    body = json.dumps(event_callback(emu.identity, message_event(message, "im"))).encode()

    assert await emu.post_signed(body, signature="v0=" + "0" * 64) == 401
    assert await emu.post_signed(body, sign=False) == 401
    assert await emu.post_signed(body, timestamp=int(time.time()) - 600) == 401
    await bridge.settle()
    assert bridge.llm.requests == [] and "chat.postMessage" not in emu.stats.calls
    assert "assistant.threads.setStatus" not in emu.stats.calls

    assert await emu.post_signed(body) == 200  # the same body, signed: answered
    await bridge.reply_done(DM, message.ts)
    assert len(bridge.llm.requests) == 1


async def test_events_nobody_handles_are_acknowledged_so_slack_does_not_retry(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(mode="http")
    reaction = {"type": "reaction_added", "user": "U0ALICE", "reaction": "tada",
                "item": {"type": "message", "channel": GENERAL, "ts": "1.000001"}}  # fmt: skip
    delivery = await bridge.emu.deliver(reaction)
    await bridge.settle()
    assert [attempt.http_status for attempt in delivery.attempts] == [200]


async def test_first_mention_mid_thread_imports_the_earlier_messages_once(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    bot_client = AsyncWebClient(token=emu.identity.bot_token, base_url=emu.api_base_url)
    root = await emu.user_message(GENERAL, "Which database should we use?", user="U0BOB")
    await emu.user_message(GENERAL, "I'd say SQLite & keep it simple", user="U0ALICE",
                           thread_ts=root)  # fmt: skip
    await emu.bot_message(GENERAL, "build passed", thread_ts=root, username="ci")
    await bot_client.chat_postMessage(channel=GENERAL, thread_ts=root, text="(an earlier answer)")
    await bridge.settle()
    assert bridge.llm.requests == []  # nobody asked the bot yet

    bridge.llm.script(ScriptedReply("SQLite is fine."), ScriptedReply("Yes."))
    mention = await emu.user_message(GENERAL, f"<@{BOT}> what do you think?", user="U0BOB",
                                     thread_ts=root)  # fmt: skip
    await bridge.reply_done(GENERAL, root)
    assert bridge.llm_turns() == [
        ("user", "Which database should we use?"),
        ("user", "I'd say SQLite & keep it simple"),
        ("user", "build passed"),
        ("assistant", "(an earlier answer)"),
        ("user", "what do you think?"),
    ]
    await emu.user_message(GENERAL, "sure?", user="U0BOB", thread_ts=root)
    await bridge.reply_done(GENERAL, root, replies=2)

    assert bridge.llm_turns()[-3:] == [
        ("user", "what do you think?"),
        ("assistant", "SQLite is fine."),
        ("user", "sure?"),
    ]
    assert emu.stats.calls["conversations.replies"] == 1
    assert mention in [m.ts for m in emu.thread(GENERAL, root)]


async def test_a_new_assistant_thread_gets_the_suggested_prompts_and_an_answer(
    make_bridge: Factory,
) -> None:
    prompts = ["Summarise this channel", "Draft a reply to the last message"]
    bridge = await make_bridge(suggested_prompts=prompts)
    emu = bridge.emu
    thread = await emu.start_assistant_thread("U0ALICE", DM)
    await bridge.settle()
    shown = emu.suggested_prompts[(DM, thread)]["prompts"]
    assert [p["message"] for p in shown] == prompts
    assert all(0 < len(p["title"]) <= 40 for p in shown)

    await emu.user_message(DM, prompts[0], user="U0ALICE", thread_ts=thread)
    await bridge.reply_done(DM, thread)
    assert [m.rendered for m in bridge.bot_messages(DM, thread)] == [f"You said: {prompts[0]}"]
    assert "conversations.replies" not in emu.stats.calls  # a new thread: nothing to read


async def test_without_prompts_a_new_assistant_thread_is_left_alone(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    await bridge.emu.start_assistant_thread("U0ALICE", DM)
    await bridge.settle()
    assert "assistant.threads.setSuggestedPrompts" not in bridge.emu.stats.calls


async def test_uninstalling_the_app_stops_the_bridge(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    await bridge.emu.deliver({"type": "app_uninstalled", "event_ts": "1.000001"})
    await bridge.settle()
    # Not a crash: the exit code tells a restart policy not to start it again (see deploy.md).
    assert isinstance(bridge.lifecycle.failure, AccessRevoked)
    assert "uninstalled" in str(bridge.lifecycle.failure)


async def test_socket_mode_reconnects_when_slack_asks_it_to(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    assert await emu.disconnect_socket() == 1
    await emu.wait_for(lambda: emu.stats.socket_connects == 2)
    await emu.wait_for_socket()
    ts = await emu.user_message(DM, "still there?", user="U0ALICE")
    await bridge.reply_done(DM, ts)
    assert [m.rendered for m in bridge.bot_messages(DM, ts)] == ["You said: still there?"]


@pytest.mark.parametrize("token", ["bot_token", "app_token"])
async def test_a_wrong_token_fails_the_start_with_slacks_error(
    make_bridge: Factory, token: str
) -> None:
    with pytest.raises(AccessRevoked, match="invalid_auth"):
        await make_bridge(**{token: SecretStr("xoxb-wrong" if token == "bot_token" else "xapp-x")})


async def test_messages_not_addressed_to_the_bot_reach_the_core_as_such(
    make_bridge: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    reads: list[object] = []
    get_chat = bridge.store.get_chat

    async def counted(key: Any) -> Any:
        reads.append(key)
        return await get_chat(key)

    monkeypatch.setattr(bridge.store, "get_chat", counted)
    top = await emu.user_message(GENERAL, "chatting without the bot", user="U0BOB")
    await emu.user_message(GENERAL, "a reply in it", user="U0ALICE", thread_ts=top)
    await bridge.settle()

    [channel] = bridge.intake.origins("chatting without the bot")
    assert channel == Origin("slack", "U0BOB", workspace="T0TEAM", channel=GENERAL,
                             addressed=False)  # fmt: skip
    [thread] = bridge.intake.origins("a reply in it")
    assert thread.thread == f"{GENERAL}/{top}" and not thread.addressed
    assert len(reads) == 1  # only the reply in a thread costs a read, not the channel message
    assert bridge.llm.requests == [] and "conversations.replies" not in emu.stats.calls

    mention = await emu.user_message(GENERAL, f"<@{BOT}> hello", user="U0BOB")
    dm = await emu.user_message(DM, "hi in private", user="U0ALICE")
    await bridge.reply_done(GENERAL, mention)
    await bridge.reply_done(DM, dm)
    assert all(o.addressed for o in bridge.intake.origins("hello"))  # message and app_mention
    [private] = bridge.intake.origins("hi in private")
    assert private.is_dm and private.addressed and private.thread == ""
    await emu.user_message(GENERAL, "thanks", user="U0BOB", thread_ts=mention)
    await bridge.reply_done(GENERAL, mention, replies=2)
    [followup] = bridge.intake.origins("thanks")
    assert followup.addressed and followup.thread == f"{GENERAL}/{mention}"


async def test_a_channel_whose_trigger_is_always_is_answered_without_mentions(
    make_bridge: Factory,
) -> None:
    overrides = [{"channel": GENERAL, "trigger": "always", "native_streaming": "never"}]
    bridge = await make_bridge(sections={"overrides": overrides})
    emu = bridge.emu
    root = await emu.user_message("C0RANDOM", "not here", user="U0BOB")
    ts = await emu.user_message(GENERAL, "anyone?", user="U0BOB")
    await bridge.reply_done(GENERAL, ts)
    assert [m.rendered for m in bridge.bot_messages(GENERAL, ts)] == ["You said: anyone?"]
    # The channel's own setting: posted and edited, not streamed.
    assert "chat.startStream" not in emu.stats.calls and emu.stats.calls["chat.postMessage"] == 1
    assert bridge.bot_messages("C0RANDOM", root) == []
    assert [o.addressed for o in bridge.intake.origins("anyone?")] == [False]


async def test_prepare_reads_a_thread_only_once_the_message_is_admitted(
    make_bridge: Factory,
) -> None:
    overrides = [{"channel": GENERAL, "trigger": "always"}]
    bridge = await make_bridge(sections={"overrides": overrides})
    emu = bridge.emu
    emu.echo_own_messages = False
    bot_client = AsyncWebClient(token=emu.identity.bot_token, base_url=emu.api_base_url)
    # A thread the bot has no chat for (its root was posted before the bridge knew it).
    root = (await bot_client.chat_postMessage(channel="C0RANDOM", text="an old post"))["ts"]
    await emu.user_message("C0RANDOM", "a reply without the bot", user="U0BOB", thread_ts=root)
    await bridge.settle()
    assert "conversations.replies" not in emu.stats.calls  # not admitted: nothing read

    root = (await bot_client.chat_postMessage(channel=GENERAL, text="the weekly digest"))["ts"]
    await emu.user_message(GENERAL, "what changed?", user="U0BOB", thread_ts=root)
    await bridge.reply_done(GENERAL, root)
    assert emu.stats.calls["conversations.replies"] == 1
    assert bridge.llm_turns() == [("assistant", "the weekly digest"), ("user", "what changed?")]


async def test_a_message_over_a_limit_gets_a_notice_only_its_author_sees(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(sections={"limits": {"user_messages_per_minute": 1}})
    emu = bridge.emu
    ts = await emu.user_message(GENERAL, f"<@{BOT}> one", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)
    await emu.user_message(GENERAL, "two", user="U0ALICE", thread_ts=ts)
    await bridge.settle()

    [notice] = emu.ephemerals("U0ALICE", GENERAL)
    assert notice.thread_ts == ts and notice.author == BOT
    assert notice.rendered.startswith("⏳ _Not answered: ")
    assert emu.ephemerals("U0BOB") == [] and len(bridge.llm.requests) == 1
    assert [c.method for c in emu.calls_to("chat.postEphemeral")] == ["chat.postEphemeral"]
