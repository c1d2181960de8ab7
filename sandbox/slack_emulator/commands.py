"""Slash commands as Slack delivers them: a `slash_commands` envelope in Socket Mode, or a signed
form POST to the request URL over HTTP; the acknowledgement (within 3 s) may carry the reply, and
the command's response_url takes up to five more within 30 minutes. Ephemeral unless the reply
says `response_type: "in_channel"`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from sandbox.slack_emulator import events
from sandbox.slack_emulator.methods.chat import new_bot_message
from sandbox.slack_emulator.methods.ephemeral import SLACKBOT, show_ephemeral
from sandbox.slack_emulator.model import Ephemeral, channel_type_of
from sandbox.slack_emulator.socket_mode import SocketAck, deliver_awaiting_ack

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

RESPONSE_PATH = "/commands/{team}/{command_id}/{secret}"
RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5


@dataclass(slots=True)
class SlashCommand:
    """One run of a command: what the app was sent, and what came of it."""

    payload: dict[str, str]
    invoked_at: float
    envelope_id: str | None = None  # Socket Mode
    http_status: int | None = None  # HTTP
    acked_at: float | None = None
    # The reply carried by the acknowledgement (Socket Mode ack payload, HTTP body), if any.
    ack_payload: dict[str, Any] | None = None
    # Why Slack showed the person an error instead: operation_timeout (no answer within 3 s),
    # dispatch_failed (nobody to send it to, or no connection), http_error (a non-2xx answer).
    failure: str | None = None
    response_url_uses: int = 0
    # What the command's replies showed the invoker (ephemeral) and posted in the channel.
    shown: list[Ephemeral] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def user(self) -> str:
        return self.payload["user_id"]

    @property
    def channel(self) -> str:
        return self.payload["channel_id"]

    @property
    def response_url(self) -> str:
        return self.payload["response_url"]


class SlashCommands:
    """Runs commands against the app and serves their response URLs."""

    def __init__(self, emu: SlackEmulator) -> None:
        self._emu = emu
        self.base_url = ""  # http://host:port, set once the server listens
        self.runs: list[SlashCommand] = []
        self._by_envelope: dict[str, SlashCommand] = {}
        self._by_secret: dict[str, SlashCommand] = {}

    # ---- invoking ----------------------------------------------------------------------------

    async def invoke(
        self, user: str, channel: str, command: str, text: str, *, team: str, channel_name: str
    ) -> SlashCommand:
        emu = self._emu
        secret = secrets.token_urlsafe(18)
        command_id = str(len(self.runs) + 1)
        path = RESPONSE_PATH.format(team=team, command_id=command_id, secret=secret)
        person = emu.workspace.users.get(user)
        payload = {
            "token": "emulated-verification-token",
            "team_id": team,
            "team_domain": emu.identity.team_domain,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": person.name if person else user,
            "command": command,
            # Slack always escapes these three; `should_escape: false` leaves mentions as typed.
            "text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
            "api_app_id": emu.identity.app_id,
            "is_enterprise_install": "false",
            "response_url": f"{self.base_url}{path}",
            "trigger_id": f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}."
            + secrets.token_hex(16),
        }
        run = SlashCommand(payload, emu.clock())
        self.runs.append(run)
        self._by_secret[secret] = run
        if emu.delivery == "socket":
            await self._send_envelope(run)
        else:
            await self._post(run)
        if run.failure is not None:
            self._show_failure(run)
        emu.poke()
        return run

    async def _send_envelope(self, run: SlashCommand) -> None:
        await deliver_awaiting_ack(
            self._emu, self._by_envelope, run, "slash_commands", accepts_response_payload=True
        )

    def on_ack(self, ack: SocketAck) -> None:
        run = self._by_envelope.pop(ack.envelope_id, None)
        if run is None:
            return
        run.acked_at = ack.at
        if run.failure is None:  # a late ack finds Slack has shown its timeout already
            run.ack_payload = ack.payload
            self._show(run, ack.payload, "command_ack")
        run.answered.set()

    async def _post(self, run: SlashCommand) -> None:
        emu = self._emu
        if emu.event_url is None:
            run.failure = "dispatch_failed"
            return
        body = urlencode(run.payload).encode()
        headers = emu.events.signed_headers(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            answer = await emu.events.exchange(body, headers)
        except TimeoutError:
            run.failure = "operation_timeout"
            return
        except aiohttp.ClientError:
            run.failure = "dispatch_failed"
            return
        run.http_status = answer.status
        run.acked_at = emu.clock()
        if not 200 <= answer.status < 300:
            run.failure = "http_error"
            return
        reply: dict[str, Any] | None = None
        if answer.content_type == "application/json":
            try:
                decoded = json.loads(answer.body or b"null")
            except ValueError:
                decoded = None
            reply = decoded if isinstance(decoded, dict) else None
        elif answer.body.strip():
            reply = {"text": answer.body.decode("utf-8", "replace")}
        run.ack_payload = reply
        self._show(run, reply, "command_ack")
        run.answered.set()

    # ---- showing replies -----------------------------------------------------------------------

    def _show(self, run: SlashCommand, reply: dict[str, Any] | None, source: str) -> None:
        """An empty acknowledgement shows nothing; a reply is the invoker's alone unless it is
        `in_channel`, which posts it in the channel as the app."""
        if not reply:
            return
        text = str(reply.get("text") or "")
        blocks = reply.get("blocks") if isinstance(reply.get("blocks"), list) else None
        if not text and not blocks:
            return
        thread_ts = str(reply.get("thread_ts") or "") or None
        emu = self._emu
        if reply.get("response_type") == "in_channel":
            message = new_bot_message(emu, run.channel, thread_ts)
            message.text, message.blocks = text, blocks
            emu.workspace.add(message)
            emu.echo(events.message_event(message, channel_type_of(run.channel)))
            run.posted.append(message.ts)
            return
        shown = show_ephemeral(
            emu,
            channel=run.channel,
            user=run.user,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            source=source,
        )
        run.shown.append(shown)

    def _show_failure(self, run: SlashCommand) -> None:
        command = run.payload["command"]
        shown = show_ephemeral(
            self._emu,
            channel=run.channel,
            user=run.user,
            text=f'{command} failed with the error "{run.failure}"',
            blocks=None,
            source="slack",
            author=SLACKBOT,
        )
        run.shown.append(shown)

    # ---- the response URL ----------------------------------------------------------------------

    async def handle_response_url(self, request: web.Request) -> web.Response:
        emu = self._emu
        run = self._by_secret.get(request.match_info["secret"])
        if run is None:
            return _answer(404, "no_service")
        if emu.clock() - run.invoked_at > RESPONSE_URL_TTL:
            return _answer(404, "expired_url")
        if run.response_url_uses >= RESPONSE_URL_USES:
            return _answer(404, "used_url")
        try:
            reply = json.loads(await request.read())
        except ValueError:
            return _answer(400, "invalid_payload")
        if not isinstance(reply, dict):
            return _answer(400, "invalid_payload")
        # replace_original / delete_original act on the command's latest reply to the invoker.
        previous = run.shown[-1] if run.shown and run.shown[-1].source != "slack" else None
        delete = reply.get("delete_original") is True
        if not delete and not reply.get("text") and not reply.get("blocks"):
            return _answer(400, "no_text")
        if previous is not None and (delete or reply.get("replace_original") is True):
            emu.workspace.remove_ephemeral(previous)
            run.shown.remove(previous)
        if not delete:
            self._show(run, reply, "response_url")
        run.response_url_uses += 1
        emu.poke()
        return _answer(200)


def _answer(status: int, error: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": error is None}
    if error is not None:
        body["error"] = error
    return web.json_response(body, status=status)


def default_channel_name(channel: str) -> str:
    """What Slack puts in `channel_name` when a test does not say."""
    if channel.startswith("D"):
        return "directmessage"
    if channel.startswith("G"):
        return "privategroup"
    return channel.lower()
