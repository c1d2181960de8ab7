"""auth.test, users.info, apps.connections.open: who the app is, who users are, where to connect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator.arguments import ApiError, Args, Handler

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator


def auth_test(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    # Bolt derives bot_user_id from user_id only when bot_id is present, and uses both to drop
    # the app's own events; the fields mirror a bot token's real answer.
    identity = emu.identity
    return {
        "url": f"https://{identity.team_domain}.slack.com/",
        "team": identity.team_name,
        "user": identity.bot_name,
        "team_id": identity.team_id,
        "user_id": identity.bot_user_id,
        "bot_id": identity.bot_id,
        "is_enterprise_install": False,
    }


def users_info(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    user = emu.workspace.users.get(args.text("user"))
    if user is None:
        raise ApiError("user_not_found")
    return {"user": user.to_api()}


def connections_open(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    return {"url": emu.sockets.issue_url()}


HANDLERS: dict[str, Handler] = {
    "auth.test": auth_test,
    "users.info": users_info,
    "apps.connections.open": connections_open,
}
