"""A reply's tool calls as Slack task cards: sent by the real slack_sdk on the native stream's next
append (or its stop), and refused by the emulator where Slack refuses them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.events import ReplyPlace
from adapters.slack.surface import SlackReplySurface, StreamingSupport
from bridge.config import SlackSettings
from bridge.policy.settings import NativeStreaming
from bridge.ports import PostedMessage, RateLimited, ReplyEnding, ToolActivity
from bridge.scheduler import EditScheduler
from sandbox.slack_emulator import ApiCall, ShownMessage, SlackEmulator

GENERAL = "C0GENERAL"
DM = "D0ALICE"
SEARCH = ToolActivity("call_1", "docs.search", "in_progress")
FETCH = ToolActivity("call_2", "web.fetch", "in_progress")


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        emulator.echo_own_messages = False
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)


async def reply_surface(
    emu: SlackEmulator, native_streaming: NativeStreaming = "auto"
) -> SlackReplySurface:
    root = await emu.user_message(GENERAL, "<@U0BOT> look it up", user="U0ALICE")
    place = ReplyPlace("T0TEAM", GENERAL, root, "U0ALICE", "T0TEAM", is_dm=False)
    return SlackReplySurface(
        AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url),
        SlackSettings(),
        place,
        StreamingSupport(),
        native_streaming=native_streaming,
        placeholder="…",
        scheduler=EditScheduler(interval=1.0),
    )


async def streaming(
    emu: SlackEmulator, text: str = "Let me look."
) -> tuple[SlackReplySurface, PostedMessage]:
    """A reply on an open native stream that shows `text`."""
    reply = await reply_surface(emu)
    message = await reply.post("…", response_number=0)
    await reply.update(message, text, final=False)
    assert reply.shows_own_progress
    return reply, message


def shown(emu: SlackEmulator, message: PostedMessage) -> ShownMessage:
    found = emu.message(GENERAL, message.id)
    assert found is not None
    return found


def stream_calls(emu: SlackEmulator) -> list[ApiCall]:
    return [c for c in emu.calls if c.method.startswith("chat.") and c.method.endswith("Stream")]


async def test_tool_calls_alone_go_as_task_cards_in_the_next_append(emu: SlackEmulator) -> None:
    reply, message = await streaming(emu)
    before = len(stream_calls(emu))

    assert reply.show_tools([SEARCH]) is True
    assert len(stream_calls(emu)) == before  # nothing sent until the writer writes
    await reply.update(message, "Let me look.", final=False)  # the text has not changed

    [append] = stream_calls(emu)[before:]
    assert append.method == "chat.appendStream" and "markdown_text" not in append.args
    assert append.args["chunks"] == [
        {"type": "task_update", "id": "call_1", "title": "docs.search", "status": "in_progress"}
    ]
    assert shown(emu, message).rendered == "Let me look.\n⚙ docs.search — in progress"

    # Nothing new: no call, whether the same list is given again or not.
    await reply.update(message, "Let me look.", final=False)
    assert reply.show_tools([SEARCH]) is True
    await reply.update(message, "Let me look.", final=False)
    assert len(stream_calls(emu)) == before + 1


async def test_task_cards_and_new_text_go_in_one_append_cards_first(emu: SlackEmulator) -> None:
    reply, message = await streaming(emu)
    reply.show_tools([SEARCH])
    await reply.update(message, "Let me look.", final=False)
    before = len(stream_calls(emu))

    done = ToolActivity("call_1", "docs.search", "complete")
    assert reply.show_tools([done, FETCH]) is True
    await reply.update(message, "Let me look. Found two pages.", final=False)

    [append] = stream_calls(emu)[before:]
    assert [(c["type"], c.get("id"), c.get("status")) for c in append.args["chunks"]] == [
        ("task_update", "call_1", "complete"),
        ("task_update", "call_2", "in_progress"),
        ("markdown_text", None, None),
    ]
    assert append.args["chunks"][-1]["text"] == " Found two pages."
    seen = shown(emu, message)
    assert seen.text == "Let me look. Found two pages."
    assert [(t["id"], t["status"]) for t in seen.tasks] == [
        ("call_1", "complete"),
        ("call_2", "in_progress"),
    ]
    assert seen.rendered == (
        "Let me look.\n⚙ docs.search — complete\n⚙ web.fetch — in progress\n Found two pages."
    )


async def test_a_failed_call_shows_its_detail_cut_to_slacks_limit_and_goes_with_the_stop(
    emu: SlackEmulator,
) -> None:
    reply, message = await streaming(emu)
    reply.show_tools([SEARCH, FETCH])
    await reply.update(message, "Let me look.", final=False)
    before = len(stream_calls(emu))

    why = "the server answered: " + "x" * 400
    reply.show_tools(
        [
            ToolActivity("call_1", "docs.search", "complete"),
            ToolActivity("call_2", "web.fetch", "error", detail=why),
        ]
    )
    reply.end_reply(ReplyEnding.ANSWERED)
    await reply.update(message, "Let me look. One page would not load.", final=True)

    [stop] = stream_calls(emu)[before:]
    assert stop.method == "chat.stopStream" and stop.ok
    cards = [c for c in stop.args["chunks"] if c["type"] == "task_update"]
    assert [(c["id"], c["status"]) for c in cards] == [("call_1", "complete"), ("call_2", "error")]
    details = cards[1]["details"]
    assert len(details) == 256 and details.startswith("the server answered: x")
    assert details.endswith("…") and "details" not in cards[0]
    assert stop.args["chunks"][-1] == {"type": "markdown_text", "text": " One page would not load."}
    seen = shown(emu, message)
    assert not seen.is_streaming
    assert [(t["id"], t["status"]) for t in seen.tasks] == [
        ("call_1", "complete"),
        ("call_2", "error"),
    ]
    assert "⚙ web.fetch — error: the server answered: xxx" in seen.rendered
    # The stream is over: there is no place for task cards any more.
    assert reply.show_tools([SEARCH]) is False


async def test_task_cards_left_at_the_end_of_the_reply_go_with_the_stop(
    emu: SlackEmulator,
) -> None:
    reply, message = await streaming(emu, "Here is what I found.")
    reply.show_tools([ToolActivity("call_1", "docs.search", "complete")])
    await reply.stop_typing()  # the writer sent no last write: the surface closes the stream

    [stop] = emu.calls_to("chat.stopStream")
    assert stop.args["chunks"] == [
        {"type": "task_update", "id": "call_1", "title": "docs.search", "status": "complete"}
    ]
    assert [t["status"] for t in shown(emu, message).tasks] == ["complete"]


async def test_task_cards_refused_by_a_429_go_with_the_next_write(emu: SlackEmulator) -> None:
    reply, message = await streaming(emu)
    reply.show_tools([SEARCH])
    emu.inject_429("chat.appendStream", 1)
    with pytest.raises(RateLimited):
        await reply.update(message, "Let me look.", final=False)
    assert shown(emu, message).tasks == ()

    await reply.update(message, "Let me look.", final=False)
    assert [t["id"] for t in shown(emu, message).tasks] == ["call_1"]


async def test_a_reply_edited_with_chat_update_cannot_show_task_cards(emu: SlackEmulator) -> None:
    reply = await reply_surface(emu, native_streaming="never")
    assert reply.show_tools([SEARCH]) is False  # nothing posted yet
    message = await reply.post("…", response_number=0)
    await reply.update(message, "Let me look.", final=False)
    assert reply.show_tools([SEARCH]) is False
    await reply.update(message, "Let me look.", final=False)
    assert "chat.startStream" not in emu.stats.calls and shown(emu, message).tasks == ()


async def test_a_stream_not_yet_started_cannot_show_task_cards(emu: SlackEmulator) -> None:
    reply = await reply_surface(emu)
    assert reply.show_tools([SEARCH]) is False  # the responder shows a status line instead
    await reply.post("…", response_number=0)
    assert reply.show_tools([SEARCH]) is True


async def test_once_a_stream_expired_task_cards_give_way_to_the_status_line(
    emu: SlackEmulator,
) -> None:
    reply, message = await streaming(emu)
    assert reply.show_tools([SEARCH]) is True
    emu.expire_stream(GENERAL, message.id)
    await reply.update(message, "Let me look.", final=False)  # message_not_in_streaming_state
    assert not reply.shows_own_progress

    assert reply.show_tools([ToolActivity("call_1", "docs.search", "complete")]) is False
    await reply.update(message, "Let me look. Found it.", final=True)
    seen = shown(emu, message)
    assert seen.rendered == "Let me look. Found it." and seen.tasks == ()
    assert [c.method for c in emu.calls if c.method.startswith("chat.")][-2:] == [
        "chat.update",  # the fallback, with the whole text
        "chat.update",
    ]


async def test_a_streams_content_is_all_chunks_so_task_cards_can_join_it_any_time(
    emu: SlackEmulator,
) -> None:
    # Slack locks a stream to the form of its first content: text sent as `markdown_text`
    # would make every later task card fail with streaming_mode_mismatch.
    reply = await reply_surface(emu)
    message = await reply.post("Starting", response_number=0)
    await reply.update(message, "Starting now", final=False)
    reply.show_tools([SEARCH])
    await reply.update(message, "Starting now", final=False)
    await reply.update(message, "Starting now.", final=True)
    for call in stream_calls(emu):
        assert "markdown_text" not in call.args and call.ok, call
    assert shown(emu, message).rendered == "Starting now\n⚙ docs.search — in progress\n."


# --- the emulator refuses what Slack refuses ------------------------------------------------


async def error_of(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "task_update", "id": "t1", "title": "docs.search", "status": "pending",
            **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("chunk", "pointer"),
    [
        (task(status="running"), "/chunks/0/status"),
        ({"type": "task_update", "title": "docs.search", "status": "complete"}, "/chunks/0"),
        ({"type": "task_update", "id": "t1", "status": "complete"}, "/chunks/0"),
        (task(details="d" * 257), "/chunks/0/details"),
        (task(output="o" * 257), "/chunks/0/output"),
        ({"type": "sparkles"}, "/chunks/0/type"),
    ],
)
async def test_the_emulator_refuses_a_bad_chunk(
    emu: SlackEmulator, client: AsyncWebClient, chunk: dict[str, Any], pointer: str
) -> None:
    started = await client.chat_startStream(channel=DM, thread_ts="1.000001", chunks=[task()])
    error = await error_of(client.chat_appendStream(channel=DM, ts=started["ts"], chunks=[chunk]))
    assert error.response["error"] == "invalid_chunks"
    assert pointer in " ".join(error.response["response_metadata"]["messages"])
    seen = emu.message(DM, started["ts"])
    assert seen is not None and seen.tasks == (task(),)  # the refused call changed nothing
    # At the limit it is fine.
    ok = task(status="complete", details="d" * 256, output="o" * 256)
    await client.chat_stopStream(channel=DM, ts=started["ts"], chunks=[ok])


async def test_the_emulator_keeps_one_form_of_content_per_stream(client: AsyncWebClient) -> None:
    both = client.chat_startStream(
        channel=DM, thread_ts="1.000001", markdown_text="hi", chunks=[task()]
    )
    assert (await error_of(both)).response[
        "error"
    ] == "cannot_provide_both_markdown_text_and_chunks"

    text = await client.chat_startStream(channel=DM, thread_ts="1.000001", markdown_text="hi")
    mixed = client.chat_appendStream(channel=DM, ts=text["ts"], chunks=[task()])
    assert (await error_of(mixed)).response["error"] == "streaming_mode_mismatch"

    cards = await client.chat_startStream(channel=DM, thread_ts="1.000001", chunks=[task()])
    mixed = client.chat_stopStream(channel=DM, ts=cards["ts"], markdown_text="done")
    assert (await error_of(mixed)).response["error"] == "streaming_mode_mismatch"

    mode = client.chat_startStream(channel=DM, thread_ts="1.000001", task_display_mode="cards")
    assert (await error_of(mode)).response["error"] == "invalid_arguments"
    assert (
        await client.chat_startStream(channel=DM, thread_ts="1.000001", task_display_mode="plan")
    )["ok"]


def test_a_cards_title_and_details_are_defused_like_reply_text() -> None:
    from adapters.slack.streams import task_chunk
    from bridge.ports import ToolActivity

    chunk = task_chunk(ToolActivity("c1", "<!everyone>", "error", "failed: <@U0BOSS> <!here>"))
    assert "<!everyone>" not in chunk["title"]
    assert "<@U0BOSS>" not in chunk["details"] and "<!here>" not in chunk["details"]
