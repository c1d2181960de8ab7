"""People clicking buttons in the app's messages: `block_actions` payloads as Slack delivers them,
an `interactive` envelope in Socket Mode or a signed form POST (`payload=<json>`) to the
interactivity request URL over HTTP. Slack does not retry them: unacknowledged within 3 s, the
clicker sees an error. Only elements the message really shows can be clicked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from sandbox.slack_emulator.model import Message
from sandbox.slack_emulator.socket_mode import SocketAck, deliver_awaiting_ack

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

RESPONSE_PATH = "/actions/{team}/{action_id}/{secret}"
FEEDBACK_CHOICES = ("positive", "negative")


@dataclass(slots=True)
class Interaction:
    """One click: the payload the app was sent, and whether it acknowledged it in time."""

    payload: dict[str, Any]
    sent_at: float
    envelope_id: str | None = None  # Socket Mode
    http_status: int | None = None  # HTTP
    acked_at: float | None = None
    # dispatch_failed (nobody to send it to), operation_timeout (no ack in 3 s), http_error.
    failure: str | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to its response_url
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def acked(self) -> bool:
        return self.acked_at is not None and self.failure is None


class Interactions:
    def __init__(self, emu: SlackEmulator) -> None:
        self._emu = emu
        self.base_url = ""
        self.url: str | None = None  # the interactivity request URL (HTTP); None: event_url
        self.runs: list[Interaction] = []
        self._by_envelope: dict[str, Interaction] = {}
        self._by_secret: dict[str, Interaction] = {}

    async def click(
        self, user: str, channel: str, ts: str, action_id: str, choice: str | None
    ) -> Interaction:
        emu = self._emu
        message = emu.workspace.find(channel, ts)
        if message is None:
            raise LookupError(f"no message {ts} in {channel}")
        if message.user != emu.identity.bot_user_id:
            raise ValueError(f"message {ts} is not the app's: its buttons are not the app's")
        found = _find_element(message, action_id)
        if found is None:
            shown = sorted({str(e["action_id"]) for _, e in _elements(message) if "action_id" in e})
            raise ValueError(f"message {ts} shows no element {action_id!r} (it shows {shown})")
        block, element = found
        action = _action(block, element, choice)
        secret = secrets.token_urlsafe(18)
        team = emu.identity.team_id
        path = RESPONSE_PATH.format(team=team, action_id=len(self.runs) + 1, secret=secret)
        payload = self._payload(user, message, action, f"{self.base_url}{path}")
        run = Interaction(payload, emu.clock())
        self.runs.append(run)
        self._by_secret[secret] = run
        if emu.delivery == "socket":
            await self._send_envelope(run)
        else:
            await self._post(run)
        emu.poke()
        return run

    def _payload(
        self, user: str, message: Message, action: dict[str, Any], response_url: str
    ) -> dict[str, Any]:
        emu = self._emu
        identity = emu.identity
        person = emu.workspace.users.get(user)
        name = person.name if person else user
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts and message.thread_ts != message.ts:
            container["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": name, "name": name, "team_id": identity.team_id},
            "api_app_id": identity.app_id,
            "token": "emulated-verification-token",
            "container": container,
            "trigger_id": f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}."
            + secrets.token_hex(16),
            "team": {"id": identity.team_id, "domain": identity.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": _channel_name(message.channel)},
            "message": message.to_api(),
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [action],
        }

    async def _send_envelope(self, run: Interaction) -> None:
        # Unacknowledged, Slack shows the clicker an error and does not retry.
        await deliver_awaiting_ack(
            self._emu, self._by_envelope, run, "interactive", accepts_response_payload=False
        )

    def on_ack(self, ack: SocketAck) -> None:
        run = self._by_envelope.pop(ack.envelope_id, None)
        if run is None:
            return
        run.acked_at = ack.at
        run.answered.set()

    async def _post(self, run: Interaction) -> None:
        emu = self._emu
        url = self.url or emu.event_url
        if url is None:
            run.failure = "dispatch_failed"
            return
        body = urlencode({"payload": json.dumps(run.payload)}).encode()
        headers = emu.events.signed_headers(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            answer = await emu.events.exchange(body, headers, url)
            run.http_status = answer.status
        except TimeoutError:
            run.failure = "operation_timeout"
            return
        except aiohttp.ClientError:
            run.failure = "dispatch_failed"
            return
        run.acked_at = emu.clock()
        if not 200 <= (run.http_status or 0) < 300:
            run.failure = "http_error"
        run.answered.set()

    async def handle_response_url(self, request: web.Request) -> web.Response:
        run = self._by_secret.get(request.match_info["secret"])
        if run is None:
            return web.json_response({"ok": False, "error": "no_service"}, status=404)
        try:
            reply = json.loads(await request.read())
        except ValueError:
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        run.responses.append(reply if isinstance(reply, dict) else {"raw": reply})
        self._emu.poke()
        return web.json_response({"ok": True})


def _elements(message: Message) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for block in message.blocks or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") in ("actions", "context_actions"):
            for element in block.get("elements") or ():
                if isinstance(element, dict):
                    yield block, element
        accessory = block.get("accessory")
        if block.get("type") == "section" and isinstance(accessory, dict):
            yield block, accessory


def _find_element(message: Message, action_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    return next(((b, e) for b, e in _elements(message) if e.get("action_id") == action_id), None)


def _action(block: dict[str, Any], element: dict[str, Any], choice: str | None) -> dict[str, Any]:
    """The `actions[]` entry Slack sends for a click on `element`."""
    kind = element.get("type")
    action: dict[str, Any] = {
        "type": kind,
        "action_id": element["action_id"],
        "block_id": block.get("block_id", ""),
    }
    if kind == "feedback_buttons":
        if choice not in FEEDBACK_CHOICES:
            raise ValueError(f"a feedback click needs choice= one of {FEEDBACK_CHOICES}")
        button = element[f"{choice}_button"]
        action.update(text=button.get("text"), value=button.get("value"))
    else:
        action["text"] = element.get("text")
        if "value" in element:
            action["value"] = element["value"]
        if "style" in element:
            action["style"] = element["style"]
    action["action_ts"] = f"{time.time():.6f}"
    return action


def _channel_name(channel: str) -> str:
    return "directmessage" if channel.startswith("D") else channel.lower()
