"""Rich conversations in the responder: Stop, reasoning models, files on users' messages, edits.

In-memory ports on a virtual clock; the platforms' side of each is tested through the emulators.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from typing import Any

from PIL import Image

from bridge.attachments import AttachmentLimits, Attachments
from bridge.controls import ReplyControls, StopOutcome
from bridge.domain import AttachmentRef, ChatKey, InboundMessage, MessageStatus, Role
from bridge.edits import EditOutcome, UserEdits
from bridge.policy.origin import Origin
from bridge.ports import Delta, Finished, Reasoning, ReplyEnding, TokenUsage
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryFiles, MemoryStore, MemoryVault, Script, ScriptedLLM
from tests.virtual_time import run_virtual

KEY = ChatKey("test", "W1", "C1", "T1")
SETTINGS = ResponderSettings(model="m", system_prompt="", titles=False, idle_timeout=5.0)


def build(
    llm: ScriptedLLM, files: MemoryFiles | None = None, **overrides: Any
) -> tuple[Responder, MemoryStore, MemoryVault]:
    store = MemoryStore()
    vault = MemoryVault()
    attachments = Attachments(
        store=store,
        vault=vault,
        limits=AttachmentLimits(max_bytes=5_000_000, max_images=2, max_text_bytes=10_000),
        sources={"test": files or MemoryFiles()},
    )
    responder = Responder(
        store=store,
        llm=llm,
        scheduler=EditScheduler(interval=1.0),
        settings=replace(SETTINGS, **overrides),
        controls=ReplyControls(store=store),
        attachments=attachments,
    )
    return responder, store, vault


def message(text: str, event: str, *, author: str = "U1", files: tuple[AttachmentRef, ...] = ()):
    return InboundMessage(
        event_id=event,
        chat_key=KEY,
        author_id=author,
        text=text,
        platform_message_id=f"m-{event}",
        attachments=files,
    )


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def slow_text(words: int = 40, delay: float = 0.25) -> Script:
    steps: list[tuple[float, Any]] = [(delay, Delta(0, f"word{i} ")) for i in range(words)]
    steps += [(0.0, Finished(0, "stop")), (0.0, TokenUsage(10, words))]
    return Script(steps)


# --- Stop ------------------------------------------------------------------------------------


def test_the_asker_stops_a_reply_its_text_stays_and_the_next_message_is_answered() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(slow_text())
        responder, store, _ = build(llm)
        surface = RecordingSurface()
        replying = asyncio.ensure_future(responder.handle("test", message("hi", "e1"), surface))
        await asyncio.sleep(2.6)  # about ten words in
        someone = Origin("test", "U2", workspace="W1", channel="C1")
        placeholder = surface.writes[0].message_id
        assert await responder.controls.stop(someone, KEY, placeholder) is StopOutcome.REFUSED
        asker = Origin("test", "U1", workspace="W1", channel="C1")
        assert await responder.controls.stop(asker, KEY, placeholder) is StopOutcome.STOPPED
        report = await replying
        assert report is not None and report.status is MessageStatus.STOPPED
        [reply] = store.replies()
        assert reply.status is MessageStatus.STOPPED
        assert reply.content.startswith("word0 word1") and "word39" not in reply.content
        shown = surface.shown[placeholder]
        assert shown.startswith(reply.content.rstrip()) and shown.endswith("⏹️ _Stopped._")
        assert surface.endings == [ReplyEnding.STOPPED]
        # The stream was cancelled, not read to its end: no later word arrived.
        assert report.texts[0].count("word") < 15
        # Stopping again, or a Stop on a finished reply, changes nothing.
        assert await responder.controls.stop(asker, KEY, placeholder) is StopOutcome.NOT_RUNNING
        llm.queue(Script.text("second answer"))
        second = await responder.handle("test", message("again", "e2"), RecordingSurface())
        assert second is not None and second.status is MessageStatus.COMPLETE
        assert second.texts == ["second answer"]

    run_virtual(scenario())


def test_anyone_may_stop_a_reply_in_a_dm_and_an_admin_anywhere() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(slow_text(), slow_text())
        responder, _, _ = build(llm)
        responder.controls.set_admin_check(lambda origin: origin.user == "UADMIN")
        surface = RecordingSurface()
        replying = asyncio.ensure_future(responder.handle("test", message("hi", "e1"), surface))
        await asyncio.sleep(1.0)
        other_in_dm = Origin("test", "U2", channel="D1", is_dm=True)
        question = "m-e1"  # a 🛑 on the question stops its reply too
        assert await responder.controls.stop(other_in_dm, KEY, question) is StopOutcome.STOPPED
        assert (await replying).status is MessageStatus.STOPPED  # type: ignore[union-attr]
        surface = RecordingSurface()
        replying = asyncio.ensure_future(responder.handle("test", message("hi", "e2"), surface))
        await asyncio.sleep(1.0)
        admin = Origin("test", "UADMIN", workspace="W1", channel="C1")
        assert await responder.controls.stop(admin, KEY, "m-e2") is StopOutcome.STOPPED
        assert (await replying).status is MessageStatus.STOPPED  # type: ignore[union-attr]

    run_virtual(scenario())


def test_a_stop_before_the_first_token_ends_the_reply_with_the_notice_alone() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script([(5.0, Delta(0, "late")), (0.0, Finished(0, "stop"))]))
        responder, store, _ = build(llm)
        surface = RecordingSurface()
        replying = asyncio.ensure_future(responder.handle("test", message("hi", "e1"), surface))
        await asyncio.sleep(0.5)
        asker = Origin("test", "U1", workspace="W1", channel="C1")
        assert await responder.controls.stop(asker, KEY, "m-e1") is StopOutcome.STOPPED
        report = await replying
        assert report is not None and report.status is MessageStatus.STOPPED
        assert surface.shown[surface.writes[0].message_id] == "⏹️ _Stopped._"
        assert store.replies()[0].content == ""

    run_virtual(scenario())


def test_feedback_votes_are_one_per_user_and_reply_the_last_counting() -> None:
    async def scenario() -> None:
        counted: list[tuple[str, str | None]] = []
        responder, store, _ = build(ScriptedLLM(Script.text("an answer")))
        controls = ReplyControls(store=store, on_vote=lambda p, v: counted.append((p, v)))
        surface = RecordingSurface()
        await responder.handle("test", message("hi", "e1"), surface)
        [reply] = store.replies()
        shown_as = surface.writes[0].message_id
        voter = Origin("test", "U7", workspace="W1", channel="C1")
        assert await controls.vote(voter, KEY, shown_as, "up")
        assert not await controls.vote(voter, KEY, shown_as, "up")  # the same again
        assert await controls.vote(voter, KEY, shown_as, "down")
        assert await controls.vote(Origin("test", "U8"), KEY, shown_as, "up")
        assert await store.votes(reply.id) == {"U7": "down", "U8": "up"}
        assert await controls.vote(voter, KEY, shown_as, None)
        assert await store.votes(reply.id) == {"U8": "up"}
        # A vote on the user's own message, or on no message of this chat, is no vote.
        assert not await controls.vote(voter, KEY, "m-e1", "up")
        assert not await controls.vote(voter, KEY, "nowhere", "up")
        assert counted == [("test", "up"), ("test", "down"), ("test", "up"), ("test", None)]

    run_virtual(scenario())


# --- reasoning -------------------------------------------------------------------------------


def reasoning_then(answer: str, seconds: float = 12.0) -> Script:
    steps: list[tuple[float, Any]] = [
        (1.0, Reasoning(0, f"Step {i}: the user asks about foxes. ")) for i in range(int(seconds))
    ]
    steps += [(0.0, Delta(0, answer)), (0.0, Finished(0, "stop")), (0.0, TokenUsage(5, 5))]
    return Script(steps)


def test_reasoning_is_never_reply_text_and_a_live_thinking_status_shows() -> None:
    async def scenario() -> None:
        responder, store, _ = build(ScriptedLLM(reasoning_then("Foxes are quick.")))
        surface = RecordingSurface()
        report = await responder.handle("test", message("why?", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert report.texts == ["Foxes are quick."]
        assert all("Step" not in w.text for w in surface.writes)
        statuses = [s for s in surface.statuses if s.startswith("thinking")]
        assert statuses[0] == "thinking…" and "thinking… 10 s" in statuses, statuses
        # The placeholder said so too, before the first words.
        assert any(w.text.startswith("thinking… ") for w in surface.writes if w.kind == "update")
        [reply] = store.replies()
        # From the first reasoning delta (at 1 s) to the first words (at 12 s).
        assert reply.metadata["reasoning"] == {"seconds": 11.0, "summary_chars": 0}

    run_virtual(scenario())


def test_a_reasoning_summary_is_kept_above_the_answer_but_not_sent_back() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(reasoning_then("Foxes are quick.", seconds=3))
        responder, store, _ = build(llm, show_reasoning="summary")
        report = await responder.handle("test", message("why?", "e1"), RecordingSurface())
        assert report is not None
        text = report.texts[0]
        assert text.startswith("_Thought for 2 s_\n> Step 0: the user asks about foxes.")
        assert text.endswith("\n\nFoxes are quick.")
        await responder.handle("test", message("and?", "e2"), RecordingSurface())
        sent_back = [t for t in llm.requests[1].messages if t.role is Role.ASSISTANT]
        assert [t.content for t in sent_back] == ["Foxes are quick."]
        assert store.replies()[0].content == text

    run_virtual(scenario())


def test_reasoning_deltas_count_as_progress_for_the_idle_timeout() -> None:
    async def scenario() -> None:
        # 12 s of reasoning, one delta a second, against an idle timeout of 5 s.
        responder, _, _ = build(ScriptedLLM(reasoning_then("done", seconds=12)), idle_timeout=5.0)
        report = await responder.handle("test", message("hm", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE

    run_virtual(scenario())


# --- files -----------------------------------------------------------------------------------


def ref(name: str, size: int, mime: str) -> AttachmentRef:
    return AttachmentRef(name=name, size=size, mime_type=mime, source=f"files/{name}")


def test_an_image_question_sends_the_image_as_an_image_part_downscaled() -> None:
    async def scenario() -> None:
        big = png(4000, 1000)
        files = MemoryFiles({"files/shot.png": big})
        llm = ScriptedLLM(Script.text("A red rectangle."))
        responder, store, vault = build(llm, files, image_turns=1)
        shot = ref("shot.png", len(big), "image/png")
        await responder.handle(
            "test", message("what is this?", "e1", files=(shot,)), RecordingSurface()
        )
        [turn] = [t for t in llm.requests[0].messages if t.role is Role.USER]
        assert (
            turn.content.startswith("what is this?")
            and "[attached image: shot.png]" in turn.content
        )
        [image] = turn.images
        assert Image.open(io.BytesIO(image.data)).size == (1568, 392)
        [entry] = store.rows[1].metadata["attachments"]
        assert entry["state"] == "stored" and entry["width"] == 1568 and "source" not in entry
        # Later turns: sent again within image_turns user turns, then only named.
        for n in (2, 3):
            llm.queue(Script.text("ok"))
            await responder.handle("test", message(f"turn {n}", f"e{n}"), RecordingSurface())
        second, third = llm.requests[1], llm.requests[2]
        assert [len(t.images) for t in second.messages if t.role is Role.USER] == [1, 0]
        assert [len(t.images) for t in third.messages if t.role is Role.USER] == [0, 0, 0]
        assert "shown in an earlier turn, not sent again" in third.messages[0].content
        assert files.fetched == ["files/shot.png"]  # downloaded once, read from the vault since
        assert len(vault.files) == 1

    run_virtual(scenario())


def test_with_vision_off_images_are_named_never_downloaded_and_the_author_told() -> None:
    async def scenario() -> None:
        files = MemoryFiles({"files/shot.png": png(20, 20)})
        llm = ScriptedLLM(Script.text("ok"))
        store, vault = MemoryStore(), MemoryVault()
        attachments = Attachments(
            store=store,
            vault=vault,
            limits=AttachmentLimits(images=False),
            sources={"test": files},
        )
        responder = Responder(
            store=store,
            llm=llm,
            scheduler=EditScheduler(interval=1.0),
            settings=replace(SETTINGS, vision=False),
            attachments=attachments,
        )
        surface = RecordingSurface()
        shot = ref("shot.png", 1200, "image/png")
        await responder.handle("test", message("see?", "e1", files=(shot,)), surface)
        assert files.fetched == []
        [turn] = llm.requests[0].messages
        assert turn.images == () and "[attached: shot.png, 1 KB, not readable]" in turn.content
        assert "shot.png (1 KB): images are not sent to the model here" in surface.notices[0]

    run_virtual(scenario())


def test_a_stop_while_the_reply_waits_for_its_files_ends_it_at_once() -> None:
    async def scenario() -> None:
        files = MemoryFiles({"files/slow.png": png(20, 20)})
        files.delay = 60.0  # a slow download
        llm = ScriptedLLM(Script.text("never asked"))
        responder, store, _ = build(llm, files)
        surface = RecordingSurface()
        slow = ref("slow.png", 100, "image/png")
        replying = asyncio.ensure_future(
            responder.handle("test", message("hi", "e1", files=(slow,)), surface)
        )
        await asyncio.sleep(1.0)
        asker = Origin("test", "U1", workspace="W1", channel="C1")
        assert await responder.controls.stop(asker, KEY, "m-e1") is StopOutcome.STOPPED
        report = await replying
        assert report is not None and report.status is MessageStatus.STOPPED
        assert report.final_at is not None and report.final_at - report.received_at < 2.0
        assert llm.requests == []  # the model was never asked

    run_virtual(scenario())


def test_a_reply_stopped_and_then_cut_by_the_shutdown_ends_as_stopped() -> None:
    async def scenario() -> None:
        responder, store, _ = build(ScriptedLLM(slow_text()), drain_timeout=0.0)
        surface = RecordingSurface()
        replying = asyncio.ensure_future(responder.handle("test", message("hi", "e1"), surface))
        await asyncio.sleep(1.0)
        asker = Origin("test", "U1", workspace="W1", channel="C1")
        await responder.controls.stop(asker, KEY, "m-e1")
        await responder.stop()  # no drain: the shutdown cancels the reply in the same instant
        await asyncio.gather(replying, return_exceptions=True)
        await asyncio.sleep(1.0)  # its conclusion is shielded from the cancel: it runs on
        [reply] = store.replies()
        assert reply.status is MessageStatus.STOPPED
        assert surface.shown[surface.writes[0].message_id].endswith("⏹️ _Stopped._")

    run_virtual(scenario())


def test_a_large_log_is_truncated_with_its_note_and_a_pdf_is_named_not_fetched() -> None:
    async def scenario() -> None:
        log = ("2026-12-03 12:00:00 ERROR something failed\n" * 80_000).encode()  # 3.4 MB
        files = MemoryFiles({"files/app.log": log, "files/report.pdf": b"%PDF-1.7"})
        llm = ScriptedLLM(Script.text("The log shows errors."))
        responder, _, _ = build(llm, files)
        surface = RecordingSurface()
        attached = (
            ref("app.log", len(log), "text/plain"),
            ref("report.pdf", 2_000_000, "application/pdf"),
        )
        await responder.handle("test", message("look", "e1", files=attached), surface)
        content = llm.requests[0].messages[-1].content
        assert "[attached file: app.log (truncated: the first 10 KB of 3.4 MB)]" in content
        assert "[… truncated: 3.4 MB in all, the first 10 KB shown]" in content
        assert len(content) < 12_000
        assert "[attached: report.pdf, 2.0 MB, not readable]" in content
        assert files.fetched == ["files/app.log"]
        assert surface.notices == [
            "📎 _I could not read report.pdf (2.0 MB): not a file type I can read. "
            "The model was told they were attached._"
        ]

    run_virtual(scenario())


def test_files_over_the_limits_are_never_downloaded() -> None:
    async def scenario() -> None:
        small = png(10, 10)
        files = MemoryFiles({f"files/{n}.png": small for n in "abc"} | {"files/huge.png": b"x"})
        llm = ScriptedLLM(Script.text("ok"))
        responder, _, _ = build(llm, files)
        attached = (
            ref("huge.png", 9_000_000, "image/png"),
            *(ref(f"{n}.png", len(small), "image/png") for n in "abc"),
        )
        surface = RecordingSurface()
        await responder.handle("test", message("", "e1", files=attached), surface)
        assert sorted(files.fetched) == ["files/a.png", "files/b.png"]  # max_images = 2
        [turn] = llm.requests[0].messages
        assert len(turn.images) == 2
        assert "[attached: huge.png, 9.0 MB, too large to read]" in turn.content
        assert (
            "[attached: c.png, 67 bytes, not sent, too many images]".replace("67", str(len(small)))
            in turn.content
        )
        assert "huge.png (9.0 MB): larger than 5.0 MB" in surface.notices[0]

    run_virtual(scenario())


def test_a_file_that_is_not_what_it_claims_costs_the_file_never_the_answer() -> None:
    async def scenario() -> None:
        files = MemoryFiles({"files/fake.png": b"<html>login</html>"})
        llm = ScriptedLLM(Script.text("ok"))
        responder, store, _ = build(llm, files)
        surface = RecordingSurface()
        report = await responder.handle(
            "test", message("see", "e1", files=(ref("fake.png", 18, "image/png"),)), surface
        )
        assert report is not None and report.status is MessageStatus.COMPLETE
        [entry] = store.rows[1].metadata["attachments"]
        assert entry["state"] == "failed"
        assert (
            "[attached: fake.png, 18 bytes, could not be read]"
            in llm.requests[0].messages[0].content
        )
        assert "fake.png: could not be read" in surface.notices[0]

    run_virtual(scenario())


# --- edits and deletions ---------------------------------------------------------------------


def test_an_edit_before_the_answer_is_answered_and_one_after_changes_only_history() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(slow_text(words=8), Script.text("second"), Script.text("third"))
        responder, store, _ = build(llm)
        edits = UserEdits(store=store, in_flight=responder.begun)
        first = asyncio.ensure_future(
            responder.handle("test", message("one", "e1"), RecordingSurface())
        )
        await asyncio.sleep(0.1)
        queued = asyncio.ensure_future(
            responder.handle("test", message("tow", "e2"), RecordingSurface())
        )
        await asyncio.sleep(0.1)
        assert await edits.edited(KEY, "m-e2", "two") is EditOutcome.BEFORE_ANSWER
        assert await edits.edited(KEY, "m-e1", "one, edited") is EditOutcome.HISTORY
        await asyncio.gather(first, queued)
        assert llm.requests[1].messages[-1].content == "two"
        assert llm.requests[1].messages[0].content == "one, edited"
        assert len(llm.requests) == 2  # neither edit was answered as a new message
        assert await edits.deleted(KEY, "m-e1")
        await responder.handle("test", message("three", "e3"), RecordingSurface())
        contents = [t.content for t in llm.requests[2].messages if t.role is Role.USER]
        assert contents == ["two", "three"]
        assert await edits.edited(KEY, "unknown", "x") is EditOutcome.UNKNOWN
        assert store.rows[1].metadata["deleted"] is True

    run_virtual(scenario())


def test_a_stop_received_by_another_instance_is_relayed_to_the_one_writing_the_reply() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(slow_text())
        writer, store, _ = build(llm)  # the instance holding the lease, streaming the reply
        receiver = ReplyControls(store=store)  # the instance the platform sent the click to
        relayed: list[str] = []

        async def relay(detail: str) -> None:  # the database's NOTIFY, to every instance
            relayed.append(detail)
            await writer.controls.relayed(detail)
            await receiver.relayed(detail)

        receiver.relay_through(relay)
        surface = RecordingSurface()
        replying = asyncio.ensure_future(writer.handle("test", message("hi", "e1"), surface))
        await asyncio.sleep(1.0)
        placeholder = surface.writes[0].message_id
        stranger = Origin("test", "U2", workspace="W1", channel="C1")
        assert await receiver.stop(stranger, KEY, placeholder) is StopOutcome.RELAYED
        await asyncio.sleep(0.5)
        assert not replying.done()  # refused where the reply is written: U2 did not ask
        # The receiver guessed another chat of the workspace: found by the message id.
        elsewhere = ChatKey("test", "W1", "C1", "")
        asker = Origin("test", "U1", workspace="W1", channel="C1", roles=frozenset({"R1"}))
        assert await receiver.stop(asker, elsewhere, placeholder) is StopOutcome.RELAYED
        report = await replying
        assert report is not None and report.status is MessageStatus.STOPPED
        assert len(relayed) == 2
        await writer.controls.relayed("not json")  # an unreadable relay is dropped, logged

    run_virtual(scenario())


def test_votes_are_counted_in_the_metrics() -> None:
    from bridge.metrics import Registry
    from bridge.telemetry import BridgeMetrics

    async def scenario() -> None:
        metrics = BridgeMetrics(Registry(), ["test"])
        responder, store, _ = build(ScriptedLLM(Script.text("an answer")))
        controls = ReplyControls(store=store, on_vote=metrics.vote)
        surface = RecordingSurface()
        await responder.handle("test", message("hi", "e1"), surface)
        shown_as = surface.writes[0].message_id
        for user, vote in (("U1", "up"), ("U2", "up"), ("U1", "down"), ("U2", None)):
            await controls.vote(Origin("test", user), KEY, shown_as, vote)
        assert metrics.votes.value("test", "up") == 2
        assert metrics.votes.value("test", "down") == 1
        assert metrics.votes.value("test", "withdrawn") == 1
        text = metrics.registry.render()
        assert 'chat_bridge_feedback_votes_total{platform="test",vote="up"} 2' in text

    run_virtual(scenario())


def test_a_message_deleted_while_it_waits_is_not_answered() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(slow_text(words=8))
        responder, store, _ = build(llm)
        edits = UserEdits(store=store, in_flight=responder.begun)
        first = asyncio.ensure_future(
            responder.handle("test", message("one", "e1"), RecordingSurface())
        )
        await asyncio.sleep(0.1)
        surface = RecordingSurface()
        queued = asyncio.ensure_future(responder.handle("test", message("two", "e2"), surface))
        await asyncio.sleep(0.1)
        assert await edits.deleted(KEY, "m-e2")
        await asyncio.gather(first, queued)
        assert len(llm.requests) == 1  # the model was not asked about a deleted question
        assert surface.shown[surface.writes[0].message_id] == (
            "✂️ _Reply cut: its question was deleted._"
        )

    run_virtual(scenario())
