"""Replies end to end: a mention, a follow-up, a DM, each answered once and streamed in place."""

from __future__ import annotations

from sandbox.llm_server import ScriptedReply
from sandbox.slack_emulator import Message
from sandbox.slack_emulator.events import message_event
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Factory

REPLY = (
    "**Sure.** Here is a reply with a [link](https://example.com), a list:\n\n"
    "- one\n- two\n\nand `code`, long enough to need several edits while it streams in."
)


async def test_a_mention_shows_the_status_then_streams_the_reply_into_its_thread(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(REPLY, tokens_per_second=150))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> tell me something", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.rendered == REPLY and not reply.is_streaming
    assert len(bridge.llm.requests) == 1  # app_mention and message: one event answered
    assert bridge.llm_turns() == [("user", "tell me something")]
    methods = [call.method for call in emu.calls if call.method.startswith(("chat.", "assist"))]
    assert methods[:3] == [
        "assistant.threads.setStatus",  # the indicator first,
        "chat.startStream",  # then the stream (which clears it on Slack),
        "assistant.threads.setStatus",  # so it is set again until the reply is done
    ]
    assert methods.count("chat.appendStream") >= 2 and "chat.update" not in methods
    [start] = emu.calls_to("chat.startStream")
    assert start.args["thread_ts"] == ts
    assert (start.args["recipient_user_id"], start.args["recipient_team_id"]) == (
        "U0ALICE",
        "T0TEAM",
    )
    statuses = bridge.status_calls(GENERAL, ts)
    assert statuses[0] == "is thinking…" and statuses[-1] == ""
    assert emu.status(GENERAL, ts) == ""


async def test_without_native_streaming_a_placeholder_is_edited_into_the_reply(
    make_bridge: Factory,
) -> None:
    loading = ["Reading the thread…", "Writing…"]
    bridge = await make_bridge(native_streaming="never", loading_messages=loading)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(REPLY, tokens_per_second=150))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> hi", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.rendered == REPLY and reply.edits >= 2
    assert reply.blocks == [{"type": "markdown", "text": REPLY}]
    assert "**" not in reply.text and "Sure." in reply.text  # the plain-text fallback
    [placeholder] = emu.calls_to("chat.postMessage")
    assert placeholder.args["thread_ts"] == ts and "chat.startStream" not in emu.stats.calls
    methods = [c.method for c in emu.calls if c.method.startswith(("chat.", "assist"))]
    assert methods[:3] == [
        "assistant.threads.setStatus",
        "chat.postMessage",
        "assistant.threads.setStatus",
    ]
    assert bridge.status_calls(GENERAL, ts)[-1] == "" and emu.status(GENERAL, ts) == ""
    shown = emu.calls_to("assistant.threads.setStatus")[0].args
    assert shown["status"] == "is thinking…" and shown["loading_messages"] == loading


async def test_a_workspace_without_streaming_falls_back_once_and_is_remembered(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()  # native_streaming = "auto"
    emu = bridge.emu
    emu.native_streaming = False  # chat.startStream answers missing_scope
    bridge.llm.script(ScriptedReply("First answer."), ScriptedReply("Second answer."))
    first = await emu.user_message(GENERAL, f"<@{BOT}> one", user="U0ALICE")
    await bridge.reply_done(GENERAL, first)
    second = await emu.user_message(GENERAL, f"<@{BOT}> two", user="U0ALICE")
    await bridge.reply_done(GENERAL, second)

    assert [m.rendered for m in bridge.bot_messages(GENERAL, first)] == ["First answer."]
    assert [m.rendered for m in bridge.bot_messages(GENERAL, second)] == ["Second answer."]
    assert emu.stats.calls["chat.startStream"] == 1  # tried once in this workspace


async def test_a_follow_up_in_the_thread_needs_no_mention_and_sees_the_whole_thread(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("Paris."), ScriptedReply("About two million."))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> capital of France?", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)
    await emu.user_message(GENERAL, "and its population?", user="U0BOB", thread_ts=ts)
    await bridge.reply_done(GENERAL, ts, replies=2)

    assert [m.rendered for m in bridge.bot_messages(GENERAL, ts)] == [
        "Paris.",
        "About two million.",
    ]
    assert bridge.llm_turns() == [
        ("user", "capital of France?"),
        ("assistant", "Paris."),
        ("user", "and its population?"),
    ]


async def test_a_dm_is_answered_in_the_thread_it_starts_and_gets_a_title(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(titles=True)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("Hello Alice!"), ScriptedReply("Greeting Alice"))
    ts = await emu.user_message(DM, "hello there", user="U0ALICE")
    await bridge.reply_done(DM, ts)
    await bridge.responder.wait_background()  # the title is made after the reply

    assert [m.rendered for m in bridge.bot_messages(DM, ts)] == ["Hello Alice!"]
    assert emu.titles[(DM, ts)] == "Greeting Alice"
    bridge.llm.script(ScriptedReply("A new topic."))
    second = await emu.user_message(DM, "something else", user="U0ALICE")
    await bridge.reply_done(DM, second)
    # Each top-level DM is a conversation of its own, like a new chat in the assistant pane.
    assert bridge.llm_turns() == [("user", "something else")]


async def test_a_retried_event_is_answered_once(make_bridge: Factory, mode: str) -> None:
    bridge = await make_bridge(mode=mode)
    emu = bridge.emu
    message = Message(
        ts=emu.workspace.next_ts(), channel=DM, text="once please", user="U0ALICE", team="T0TEAM"
    )
    emu.workspace.add(message)
    delivery = await emu.deliver(message_event(message, "im"), retries=2, retry_reason="timeout")
    await bridge.reply_done(DM, message.ts)

    assert [a.retry_num for a in delivery.attempts] == [0, 1, 2]
    assert len(bridge.llm.requests) == 1
    assert [m.rendered for m in bridge.bot_messages(DM, message.ts)] == ["You said: once please"]
