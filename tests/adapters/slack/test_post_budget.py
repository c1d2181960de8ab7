"""New messages in a channel: a burst at once, and a 429 costs one retry of the post, never text."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.llm_server import ScriptedReply
from tests.adapters.slack.conftest import BOT, GENERAL, Bridge, Factory

REPLY = "A reply long enough to stream in a few pieces, every word of it shown in the end."


def post_calls(bridge: Bridge, method: str, thread_ts: str) -> list[int]:
    """The HTTP status of each call of `method` (a post) in one thread."""
    return [c.http_status for c in bridge.emu.calls_to(method) if c.args["thread_ts"] == thread_ts]


async def mention_at_once(bridge: Bridge, count: int, wave: int) -> list[str]:
    emu = bridge.emu
    texts = [f"{REPLY} ({wave}.{i})" for i in range(count)]
    bridge.llm.script(*[ScriptedReply(text, tokens_per_second=200) for text in texts])
    roots = await asyncio.gather(
        *(emu.user_message(GENERAL, f"<@{BOT}> q{wave}.{i}", user=f"U0W{wave}{i:02}")
          for i in range(count))
    )  # fmt: skip
    for ts in roots:
        await bridge.reply_done(GENERAL, ts)
    return texts


@pytest.mark.parametrize(
    ("native_streaming", "method"),
    [("never", "chat.postMessage"), ("always", "chat.startStream")],
)
async def test_a_post_answered_429_is_sent_again_after_retry_after_and_the_reply_is_whole(
    make_bridge: Factory, native_streaming: str, method: str
) -> None:
    bridge = await make_bridge(native_streaming=native_streaming)
    emu = bridge.emu
    emu.inject_429(method, 1, retry_after=1)
    bridge.llm.script(ScriptedReply(REPLY, tokens_per_second=200))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> hello", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.rendered == REPLY and not reply.is_streaming
    assert post_calls(bridge, method, ts) == [429, 200]  # one retry, one message
    [refused, posted] = emu.calls_to(method)
    assert posted.at - refused.at >= 1.0  # not before Retry-After
    key = f"slack:chat.postMessage:T0TEAM:{GENERAL}"
    assert bridge.responder.scheduler.stats(key) == (2, 1)


async def test_at_one_post_a_second_refused_posts_are_retried_once_and_the_lesson_is_kept(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(native_streaming="never")
    emu = bridge.emu
    emu.limit_posts(burst=1)  # strictly one a second: the bridge assumes a burst of 20

    first = await mention_at_once(bridge, 5, wave=1)
    refused_first = emu.stats.rate_limited.get("chat.postMessage", 0)
    second = await mention_at_once(bridge, 5, wave=2)

    roots = [r for r in emu.channel(GENERAL) if r.user != BOT]
    shown = sorted(m.rendered for root in roots for m in bridge.bot_messages(GENERAL, root.ts))
    assert shown == sorted(first + second)  # every reply whole, none doubled
    assert all(not m.is_streaming for root in roots for m in bridge.bot_messages(GENERAL, root.ts))
    # Five posts at once where one fits: up to four refused (those sent before the first 429 was
    # back), each sent again once.
    assert 1 <= refused_first <= 4
    for root in roots:
        assert post_calls(bridge, "chat.postMessage", root.ts)[-1] == 200
        assert post_calls(bridge, "chat.postMessage", root.ts).count(429) <= 1
    # The next five keep to one a second from the start: no 429 at all.
    assert emu.stats.rate_limited.get("chat.postMessage", 0) == refused_first
