"""Files on Slack messages: announced to the core as AttachmentRefs, downloaded with the bot token
only when the core asks, and refused the way Slack refuses them (its sign-in page)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from adapters.slack.events import BotIdentity, parse_message
from adapters.slack.files import MAX_FILES, parse_files
from adapters.slack.handoff import from_payload, to_payload
from bridge.domain import AttachmentRef
from bridge.ports import FileUnavailable
from sandbox.slack_emulator import UploadedFile
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Factory

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
BOT_IDENTITY = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM")


def received_files(bridge: Any, ts: str) -> tuple[AttachmentRef, ...]:
    """The files the core was told of (a mention arrives twice: the same files both times)."""
    found = {m.attachments for m, _ in bridge.intake.received if m.platform_message_id == ts}
    [attachments] = found
    return attachments


async def test_an_image_reaches_the_core_as_a_ref_and_downloads_with_the_bot_token(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode)
    emu = bridge.emu
    ts = await emu.user_message(
        GENERAL,
        f"<@{BOT}> what is wrong here?",
        files=[UploadedFile("error.png", PNG, "image/png")],
    )
    await bridge.reply_done(GENERAL, ts)

    [ref] = received_files(bridge, ts)
    [shared] = emu.workspace.find(GENERAL, ts).files  # type: ignore[union-attr]
    assert ref == AttachmentRef(
        name="error.png",
        size=len(PNG),
        mime_type="image/png",
        source=shared["url_private_download"],
        id=shared["id"],
    )
    assert not emu.downloaded(ref.id)  # announced only: downloading is the core's call
    assert await bridge.adapter.files.fetch(ref, 10_000_000) == PNG
    assert emu.downloaded(ref.id)


async def test_a_file_without_a_comment_is_a_message_to_answer(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    ts = await emu.user_message(DM, "", files=[UploadedFile("app.log", b"boom\n" * 10)])
    await bridge.reply_done(DM, ts)

    [inbound] = [m for m, _ in bridge.intake.received if m.platform_message_id == ts]
    assert inbound.text == "" and [f.name for f in inbound.attachments] == ["app.log"]
    assert inbound.attachments[0].mime_type == "text/plain"
    assert len(bridge.bot_messages(DM, ts)) == 1  # answered


async def test_without_files_read_slack_answers_its_sign_in_page_and_fetch_names_the_scope(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    emu.scopes.discard("files:read")
    ts = await emu.user_message(
        GENERAL, f"<@{BOT}> look", files=[UploadedFile("shot.png", PNG, "image/png")]
    )
    await bridge.reply_done(GENERAL, ts)
    [ref] = received_files(bridge, ts)

    with pytest.raises(FileUnavailable, match="files:read") as refused:
        await bridge.adapter.files.fetch(ref, 10_000_000)
    assert not refused.value.too_large
    assert [d.answer for d in emu.file_downloads] == ["sign_in"]
    assert not emu.downloaded(ref.id)


async def test_a_file_announced_over_the_limit_is_never_downloaded(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    ts = await emu.user_message(
        DM, "read this", files=[UploadedFile("big.log", b"x" * 300_000, "text/plain")]
    )
    await bridge.reply_done(DM, ts)
    [ref] = received_files(bridge, ts)

    with pytest.raises(FileUnavailable) as over:
        await bridge.adapter.files.fetch(ref, 100_000)
    assert over.value.too_large
    assert emu.file_downloads == []


async def test_a_download_that_grows_past_the_limit_stops_reading(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    emu.file_host.chunked = True  # no Content-Length: only counting what arrives tells
    big = b"y" * 16_000_000
    ts = await emu.user_message(DM, "huge", files=[UploadedFile("huge.log", big, "text/plain")])
    await bridge.reply_done(DM, ts)
    [ref] = received_files(bridge, ts)

    # Slack announced less than it serves (the file changed, or a proxy lies): the limit holds.
    understated = dataclasses.replace(ref, size=50_000)
    with pytest.raises(FileUnavailable) as over:
        await bridge.adapter.files.fetch(understated, 100_000)
    assert over.value.too_large
    [download] = emu.file_downloads
    await emu.wait_for(lambda: download.finished)
    assert download.authorized and not download.complete


async def test_the_token_never_follows_a_redirect_to_another_host(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    emu.file_host.redirect_host = "localhost"  # the same emulator under another host name
    ts = await emu.user_message(DM, "see", files=[UploadedFile("a.txt", b"hello", "text/plain")])
    await bridge.reply_done(DM, ts)
    [ref] = received_files(bridge, ts)

    assert await bridge.adapter.files.fetch(ref, 1_000) == b"hello"
    assert [(d.answer, d.token_to_other_host) for d in emu.file_downloads] == [
        ("redirect", False),
        ("file", False),
    ]


async def test_the_token_goes_to_slack_only(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    ts = await emu.user_message(DM, "see", files=[UploadedFile("a.txt", b"hello", "text/plain")])
    await bridge.reply_done(DM, ts)
    [ref] = received_files(bridge, ts)
    # The same file, named on a host that is neither Slack's nor the configured API host.
    elsewhere = dataclasses.replace(ref, source=ref.source.replace("127.0.0.1", "localhost"))

    with pytest.raises(FileUnavailable, match="files:read"):
        await bridge.adapter.files.fetch(elsewhere, 1_000)
    assert [d.answer for d in emu.file_downloads] == ["sign_in"]  # it came without the token


async def test_files_slack_connect_names_by_id_only_are_looked_up(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    emu.file_host.check_file_info = True  # a Slack Connect channel
    ts = await emu.user_message(
        GENERAL,
        f"<@{BOT}> and this?",
        files=[UploadedFile("q3.csv", b"a,b\n1,2\n", "text/csv")],
    )
    await bridge.reply_done(GENERAL, ts)

    [stub] = emu.workspace.find(GENERAL, ts).files  # type: ignore[union-attr]
    assert set(stub) == {"id", "mode", "file_access", "created", "timestamp", "user"}
    [ref] = received_files(bridge, ts)
    assert (ref.id, ref.name, ref.size, ref.mime_type) == (stub["id"], "q3.csv", 8, "text/csv")
    assert await bridge.adapter.files.fetch(ref, 1_000) == b"a,b\n1,2\n"
    # The mention and its message twin: each looked the file up before the core decided.
    assert {c.args["file"] for c in emu.calls_to("files.info")} == {stub["id"]}


def file_entry(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "F0AAA",
        "name": "a.png",
        "title": "a.png",
        "mimetype": "image/png",
        "filetype": "png",
        "size": 10,
        "mode": "hosted",
        "is_external": False,
        "url_private": "https://files.slack.com/files-pri/T0TEAM-F0AAA/a.png",
        "url_private_download": "https://files.slack.com/files-pri/T0TEAM-F0AAA/download/a.png",
    }
    entry.update(fields)
    return {key: value for key, value in entry.items() if value is not None}


def test_malformed_files_are_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    event = {
        "files": [
            file_entry(),
            "not a file",
            file_entry(id="F0BBB", name=None),
            file_entry(id="F0CCC", size="10"),
            file_entry(id="F0DDD", url_private_download=None),
        ]
    }
    with caplog.at_level(logging.WARNING):
        refs = parse_files(event, "C0GENERAL/1.1")
    assert [(r.id, r.source.rsplit("/", 2)[-2]) for r in refs] == [
        ("F0AAA", "download"),
        ("F0DDD", "T0TEAM-F0AAA"),  # url_private when there is no download URL
    ]
    assert caplog.text.count("dropping a malformed file") == 3


def test_files_slack_does_not_serve_are_named_but_have_no_source() -> None:
    event = {
        "files": [
            file_entry(id="F0EXT", is_external=True, url_private="https://drive.example/x"),
            file_entry(id="F0OLD", mode="hidden_by_limit"),
        ]
    }
    assert [(r.id, r.source) for r in parse_files(event, "C0GENERAL/1.1")] == [
        ("F0EXT", ""),
        ("F0OLD", ""),
    ]


def test_at_most_twenty_files_per_message() -> None:
    event = {"files": [file_entry(id=f"F{i:04}") for i in range(MAX_FILES + 5)]}
    assert len(parse_files(event, "C0GENERAL/1.1")) == MAX_FILES


def test_a_handed_over_message_keeps_its_files() -> None:
    body = {
        "type": "event_callback",
        "team_id": "T0TEAM",
        "event_id": "Ev1",
        "event": {
            "type": "message",
            "subtype": "file_share",
            "channel": "C0GENERAL",
            "user": "U0ALICE",
            "text": "",
            "ts": "1700000000.000100",
            "channel_type": "channel",
            "files": [file_entry()],
        },
    }
    message = parse_message(body, BOT_IDENTITY, ignore_other_bots=True)
    assert message is not None and len(message.inbound.attachments) == 1
    payload = to_payload(message)
    assert payload["v"] == 2
    assert from_payload(payload) == message
    plain = dataclasses.replace(
        message, inbound=dataclasses.replace(message.inbound, text="hi", attachments=())
    )
    assert to_payload(plain)["v"] == 1 and "files" not in to_payload(plain)  # old readers too
    assert from_payload(to_payload(plain)) == plain
