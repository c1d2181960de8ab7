"""What people in the workspace do: post (with files), edit, delete, react, click the app's
buttons, open assistant threads or the app's Messages tab, press Slack's Stop on an agent session,
and the raw event injection behind it. Each action changes the model first, then reaches the app
as events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from sandbox.slack_emulator import events
from sandbox.slack_emulator.commands import SlashCommand, SlashCommands, default_channel_name
from sandbox.slack_emulator.delivery import Delivery, EventDelivery
from sandbox.slack_emulator.files import FileHost, UploadedFile
from sandbox.slack_emulator.interactions import Interaction, Interactions
from sandbox.slack_emulator.methods.chat import thread_root
from sandbox.slack_emulator.model import (
    AppIdentity,
    Change,
    Message,
    User,
    Workspace,
    channel_type_of,
)


class PeopleActions:
    """Mixed into SlackEmulator, which provides the attributes below."""

    identity: AppIdentity
    workspace: Workspace
    events: EventDelivery
    commands: SlashCommands
    file_host: FileHost
    interactions: Interactions

    async def user_message(
        self,
        channel: str,
        text: str,
        user: str = "U0ALICE",
        thread_ts: str | None = None,
        channel_type: str | None = None,
        files: Sequence[UploadedFile] = (),
    ) -> str:
        """A person posts: a `message` event, and `app_mention` outside DMs if the bot is named.

        With `files`, the message shares them (subtype file_share; `text` may be empty): each
        gets a file object in `files[]`, its bytes served at its url_private(_download)."""
        self._known_user(user)
        message = Message(
            ts=self.workspace.next_ts(),
            channel=channel,
            text=text,
            user=user,
            team=self.identity.team_id,
            client_msg_id=str(uuid.uuid4()),
            # The client attaches rich text only to what was typed.
            blocks=events.rich_text_blocks(text) if text or not files else None,
            thread_ts=thread_root(self.workspace, channel, thread_ts),
        )
        if files:
            message.subtype = "file_share"
            message.files = [self.file_host.upload(user, f, channel) for f in files]
        await self._post_and_announce(message, channel_type)
        return message.ts

    async def bot_message(
        self,
        channel: str,
        text: str,
        bot_id: str = "B0OTHER",
        username: str = "other-bot",
        thread_ts: str | None = None,
        user: str | None = None,
        channel_type: str | None = None,
    ) -> str:
        """Another integration posts (subtype bot_message); delivered as events like a person's."""
        message = Message(
            ts=self.workspace.next_ts(),
            channel=channel,
            text=text,
            user=user,
            bot_id=bot_id,
            username=username,
            subtype="bot_message",
            thread_ts=thread_root(self.workspace, channel, thread_ts),
        )
        await self._post_and_announce(message, channel_type)
        return message.ts

    async def edit_user_message(self, channel: str, ts: str, new_text: str) -> None:
        message = self._message(channel, ts)
        previous = message.to_api()
        message.text = new_text
        message.blocks = events.rich_text_blocks(new_text)
        message.edits += 1
        message.edited = {"user": message.author, "ts": self.workspace.next_ts()}
        self.workspace.notify(Change("updated", channel, ts, message))
        kind = channel_type_of(channel)
        event_ts = self.workspace.next_ts()
        await self.deliver(events.message_changed_event(previous, message, kind, event_ts))

    async def delete_user_message(self, channel: str, ts: str) -> None:
        """The author deletes the message: message_deleted, or, for a thread's root that has
        replies, message_changed to the tombstone Slack leaves in its place."""
        message = self._message(channel, ts)
        previous = message.to_api()
        self.workspace.remove(channel, ts)
        kind = channel_type_of(channel)
        event_ts = self.workspace.next_ts()
        tombstone = self.workspace.find(channel, ts)
        if tombstone is not None:
            await self.deliver(events.tombstone_changed_event(previous, tombstone, kind, event_ts))
            return
        await self.deliver(events.message_deleted_event(message, kind, event_ts))

    async def unfurl_link(self, channel: str, ts: str, url: str, title: str = "") -> None:
        """Slack adds a link preview to a message: message_changed with the same text."""
        message = self._message(channel, ts)
        previous = message.to_api()
        preview = {"from_url": url, "original_url": url, "title": title or url, "id": 1}
        message.attachments = [*(message.attachments or []), preview]
        self.workspace.notify(Change("updated", channel, ts, message))
        kind = channel_type_of(channel)
        event_ts = self.workspace.next_ts()
        await self.deliver(events.message_changed_event(previous, message, kind, event_ts))

    async def react(
        self, user: str, channel: str, ts: str, reaction: str = "octagonal_sign"
    ) -> Delivery:
        """A person adds an emoji reaction (🛑 is `octagonal_sign`): reaction_added."""
        self._known_user(user)
        message = self._message(channel, ts)
        entry = next((r for r in message.reactions if r["name"] == reaction), None)
        if entry is None:
            entry = {"name": reaction, "users": [], "count": 0}
            message.reactions.append(entry)
        if user not in entry["users"]:
            entry["users"].append(user)
            entry["count"] = len(entry["users"])
        self.workspace.notify(Change("updated", channel, ts, message))
        event = events.reaction_added_event(
            user, reaction, message, channel_type_of(channel), self.workspace.next_ts()
        )
        return await self.deliver(event)

    async def click(
        self, user: str, channel: str, ts: str, action_id: str, *, choice: str | None = None
    ) -> Interaction:
        """A person clicks an element of one of the app's messages (`choice`: "positive" or
        "negative" for feedback buttons). Returns once the app acknowledged it or Slack gave up
        (3 s). Raises ValueError if the message shows no element with that action_id."""
        self._known_user(user)
        return await self.interactions.click(user, channel, ts, action_id, choice)

    async def open_messages_tab(self, user: str, channel: str) -> Delivery:
        """The user opens the app's Messages tab (its DM with them): app_home_opened."""
        self._known_user(user)
        self.workspace.join(channel, user)
        event = events.app_home_opened_event(user, channel, "messages", self.workspace.next_ts())
        return await self.deliver(event)

    async def stop_agent_session(self, user: str, channel: str, thread_ts: str) -> Delivery:
        """The user clicks Slack's own Stop on the agent session of a thread: Slack stops the
        app's streaming messages there and sends agent_session_stopped."""
        self._known_user(user)
        stopped = []
        for message in self.workspace.thread(channel, thread_ts):
            if message.user == self.identity.bot_user_id and message.streaming:
                message.streaming = False
                stopped.append(message.ts)
                self.workspace.notify(Change("updated", channel, message.ts, message))
        event = events.agent_session_stopped_event(
            user, channel, thread_ts, stopped, self.workspace.next_ts()
        )
        return await self.deliver(event)

    async def start_assistant_thread(
        self, user: str, channel: str, context_channel: str | None = None
    ) -> str:
        """The user opens the AI-app container: a new DM thread and an assistant_thread_started."""
        self._known_user(user)
        root = Message(
            ts=self.workspace.next_ts(),
            channel=channel,
            text="New Assistant Thread",
            user=self.identity.bot_user_id,
            bot_id=self.identity.bot_id,
            app_id=self.identity.app_id,
            subtype="assistant_app_thread",
        )
        self.workspace.add(root)
        identity = self.identity
        await self.deliver(
            events.assistant_thread_started_event(identity, user, channel, root.ts, context_channel)
        )
        return root.ts

    async def slash_command(
        self,
        user: str,
        channel: str,
        command: str,
        text: str = "",
        *,
        team: str | None = None,
        channel_name: str | None = None,
    ) -> SlashCommand:
        """A person runs the app's command in `channel` (never in a thread: Slack allows app
        commands only in the message box of a channel or DM). Returns once the app answered or
        Slack gave up on it (3 s); its replies are then in `ephemerals(user, channel)`."""
        self._known_user(user)
        self.workspace.join(channel, user)
        return await self.commands.invoke(
            user,
            channel,
            command,
            text,
            team=team or self.identity.team_id,
            channel_name=channel_name or default_channel_name(channel),
        )

    def join(self, channel: str, *users: str) -> None:
        """People become members of `channel` (posting or running a command there does too)."""
        for user in users:
            self._known_user(user)
            self.workspace.join(channel, user)

    async def deliver(
        self, event: dict[str, Any], retries: int = 0, retry_reason: str | None = None
    ) -> Delivery:
        """Wrap `event` in an event_callback, send it, and re-send that event_id `retries` times."""
        body = events.event_callback(self.identity, event)
        return await self.events.deliver(body, retries=retries, retry_reason=retry_reason)

    async def post_signed(
        self,
        body: bytes,
        signature: str | None = None,
        timestamp: int | str | None = None,
        *,
        sign: bool = True,
        headers: dict[str, str] | None = None,
    ) -> int:
        """POST raw bytes to event_url; signature None signs correctly unless `sign` is False."""
        stamp = None if timestamp is None else str(timestamp)
        sent = self.events.signed_headers(body, timestamp=stamp, signature=signature)
        if signature is None and not sign:
            del sent["X-Slack-Signature"]
        sent.update(headers or {})
        status, _ = await self.events.post(body, sent)
        return status

    # ---- internals ---------------------------------------------------------------------------

    async def _post_and_announce(self, message: Message, channel_type: str | None) -> None:
        self.workspace.add(message)
        kind = channel_type or channel_type_of(message.channel)
        announced = [events.message_event(message, kind)]
        if kind != "im" and events.mentions(message.text, self.identity.bot_user_id):
            announced.append(events.app_mention_event(message))
        await asyncio.gather(*(self.deliver(event) for event in announced))

    def _message(self, channel: str, ts: str) -> Message:
        message = self.workspace.find(channel, ts)
        if message is None:
            raise LookupError(f"no message {ts} in {channel}")
        return message

    def _known_user(self, user_id: str) -> None:
        if user_id not in self.workspace.users:
            name = user_id.lower().removeprefix("u0") or user_id
            self.workspace.add_user(User(user_id, name, self.identity.team_id))
