"""Files on Discord messages: attachment objects reach the core as AttachmentRefs (live, from the
catch-up's history reads and through a cluster handoff), and `adapter.files` downloads them from
the emulated CDN the way Discord serves them: signed URLs, no token, 404 once expired."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from adapters.discord.handoff import HandedMessage, from_payload, to_payload
from bridge.domain import AttachmentRef, ChatKey, InboundMessage
from bridge.policy.origin import Origin
from bridge.ports import FileUnavailable
from sandbox.discord_emulator import FileUpload
from tests.adapters.discord.conftest import Bridge, BridgeFactory, Scene, wait_until


def png(width: int = 3, height: int = 2) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, format="PNG")
    return out.getvalue()


async def received(bridge: Bridge, message_id: int) -> InboundMessage:
    inbound: InboundMessage = await wait_until(
        lambda: next(
            (m for m, _ in bridge.core.intake.received if m.platform_message_id == str(message_id)),
            None,
        )
    )
    return inbound


async def test_files_on_a_mention_reach_the_core_and_download_without_a_token(
    make_bridge: BridgeFactory,
) -> None:
    image, log = png(), b"ERROR boom\n" * 300
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await emu.user_message(
            bridge.channel_id,
            bridge.alice,
            "what is wrong here?",
            mention_bot=True,
            attachments=[FileUpload("screen.png", image), FileUpload("app.log", log, "text/plain")],
        )
        inbound = await received(bridge, asked)
        await bridge.reply_shown("You said: what is wrong here?")
        got = [await bridge.adapter.files.fetch(ref, 1_000_000) for ref in inbound.attachments]
        await bridge.settled()

    shown = emu.message(asked)
    assert shown is not None
    assert inbound.text == "what is wrong here?"
    assert [(r.name, r.size, r.mime_type) for r in inbound.attachments] == [
        ("screen.png", len(image), "image/png"),
        ("app.log", len(log), "text/plain"),
    ]
    assert [r.id for r in inbound.attachments] == [a["id"] for a in shown.attachments]
    # Discord's attachment objects: the image's size read on upload, signed CDN URLs.
    assert (shown.attachments[0]["width"], shown.attachments[0]["height"]) == (3, 2)
    for ref in inbound.attachments:
        query = parse_qs(urlsplit(ref.source).query)
        assert set(query) == {"ex", "is", "hm"}
        assert int(query["ex"][0], 16) - int(query["is"][0], 16) == 24 * 3600
    assert got == [image, log]
    assert [(d.status, d.completed, d.with_token) for d in emu.downloads] == [
        (200, True, False),
        (200, True, False),
    ]


async def test_a_file_without_text_is_answerable_when_addressed_to_the_bot(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        notes = [FileUpload("notes.txt", b"remember the milk")]
        dm = emu.dm_channel(bridge.alice)
        in_dm = await emu.user_message(dm, bridge.alice, "", attachments=notes)
        mentioned = await emu.user_message(
            bridge.channel_id, bridge.alice, "", mention_bot=True, attachments=notes
        )
        chatter = await emu.user_message(bridge.channel_id, bridge.bob, "", attachments=notes)
        for message_id in (in_dm, mentioned, chatter):
            await received(bridge, message_id)
        await bridge.settled()

    intake = bridge.core.intake
    for message_id, addressed in ((in_dm, True), (mentioned, True), (chatter, False)):
        inbound = next(m for m, _ in intake.received if m.platform_message_id == str(message_id))
        assert inbound.text == "" and [r.name for r in inbound.attachments] == ["notes.txt"]
        assert intake.origin_of(message_id).addressed is addressed


async def test_an_expired_link_is_refused_with_a_clear_message(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await emu.user_message(
            bridge.channel_id, bridge.alice, "later", mention_bot=True,
            attachments=[FileUpload("old.txt", b"gone tomorrow")],
        )  # fmt: skip
        [ref] = (await received(bridge, asked)).attachments
        await bridge.settled()
        emu.expire_attachment_links()
        with pytest.raises(FileUnavailable) as refused:
            await bridge.adapter.files.fetch(ref, 1_000_000)

    assert not refused.value.too_large
    assert "expired" in str(refused.value) and "old.txt" in str(refused.value)
    assert "This content is no longer available." in str(refused.value)
    assert [(d.status, d.bytes_sent) for d in emu.downloads] == [(404, 0)]


async def test_a_file_over_the_limit_is_never_downloaded_or_stops_early(
    make_bridge: BridgeFactory,
) -> None:
    big = b"x" * 20_000_000
    limit = 1_000_000
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await emu.user_message(
            bridge.channel_id, bridge.alice, "huge", mention_bot=True,
            attachments=[FileUpload("huge.bin", big)],
        )  # fmt: skip
        [ref] = (await received(bridge, asked)).attachments
        await bridge.settled()
        files = bridge.adapter.files

        # Announced over the limit: no request at all.
        with pytest.raises(FileUnavailable) as announced:
            await files.fetch(ref, limit)
        assert announced.value.too_large and emu.downloads == []

        # A size that lied, sent without Content-Length: counted while read, cut past the limit.
        emu.cdn.omit_length = True
        with pytest.raises(FileUnavailable) as counted:
            await files.fetch(replace(ref, size=10), limit)
        assert counted.value.too_large
        [download] = await wait_until(lambda: emu.downloads or None)
        assert download.status == 200 and not download.completed
        assert download.bytes_sent < len(big)

        # With Content-Length: refused on the header, the body not read.
        emu.cdn.omit_length = False
        with pytest.raises(FileUnavailable) as headed:
            await files.fetch(replace(ref, size=10), limit)
        assert headed.value.too_large and "20000000 bytes" in str(headed.value)


async def test_only_discords_cdn_is_fetched_from(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        ref = AttachmentRef("x.txt", 3, "text/plain", "https://evil.example/x.txt?ex=1&is=1&hm=1")
        with pytest.raises(FileUnavailable, match="not Discord's CDN"):
            await bridge.adapter.files.fetch(ref, 1_000)


async def test_malformed_attachments_are_dropped_and_at_most_ten_kept(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload as Discord might send it (the emulator's people cannot attach more than 10)."""
    async with make_bridge() as bridge:
        emu = bridge.emu
        cdn, world = emu.cdn, emu.world
        channel = world.channels[bridge.channel_id]
        good = [
            cdn.attachment(
                cdn.store(world.snowflakes.next(), channel.id, FileUpload(f"{i}.txt", b"ok"))
            )
            for i in range(12)
        ]
        broken = [
            {**good[0], "id": str(world.snowflakes.next()), "size": -1},
            {**good[0], "id": str(world.snowflakes.next()), "url": "ftp://files.example/a.txt"},
            {**good[0], "id": str(world.snowflakes.next()), "filename": ""},
        ]
        content = f"<@{bridge.bot_id}> many files"
        with caplog.at_level(logging.WARNING, logger="adapters.discord.files"):
            message = world.post_message(channel, bridge.alice, content, attachments=broken + good)
            await emu.feed.message_created(message)
            inbound = await received(bridge, message.id)
            await bridge.settled()

    assert [r.name for r in inbound.attachments] == [f"{i}.txt" for i in range(10)]
    assert caplog.text.count("malformed") == 3
    assert "has 12 attachments; reading the first 10" in caplog.text


async def test_files_missed_while_down_come_from_history_with_fresh_links(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    sent = await emu.user_message(
        scene.channel_id, scene.alice, "read this", mention_bot=True, age=60,
        attachments=[FileUpload("notes.md", b"# notes")],
    )  # fmt: skip
    emu.expire_attachment_links()  # links issued back then expired; a history read signs anew
    async with make_bridge(catch_up_minutes=10) as bridge:
        catching_up = bridge.adapter.catching_up
        assert catching_up is not None
        await asyncio.wait_for(catching_up, timeout=30)
        inbound = await received(bridge, sent)
        data = await bridge.adapter.files.fetch(inbound.attachments[0], 1_000)
        await bridge.settled()

    assert [r.name for r in inbound.attachments] == ["notes.md"] and data == b"# notes"


def test_a_handoff_carries_the_files_and_reads_the_previous_version() -> None:
    refs = (
        AttachmentRef("a.png", 10, "image/png", "https://cdn.discordapp.com/a.png?ex=1", "11"),
        AttachmentRef("b.log", 20, "", "https://cdn.discordapp.com/b.log?ex=2", "12"),
    )
    inbound = InboundMessage(
        "message:5", ChatKey("discord", "1", "2"), "3", "look", "5", "alice", attachments=refs
    )
    handed = HandedMessage(
        inbound, Origin("discord", "3", "1", "2"), False, guild_id=1, channel_id=2, message_id=5
    )
    payload = to_payload(handed)
    assert payload["v"] == 2
    assert from_payload(payload) == handed

    without = replace(handed, inbound=replace(inbound, attachments=()))
    plain = to_payload(without)
    # What the previous release writes and reads.
    assert plain["v"] == 1 and "attachments" not in plain
    assert from_payload(plain) == without
    with pytest.raises(ValueError, match="version 3"):
        from_payload({**payload, "v": 3})
