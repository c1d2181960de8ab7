"""files.info: a file's object, as Slack Connect channels make apps ask for it (their message
events name files by id only). Needs files:read, like downloading the file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator.arguments import ApiError, Args, Handler

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator


def files_info(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    if "files:read" not in emu.scopes:
        raise ApiError("missing_scope", needed="files:read", provided=",".join(sorted(emu.scopes)))
    hosted = emu.file_host.files.get(args.required("file", "file_not_found"))
    if hosted is None:
        raise ApiError("file_not_found")
    return {"file": emu.file_host.file_object(hosted, hosted.channel), "comments": []}


HANDLERS: dict[str, Handler] = {"files.info": files_info}
