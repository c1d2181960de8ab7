"""People editing and deleting their Slack messages: reported to the core's UserEdits with the
right chat and message, never answered as new messages, and Slack's own changes (unfurls, the
bot's edits) left alone."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.changes import MessageChange, parse_change
from adapters.slack.events import BotIdentity
from bridge.domain import ChatKey, StoredMessage
from sandbox.llm_server import ScriptedReply
from tests.adapters.slack.conftest import BOT, GENERAL, Bridge, Factory

IDENTITY = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM")


class EditingStore:
    """The SQL store, plus finding messages by platform id and recording edits."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.edits: list[tuple[int, str, bool]] = []

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

    async def edit_message(self, message_id: int, content: str, *, deleted: bool = False) -> None:
        self.edits.append((message_id, content, deleted))


async def answered_thread(bridge: Bridge) -> str:
    bridge.llm.script(ScriptedReply("An answer."))
    root = await bridge.emu.user_message(GENERAL, f"<@{BOT}> what is 2+2?", user="U0ALICE")
    await bridge.reply_done(GENERAL, root)
    return root


def key(thread: str) -> ChatKey:
    return ChatKey("slack", "T0TEAM", GENERAL, thread)


async def test_an_edit_reaches_the_history_and_is_not_answered(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode, edits=True, store_wrapper=EditingStore)
    emu = bridge.emu
    root = await answered_thread(bridge)
    requests = len(bridge.llm.requests)

    await emu.edit_user_message(GENERAL, root, f"<@{BOT}> what is 2+3? &lt;b&gt;")
    await bridge.settle()

    assert bridge.edits.calls == [("edited", key(root), root, "what is 2+3? <b>")]
    [(_, content, deleted)] = bridge.edits._store.edits
    assert (content, deleted) == ("what is 2+3? <b>", False)
    assert len(bridge.llm.requests) == requests  # nothing answered again
    assert len(bridge.bot_messages(GENERAL, root)) == 1


async def test_edits_and_deletions_in_a_thread_name_the_thread(make_bridge: Factory) -> None:
    bridge = await make_bridge(edits=True, store_wrapper=EditingStore)
    emu = bridge.emu
    root = await answered_thread(bridge)
    bridge.llm.script(ScriptedReply("Another answer."))
    follow_up = await emu.user_message(GENERAL, "and 3+3?", user="U0ALICE", thread_ts=root)
    await bridge.reply_done(GENERAL, root, replies=2)

    await emu.edit_user_message(GENERAL, follow_up, "and 4+4?")
    await emu.delete_user_message(GENERAL, follow_up)
    await bridge.settle()

    assert bridge.edits.calls == [
        ("edited", key(root), follow_up, "and 4+4?"),
        ("deleted", key(root), follow_up, None),
    ]


async def test_deleting_a_thread_root_under_its_replies_is_a_deletion(
    make_bridge: Factory,
) -> None:
    # Slack leaves a tombstone in the root's place and says so with message_changed.
    bridge = await make_bridge(edits=True, store_wrapper=EditingStore)
    emu = bridge.emu
    root = await answered_thread(bridge)

    await emu.delete_user_message(GENERAL, root)
    await bridge.settle()

    assert emu.deliveries[-1].body["event"]["message"]["subtype"] == "tombstone"
    assert bridge.edits.calls == [("deleted", key(root), root, None)]


async def test_slacks_own_changes_and_the_bots_edits_are_not_edits(make_bridge: Factory) -> None:
    bridge = await make_bridge(edits=True, native_streaming="never", store_wrapper=EditingStore)
    emu = bridge.emu
    root = await answered_thread(bridge)  # its reply was edited several times (chat.update)
    assert [d for d in emu.deliveries if d.body["event"].get("subtype") == "message_changed"]

    await emu.unfurl_link(GENERAL, root, "https://example.com")
    await bridge.settle()

    assert bridge.edits.calls == []


async def test_without_the_edits_port_changes_are_ignored(make_bridge: Factory) -> None:
    bridge = await make_bridge()
    emu = bridge.emu
    root = await answered_thread(bridge)
    await emu.edit_user_message(GENERAL, root, f"<@{BOT}> something else entirely")
    await bridge.settle()
    assert bridge.edits.calls == [] and len(bridge.bot_messages(GENERAL, root)) == 1


def change_body(**event: Any) -> dict[str, Any]:
    return {"type": "event_callback", "team_id": "T0TEAM", "event_id": "Ev1",
            "event": {"type": "message", "channel": GENERAL, **event}}  # fmt: skip


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"subtype": "message_changed", "message": {"user": "U0ALICE", "text": "new",
             "ts": "1.000002", "thread_ts": "1.000001"}, "previous_message": {"text": "old"}},
            MessageChange(key("1.000001"), "1.000002", "new"),
        ),
        (  # no previous message given: reported, the core compares with what it stored
            {"subtype": "message_changed", "message": {"user": "U0ALICE", "text": "new",
             "ts": "1.000002"}},
            MessageChange(key("1.000002"), "1.000002", "new"),
        ),
        (  # the text did not change: an unfurl or metadata
            {"subtype": "message_changed", "message": {"user": "U0ALICE", "text": "same",
             "ts": "1.000002"}, "previous_message": {"text": "same"}},
            None,
        ),
        (  # the bot's own message
            {"subtype": "message_changed", "message": {"user": "U0BOT", "bot_id": "B0BOT",
             "text": "new", "ts": "1.000002"}, "previous_message": {"text": "old"}},
            None,
        ),
        (
            {"subtype": "message_deleted", "deleted_ts": "1.000002",
             "previous_message": {"user": "U0ALICE", "text": "x", "ts": "1.000002",
                                  "thread_ts": "1.000001"}},
            MessageChange(key("1.000001"), "1.000002", None),
        ),
        ({"subtype": "message_deleted", "deleted_ts": "not a ts"}, None),
        ({"subtype": "message_changed", "message": "not a message"}, None),
    ],
)  # fmt: skip
def test_parse_change(event: dict[str, Any], expected: MessageChange | None) -> None:
    assert parse_change(change_body(**event), IDENTITY) == expected
