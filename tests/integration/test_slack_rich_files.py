"""Files and controls on Slack through a whole bridge (the composition root, real slack-bolt and
slack_sdk against the Slack emulator, openai against the local LLM server): an image question
reaches the model as an image part, downloaded once with the bot token; a denied user's file is
never downloaded; a reply is stopped with its button and rated with Slack's feedback buttons."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.slack.controls import FEEDBACK_ACTION, STOP_ACTION
from bridge.domain import ChatKey, MessageStatus
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import ShownMessage, SlackEmulator, UploadedFile
from tests.integration.whole_bridge import base_config, eventually, settled, whole_bridge

GENERAL = "C0GENERAL"
ALICE, BOB = "U0ALICE", "U0BOB"


@pytest.fixture
async def world() -> AsyncIterator[tuple[SlackEmulator, LLMServer]]:
    async with SlackEmulator() as emu, LLMServer(tick=0.01) as llm:
        emu.join(GENERAL, ALICE, BOB)
        yield emu, llm


def config(tmp_path: Path, emu: SlackEmulator, llm: LLMServer, more: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", llm.base_url)
        + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        + 'native_streaming = "never"\n'
        + more
    )
    return path


def secrets(emu: SlackEmulator) -> dict[str, str]:
    return {
        "CHAT_BRIDGE_SLACK__BOT_TOKEN": emu.identity.bot_token,
        "CHAT_BRIDGE_SLACK__APP_TOKEN": emu.identity.app_token,
    }


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(out, format="PNG")
    return out.getvalue()


def image_parts(request: dict[str, Any]) -> int:
    return sum(
        1
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )


def replies(emu: SlackEmulator, root: str) -> list[ShownMessage]:
    return [m for m in emu.thread(GENERAL, root) if m.user == emu.identity.bot_user_id]


def mention(emu: SlackEmulator, text: str) -> str:
    return f"<@{emu.identity.bot_user_id}> {text}"


async def test_an_image_question_is_answered_with_the_image(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    async with whole_bridge(config(tmp_path, emu, llm), secrets(emu)) as bridge:
        root = await emu.user_message(
            GENERAL, mention(emu, "what is wrong here?"), user=ALICE,
            files=[UploadedFile("error.png", png(), "image/png")],
        )  # fmt: skip
        await eventually(lambda: replies(emu, root) and not bridge.responder.in_flight)
        await settled(bridge)

    [file_id] = [f["id"] for f in emu.workspace.find(GENERAL, root).files or ()]  # type: ignore[union-attr]
    assert [(d.file_id, d.answer) for d in emu.file_downloads] == [(file_id, "file")]
    [request] = [r for r in llm.requests if r.get("stream")]
    assert image_parts(request) == 1


async def test_a_denied_users_file_is_never_downloaded(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    policy = f'[access]\ndenied_users = ["{BOB}"]\nnotify_denied = true\n'
    async with whole_bridge(config(tmp_path, emu, llm, policy), secrets(emu)) as bridge:
        refused = await emu.user_message(
            GENERAL, mention(emu, "read this"), user=BOB,
            files=[UploadedFile("secret.log", b"do not read\n" * 100, "text/plain")],
        )  # fmt: skip
        await eventually(lambda: emu.ephemerals(BOB))  # told they may not use the bot
        admitted = await emu.user_message(
            GENERAL, mention(emu, "and this?"), user=ALICE,
            files=[UploadedFile("fine.log", b"all good\n", "text/plain")],
        )  # fmt: skip
        await eventually(lambda: replies(emu, admitted) and not bridge.responder.in_flight)
        await settled(bridge)

    files = {
        ts: [f["id"] for f in emu.workspace.find(GENERAL, ts).files or ()]  # type: ignore[union-attr]
        for ts in (refused, admitted)
    }
    assert [d.file_id for d in emu.file_downloads] == files[admitted]
    assert not emu.downloaded(files[refused][0])


async def test_a_large_log_is_cut_with_its_note_and_a_pdf_or_oversized_file_is_named_only(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    log = b"2026-12-03T10:00:00Z ERROR worker 7: connection reset by peer\n" * 50_000  # 3.1 MB
    limits = "[limits]\nmax_attachment_bytes = 5000000\nmax_text_attachment_bytes = 100000\n"
    async with whole_bridge(config(tmp_path, emu, llm, limits), secrets(emu)) as bridge:
        root = await emu.user_message(
            GENERAL, mention(emu, "why does it fail?"), user=ALICE,
            files=[
                UploadedFile("worker.log", log, "text/plain"),
                UploadedFile("report.pdf", b"%PDF-1.7 " * 1000, "application/pdf"),
                UploadedFile("scan.png", png() + b"\0" * 6_000_000, "image/png"),
            ],
        )  # fmt: skip
        await eventually(lambda: replies(emu, root) and not bridge.responder.in_flight)
        await settled(bridge)

    ids = {f["name"]: f["id"] for f in emu.workspace.find(GENERAL, root).files or ()}  # type: ignore[union-attr]
    # Only the log was downloaded: the PDF is a type the model cannot read, the scan too large.
    assert [d.file_id for d in emu.file_downloads] == [ids["worker.log"]]
    [request] = [r for r in llm.requests if r.get("stream")]
    asked = request["messages"][-1]["content"]
    assert isinstance(asked, str)
    assert "[attached file: worker.log (truncated: the first 100 KB of 3.1 MB)]" in asked
    assert "[… truncated: 3.1 MB in all, the first 100 KB shown]" in asked
    assert 100_000 < len(asked) < 110_000
    assert "[attached: report.pdf, 9 KB, not readable]" in asked
    assert "[attached: scan.png, 6.0 MB, too large to read]" in asked
    # The author was told once, privately, which files the model could not read.
    [told] = emu.ephemerals(ALICE)
    assert "report.pdf (9 KB): not a file type I can read" in told.text
    assert "scan.png (6.0 MB): larger than 5.0 MB" in told.text


async def test_a_reply_is_stopped_with_its_button_and_rated(
    tmp_path: Path, world: tuple[SlackEmulator, LLMServer]
) -> None:
    emu, llm = world
    llm.script(ScriptedReply(" ".join(f"word{i}" for i in range(400)), tokens_per_second=40))
    async with whole_bridge(config(tmp_path, emu, llm), secrets(emu)) as bridge:
        root = await emu.user_message(GENERAL, mention(emu, "go on and on"), user=ALICE)
        reply = await eventually(
            lambda: next(
                (m for m in replies(emu, root) if "word" in m.rendered and m.controls), None
            )
        )
        assert reply.controls == ("[Stop]",)
        await emu.click(ALICE, GENERAL, reply.ts, STOP_ACTION)
        await eventually(lambda: emu.message(GENERAL, reply.ts).controls == ("[👍] [👎]",))  # type: ignore[union-attr]
        await settled(bridge)
        click = await emu.click(ALICE, GENERAL, reply.ts, FEEDBACK_ACTION, choice="positive")
        key = ChatKey("slack", emu.identity.team_id, GENERAL, root)
        answer = await bridge.store.find_message(key, reply.ts)
        assert answer is not None
        votes: dict[str, str] = {}
        for _ in range(100):  # the vote is stored after the click is acknowledged
            if votes := await bridge.store.votes(answer.id):
                break
            await asyncio.sleep(0.05)
        stopped = emu.message(GENERAL, reply.ts)

    assert click.acked
    assert stopped is not None and "word0" in stopped.rendered
    assert "word399" not in stopped.rendered and stopped.rendered.endswith("⏹️ _Stopped._")
    assert answer.status is MessageStatus.STOPPED
    assert votes == {ALICE: "up"}
