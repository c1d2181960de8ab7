"""Stop and feedback on Slack: the Stop button while a reply streams, Slack's feedback buttons under
a finished one, and what clicks, 🛑 reactions and Slack's own agent-session Stop do, through the
real Bolt app and the emulator."""

from __future__ import annotations

from typing import Any

from adapters.slack.controls import FEEDBACK_ACTION, STOP_ACTION
from bridge.controls import StopOutcome
from bridge.domain import ChatKey, Role, StoredMessage
from bridge.policy.origin import Origin
from sandbox.llm_server import ScriptedReply
from sandbox.slack_emulator import ShownMessage
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Bridge, Factory

WORDS = " ".join(f"word{i}" for i in range(120)) + "."
SLOW = 40  # tokens a second: a reply of WORDS streams for about three seconds
STOPPED = "⏹️ _Stopped._"


class VotingStore:
    """The SQL store, plus the vote-keeping the controls need (found by platform message id)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.votes: dict[tuple[int, str], str | None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def find_message(self, key: ChatKey, platform_message_id: str) -> StoredMessage | None:
        chat = await self._store.get_chat(key)
        if chat is None:
            return None
        for message in await self._store.messages(chat.id):
            if platform_message_id in message.platform_message_ids:
                return message  # type: ignore[no-any-return]
        return None

    async def record_vote(self, message_id: int, user: str, value: str | None) -> bool:
        changed = self.votes.get((message_id, user)) != value
        self.votes[(message_id, user)] = value
        return changed


def kinds(message: ShownMessage) -> list[str]:
    return [block["type"] for block in message.blocks or ()]


def action_ids(message: ShownMessage) -> list[str]:
    return [
        element.get("action_id", "")
        for block in message.blocks or ()
        for element in block.get("elements") or ()
        if isinstance(element, dict) and block["type"] in ("actions", "context_actions")
    ]


async def streaming_reply(bridge: Bridge, channel: str, root: str) -> ShownMessage:
    """The reply once it shows some text and is still being written."""

    def found() -> ShownMessage | None:
        replies = bridge.bot_messages(channel, root)
        if not replies:
            return None
        reply = replies[-1]
        return reply if "word3" in reply.rendered and "word119" not in reply.rendered else None

    result: ShownMessage = await bridge.emu.wait_for(found, timeout=10)
    return result


async def test_a_posted_reply_shows_stop_while_it_streams_and_feedback_when_done(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(controls=True, native_streaming="never")
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=SLOW * 3))
    root = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")

    streaming = await streaming_reply(bridge, GENERAL, root)
    assert action_ids(streaming) == [STOP_ACTION] and streaming.controls == ("[Stop]",)
    assert kinds(streaming) == ["markdown", "actions"]
    # The placeholder already had it: a reply can be stopped before its first word.
    [placeholder] = emu.calls_to("chat.postMessage")
    assert [b["type"] for b in placeholder.args["blocks"]] == ["markdown", "actions"]
    await bridge.reply_done(GENERAL, root)

    [reply] = bridge.bot_messages(GENERAL, root)
    assert kinds(reply) == ["markdown", "context_actions"]
    assert action_ids(reply) == [FEEDBACK_ACTION]
    assert reply.blocks is not None and reply.blocks[0]["text"] == WORDS  # the text as ever
    assert reply.text == WORDS  # and its notification fallback
    assert reply.rendered == WORDS and reply.controls == ("[👍] [👎]",)


async def test_the_asker_clicking_stop_stops_the_reply(make_bridge: Factory, mode: str) -> None:
    bridge = await make_bridge(mode=mode, controls=True, native_streaming="never")
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=SLOW))
    root = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")
    streaming = await streaming_reply(bridge, GENERAL, root)

    click = await emu.click("U0ALICE", GENERAL, streaming.ts, STOP_ACTION)
    assert click.acked
    await bridge.reply_done(GENERAL, root)

    [(origin, chat, message_id, outcome)] = bridge.controls.stops
    assert origin == Origin("slack", "U0ALICE", workspace="T0TEAM", channel=GENERAL,
                            thread=f"{GENERAL}/{root}", is_dm=False, addressed=True)  # fmt: skip
    assert chat == ChatKey("slack", "T0TEAM", GENERAL, root)
    assert (message_id, outcome) == (streaming.ts, StopOutcome.STOPPED)
    [reply] = bridge.bot_messages(GENERAL, root)
    assert reply.blocks is not None and reply.blocks[0]["text"].endswith(STOPPED)
    assert "word119" not in reply.rendered  # cut where it was
    assert action_ids(reply) == [FEEDBACK_ACTION]  # the text so far may be rated too


async def test_someone_else_clicking_stop_is_told_privately_and_the_reply_goes_on(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(controls=True, native_streaming="never")
    emu = bridge.emu
    emu.join(GENERAL, "U0BOB")
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=SLOW * 2))
    root = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")
    streaming = await streaming_reply(bridge, GENERAL, root)

    await emu.click("U0BOB", GENERAL, streaming.ts, STOP_ACTION)
    await bridge.reply_done(GENERAL, root)

    assert [s[3] for s in bridge.controls.stops] == [StopOutcome.REFUSED]
    [notice] = emu.ephemerals("U0BOB", GENERAL)
    assert "Only the person who asked" in notice.rendered and notice.thread_ts == root
    assert emu.ephemerals("U0ALICE") == []
    [reply] = bridge.bot_messages(GENERAL, root)
    assert reply.blocks is not None and reply.blocks[0]["text"] == WORDS


async def test_an_octagonal_sign_on_the_reply_stops_it(make_bridge: Factory) -> None:
    bridge = await make_bridge(controls=True, native_streaming="never")
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=SLOW))
    root = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")
    streaming = await streaming_reply(bridge, GENERAL, root)

    await emu.react("U0ALICE", GENERAL, streaming.ts, "octagonal_sign")
    await bridge.reply_done(GENERAL, root)

    [(origin, chat, message_id, outcome)] = bridge.controls.stops
    assert (origin.user, chat.thread, message_id, outcome) == (
        "U0ALICE",
        root,
        streaming.ts,
        StopOutcome.STOPPED,
    )
    [reply] = bridge.bot_messages(GENERAL, root)
    assert reply.blocks is not None and reply.blocks[0]["text"].endswith(STOPPED)


async def test_an_octagonal_sign_on_the_question_in_a_thread_stops_its_reply(
    make_bridge: Factory,
) -> None:
    # The question is a reply in a thread: Slack's reaction event names no thread, the adapter
    # remembers which thread the question is in.
    bridge = await make_bridge(controls=True)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("first answer"), ScriptedReply(WORDS, tokens_per_second=SLOW))
    root = await emu.user_message(GENERAL, f"<@{BOT}> hi", user="U0ALICE")
    await bridge.reply_done(GENERAL, root)
    question = await emu.user_message(GENERAL, "now count", user="U0ALICE", thread_ts=root)
    await streaming_reply(bridge, GENERAL, root)

    await emu.react("U0ALICE", GENERAL, question, "octagonal_sign")
    await bridge.reply_done(GENERAL, root, replies=2)

    [(_, chat, message_id, outcome)] = bridge.controls.stops
    assert (chat.thread, message_id, outcome) == (root, question, StopOutcome.STOPPED)
    # Other reactions stop nothing.
    await emu.react("U0ALICE", GENERAL, question, "thumbsup")
    await bridge.settle()
    assert len(bridge.controls.stops) == 1


async def test_a_native_stream_ends_with_feedback_buttons_from_stop_stream(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(controls=True, store_wrapper=VotingStore)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("A streamed answer.", tokens_per_second=50))
    root = await emu.user_message(DM, "hi", user="U0ALICE")
    await bridge.reply_done(DM, root)

    [reply] = bridge.bot_messages(DM, root)
    [stop] = emu.calls_to("chat.stopStream")
    assert [b["type"] for b in stop.args["blocks"]] == ["context_actions"]
    assert "chat.update" not in emu.stats.calls  # no Stop button to take away on a stream
    assert reply.rendered == "A streamed answer." and reply.controls == ("[👍] [👎]",)

    click = await emu.click("U0ALICE", DM, reply.ts, FEEDBACK_ACTION, choice="positive")
    await emu.click("U0ALICE", DM, reply.ts, FEEDBACK_ACTION, choice="negative")
    await bridge.settle()
    assert click.acked
    votes = [
        (o.user, o.is_dm, c.thread, m, v, changed) for o, c, m, v, changed in bridge.controls.votes
    ]
    assert votes == [
        ("U0ALICE", True, root, reply.ts, "up", True),
        ("U0ALICE", True, root, reply.ts, "down", True),
    ]
    chat = await bridge.store.get_chat(ChatKey("slack", "T0TEAM", DM, root))
    assert chat is not None
    [answer] = [m for m in await bridge.store.messages(chat.id) if m.role is Role.ASSISTANT]
    store = bridge.controls._store  # the VotingStore the controls were given
    assert store.votes == {(answer.id, "U0ALICE"): "down"}  # the last one counts


async def test_slacks_own_stop_on_an_agent_session_stops_the_reply(make_bridge: Factory) -> None:
    bridge = await make_bridge(controls=True)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=SLOW))
    root = await emu.user_message(DM, "count", user="U0ALICE")
    streaming = await streaming_reply(bridge, DM, root)
    assert streaming.is_streaming

    await emu.stop_agent_session("U0ALICE", DM, root)
    await bridge.reply_done(DM, root)

    [(origin, _, message_id, outcome)] = bridge.controls.stops
    assert (origin.user, origin.is_dm, message_id, outcome) == (
        "U0ALICE",
        True,
        streaming.ts,
        StopOutcome.STOPPED,
    )
    [reply] = bridge.bot_messages(DM, root)
    assert not reply.is_streaming and STOPPED in reply.rendered
    assert "word119" not in reply.rendered


async def test_a_click_on_an_element_the_message_does_not_show_is_impossible(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(controls=True, native_streaming="never")
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("Done."))
    root = await emu.user_message(GENERAL, f"<@{BOT}> hi", user="U0ALICE")
    await bridge.reply_done(GENERAL, root)
    [reply] = bridge.bot_messages(GENERAL, root)

    try:
        await emu.click("U0ALICE", GENERAL, reply.ts, STOP_ACTION)
    except ValueError as exc:
        assert "shows no element" in str(exc)
    else:
        raise AssertionError("the finished reply still shows its Stop button")


async def test_a_reply_in_several_messages_ends_with_one_set_of_feedback_buttons(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(controls=True, native_streaming="never")
    emu = bridge.emu
    paragraph = " ".join(f"w{j}" for j in range(150))
    paragraphs = [f"Part {i}: {paragraph}" for i in range(8)]
    text = "\n\n".join(paragraphs)
    chunks = [p + "\n\n" for p in paragraphs[:-1]] + [paragraphs[-1]]
    bridge.llm.script(ScriptedReply(text, chunks=chunks, tokens_per_second=25))
    root = await emu.user_message(GENERAL, f"<@{BOT}> write a lot", user="U0ALICE")
    await bridge.reply_done(GENERAL, root)

    replies = bridge.bot_messages(GENERAL, root)
    assert len(replies) >= 2
    assert "\n\n".join(m.blocks[0]["text"] for m in replies if m.blocks) == text
    assert [action_ids(m) for m in replies] == [[]] * (len(replies) - 1) + [[FEEDBACK_ACTION]]
    # Every message carried the Stop button while it was being written; one posted once the
    # reply had ended came with the feedback buttons at once, and no write followed it.
    posts = emu.calls_to("chat.postMessage")
    assert len(posts) == len(replies)
    kinds = [[b["type"] for b in post.args["blocks"][1:]] for post in posts]
    assert all(k == ["actions"] for k in kinds[:-1])
    assert kinds[-1] in (["actions"], ["context_actions"])
    if kinds[-1] == ["context_actions"]:
        assert not [c for c in emu.calls_to("chat.update") if c.args["ts"] == replies[-1].ts]
    # The feedback buttons went once, to the last message: no write took them away again.
    rated = [c for c in emu.calls_to("chat.update") if "context_actions" in str(c.args)]
    assert len(rated) <= 1
