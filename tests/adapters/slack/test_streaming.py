"""The two ways a reply is written (native stream, chat.update) under expiry, 429s, long replies
and a model that tries to ping everyone."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from adapters.slack.formatting import ZERO_WIDTH_SPACE
from bridge.domain import ChatKey, MessageStatus, Role
from sandbox.llm_server import ScriptedReply
from tests.adapters.slack.conftest import BOT, GENERAL, Factory

WORDS = " ".join(f"word{i}" for i in range(100)) + "."
BROADCAST = re.compile(r"<!(?:here|channel|everyone|subteam)|@(?:here|channel|everyone)", re.I)


async def test_a_stream_that_expires_mid_reply_is_finished_with_chat_update(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=60))  # about two seconds
    ts = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")

    def streaming() -> Any:
        found = [m for m in bridge.bot_messages(GENERAL, ts) if m.is_streaming]
        return found[0] if found and len(found[0].text) > 40 else None

    stream = await emu.wait_for(streaming)
    emu.expire_stream(GENERAL, stream.ts)  # as Slack does after about five minutes
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.ts == stream.ts and reply.rendered == WORDS
    assert "message_not_in_streaming_state" in [c.error for c in emu.calls_to("chat.appendStream")]
    updates = emu.calls_to("chat.update")
    assert updates and {c.args["ts"] for c in updates} == {stream.ts}
    # From then on the reply is edited like any other: with a cursor until it is done.
    assert any(c.args["blocks"][0]["text"].endswith(" ▌") for c in updates)
    assert "chat.postMessage" not in emu.stats.calls
    chat = await bridge.store.get_chat(ChatKey("slack", "T0TEAM", GENERAL, ts))
    assert chat is not None
    [answer] = [m for m in await bridge.store.messages(chat.id) if m.role is Role.ASSISTANT]
    assert answer.content == WORDS and answer.status is MessageStatus.COMPLETE
    assert answer.platform_message_ids == (stream.ts,)


async def test_a_429_storm_on_chat_update_delays_text_but_never_loses_or_doubles_it(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(native_streaming="never")
    emu = bridge.emu
    emu.inject_429("chat.update", 3, retry_after=1)
    first, second = WORDS, WORDS.replace("word", "term")
    bridge.llm.script(
        ScriptedReply(first, tokens_per_second=150), ScriptedReply(second, tokens_per_second=150)
    )
    one, two = await asyncio.gather(
        emu.user_message(GENERAL, f"<@{BOT}> one", user="U0ALICE"),
        emu.user_message(GENERAL, f"<@{BOT}> two", user="U0BOB"),
    )
    await bridge.reply_done(GENERAL, one)
    await bridge.reply_done(GENERAL, two)

    shown = {m.rendered for t in (one, two) for m in bridge.bot_messages(GENERAL, t)}
    assert shown == {first, second}
    assert emu.stats.rate_limited["chat.update"] == 3
    assert emu.stats.calls["chat.postMessage"] == 2  # the two placeholders, nothing re-posted


async def test_a_429_on_stopping_a_stream_waits_out_retry_after_and_the_reply_still_ends(
    make_bridge: Factory,
) -> None:
    # chat.stopStream has its own tier (Tier 2): its 429 blocks the workspace's stop budget,
    # and the stop is tried again after Retry-After, not at once and not never.
    bridge = await make_bridge()
    emu = bridge.emu
    emu.inject_429("chat.stopStream", 1, retry_after=2)
    bridge.llm.script(ScriptedReply(WORDS, tokens_per_second=200))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> count", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.rendered == WORDS and not reply.is_streaming
    stops = emu.calls_to("chat.stopStream")
    assert [c.http_status for c in stops] == [429, 200]
    assert stops[1].at - stops[0].at >= 2.0
    # Both stops drew from the workspace's stop budget, which took the 429.
    assert bridge.responder.scheduler.stats("slack:chat.stopStream:T0TEAM") == (2, 1)


@pytest.mark.parametrize("native_streaming", ["auto", "never"])
async def test_broadcast_mentions_from_the_model_ping_no_one(
    make_bridge: Factory, native_streaming: str
) -> None:
    bridge = await make_bridge(native_streaming=native_streaming)
    emu = bridge.emu
    # The first chunk is shown at once: a stream that had sent "@he" could not append the rest
    # of the defused "@here" (a zero-width space goes right after the "@").
    chunks = ["Heads up @he", "re and <!chan", "nel>, <!every", "one>, ",
              "<!subteam^S0DEVS|devs> and @Ever", "yone. Done."]  # fmt: skip
    text = "".join(chunks)
    bridge.llm.script(ScriptedReply(text, chunks=chunks, tokens_per_second=15))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> announce it", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    [reply] = bridge.bot_messages(GENERAL, ts)
    assert reply.rendered.replace(ZERO_WIDTH_SPACE, "") == text  # reads the same
    assert not BROADCAST.search(reply.rendered) and not BROADCAST.search(reply.text)
    for call in emu.calls:
        for sent in _texts(call.args):
            assert not BROADCAST.search(sent), (call.method, sent)
    if native_streaming == "auto":  # streamed to the end: a held-back "@he" never had to change
        assert "chat.update" not in emu.stats.calls and not reply.is_streaming


def _texts(args: dict[str, Any]) -> list[str]:
    found = [str(args[key]) for key in ("text", "markdown_text") if key in args]
    for item in list(args.get("blocks") or ()) + list(args.get("chunks") or ()):
        if isinstance(item, dict) and "text" in item:
            found.append(str(item["text"]))
    return found


@pytest.mark.parametrize(("native_streaming", "size"), [("never", 7_000), ("auto", 13_000)])
async def test_a_long_reply_continues_in_further_messages(
    make_bridge: Factory, native_streaming: str, size: int
) -> None:
    bridge = await make_bridge(native_streaming=native_streaming)
    emu = bridge.emu
    paragraph = " ".join(f"w{j}" for j in range(150))
    paragraphs = [f"Part {i}: {paragraph}" for i in range(size // len(paragraph) + 1)]
    text = "\n\n".join(paragraphs)
    chunks = [p + "\n\n" for p in paragraphs[:-1]] + [paragraphs[-1]]
    bridge.llm.script(ScriptedReply(text, chunks=chunks, tokens_per_second=25))
    ts = await emu.user_message(GENERAL, f"<@{BOT}> write a lot", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    replies = bridge.bot_messages(GENERAL, ts)
    assert len(replies) >= 2 and not any(m.is_streaming for m in replies)
    assert "\n\n".join(m.rendered for m in replies) == text
    if native_streaming == "never":
        assert all(len(m.rendered.encode()) <= 3_500 for m in replies)
    else:
        assert all(len(m.rendered) <= 10_000 for m in replies)
        assert emu.stats.calls["chat.startStream"] == len(replies)


async def test_always_native_never_posts_instead_and_a_failed_reply_clears_the_status(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(native_streaming="always")
    emu = bridge.emu
    emu.native_streaming = False  # chat.startStream answers missing_scope
    ts = await emu.user_message(GENERAL, f"<@{BOT}> hello", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)

    assert bridge.bot_messages(GENERAL, ts) == []
    assert "chat.postMessage" not in emu.stats.calls
    assert bridge.status_calls(GENERAL, ts) == ["is thinking…", ""]
    assert emu.status(GENERAL, ts) == ""


async def test_a_burst_of_replies_keeps_the_status_line_within_its_budget(
    make_bridge: Factory,
) -> None:
    # Twelve threads at once in a workspace that takes 30 setStatus calls a minute. Each reply
    # used to make three (set, set again after its first post, clear): 36, six of them 429s.
    bridge = await make_bridge(status_rate_per_minute=30)
    emu = bridge.emu
    emu.rate_limit("assistant.threads.setStatus", 30)
    text = "A short answer, streamed in a few pieces, in every one of the threads."
    bridge.llm.script(*[ScriptedReply(text, tokens_per_second=40) for _ in range(12)])
    channels = [f"C0TEAM{i:02}" for i in range(12)]
    roots = await asyncio.gather(
        *(emu.user_message(channel, f"<@{BOT}> hi", user="U0ALICE") for channel in channels)
    )
    threads = list(zip(channels, roots, strict=True))

    def finished() -> bool:
        for channel, ts in threads:
            shown = bridge.bot_messages(channel, ts)
            if len(shown) != 1 or shown[0].rendered != text or shown[0].is_streaming:
                return False
            if bridge.status_calls(channel, ts)[-1:] not in ([], [""]):
                return False  # its status is still to be cleared
        return True

    await emu.wait_for(finished, timeout=20)
    await bridge.settle()
    assert emu.stats.rate_limited.get("assistant.threads.setStatus", 0) == 0
    assert len(emu.calls_to("assistant.threads.setStatus")) <= 30
    assert all(emu.status(channel, ts) == "" for channel, ts in threads)
    # While a reply streamed, the status was back under it (set again after its first post).
    assert all("is thinking…" in bridge.status_calls(channel, ts) for channel, ts in threads)
