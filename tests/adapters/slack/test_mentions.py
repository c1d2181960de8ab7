"""Model output pings no one: mentions the model writes reach Slack defused, streamed or edited."""

from __future__ import annotations

import html

import pytest

from adapters.slack.formatting import ZERO_WIDTH_SPACE
from sandbox.llm_server import ScriptedReply
from tests.adapters.slack.conftest import BOT, GENERAL, Factory

# Cut where a mention is still undecided (`<`, `<@`, `<!sub`), so stream appends end there.
CHUNKS = [
    "Ask <",
    "@U0ALICE> about it, or <@",
    "W0BOB|bob>; the on-call group <!sub",
    "team^S0TEAM|@devs> knows too. <",
    "!here> please read this.",
]
REPLY = "".join(CHUNKS)


@pytest.mark.parametrize("native_streaming", ["auto", "never"])
async def test_mentions_in_the_reply_notify_nobody_and_read_the_same(
    make_bridge: Factory, native_streaming: str
) -> None:
    bridge = await make_bridge(native_streaming=native_streaming)
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(chunks=CHUNKS, tokens_per_second=10))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> who should I ask?", user="U0CAROL")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    # Every version Slack saw counts: a ping from a half-streamed text or an early edit would stay.
    assert reply.notified == ()
    assert reply.rendered.replace(ZERO_WIDTH_SPACE, "") == REPLY
    methods = [call.method for call in emu.calls]
    if native_streaming == "auto":
        assert methods.count("chat.appendStream") >= 2 and "chat.update" not in methods
        assert "chat.postMessage" not in methods
    else:
        assert "chat.startStream" not in methods and reply.edits >= 2
        # The notification fallback: escaped, so it reads the same and mentions no one.
        assert html.unescape(reply.text) == REPLY
    # The person who asked was notified of nothing either; only their own mention of the bot.
    assert emu.thread(GENERAL, ts)[0].notified == (BOT,)
