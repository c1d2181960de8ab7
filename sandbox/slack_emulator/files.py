"""Files people share, and how Slack serves them: a file object on the message (`files[]`), and
its bytes at `url_private` / `url_private_download` only for a request with the bot token of an
app that has `files:read`. Anything else is redirected to the workspace's sign-in page, which
answers 200 with HTML, as Slack's does. Every download attempt is recorded, so a test can show
that a file was never fetched.
"""

from __future__ import annotations

import mimetypes
import random
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

FILES_PATH = "/files-pri/{key}/{tail:.+}"
SIGN_IN_PATH = "/"
CHUNK_BYTES = 64 * 1024
SIGN_IN_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Slack</title></head><body>'
    '<h1>Sign in to your workspace</h1><form action="/signin" method="post"></form>'
    "</body></html>"
)
# Extension -> (filetype, pretty_type, mimetype) as Slack names them.
_FILETYPES = {
    ".png": ("png", "PNG", "image/png"), ".jpg": ("jpg", "JPEG", "image/jpeg"),
    ".jpeg": ("jpg", "JPEG", "image/jpeg"), ".gif": ("gif", "GIF", "image/gif"),
    ".webp": ("webp", "WebP", "image/webp"), ".pdf": ("pdf", "PDF", "application/pdf"),
    ".txt": ("text", "Plain Text", "text/plain"), ".log": ("text", "Plain Text", "text/plain"),
    ".csv": ("csv", "CSV", "text/csv"), ".json": ("json", "JSON", "application/json"),
    ".md": ("markdown", "Markdown (raw)", "text/plain"), ".py": ("python", "Python", "text/plain"),
    ".html": ("html", "HTML", "text/plain"),
}  # fmt: skip
_BINARY = ("binary", "Binary", "application/octet-stream")


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file a test person attaches to a message."""

    name: str
    data: bytes
    mimetype: str = ""  # guessed from the name when empty
    title: str = ""


@dataclass(slots=True)
class HostedFile:
    id: str
    name: str
    title: str
    mimetype: str
    data: bytes
    user: str
    channel: str
    created: int
    secret: str  # part of the URL, as in Slack's `files-pri/T…-F…/` paths
    downloads: int = 0


@dataclass(slots=True)
class FileDownload:
    """One request for a file's bytes."""

    file_id: str
    authorized: bool  # served the bytes (a valid bot token with files:read)
    answer: str  # "file", "sign_in" (redirected to the sign-in page), "redirect", "not_found"
    bytes_sent: int = 0
    complete: bool = False  # every byte was written
    finished: bool = False  # the answer ended (complete or not)
    token_to_other_host: bool = False  # the bot token reached the redirect's other host
    at: float = field(default_factory=time.monotonic)


class FileHost:
    """The workspace's files and the HTTP endpoint that serves them."""

    def __init__(self, emu: SlackEmulator) -> None:
        self._emu = emu
        self.files: dict[str, HostedFile] = {}
        self.downloads: list[FileDownload] = []
        self.base_url = ""  # http://host:port, set once the server listens
        # A host name for the same server (e.g. "localhost"): file requests are first
        # redirected there with a signed, one-time URL, as a CDN in front of files would be.
        self.redirect_host: str | None = None
        # Serve without Content-Length (chunked), as some proxies do: a client learns the size
        # only by reading.
        self.chunked = False
        # As in Slack Connect channels: message events name files by id only
        # (`file_access: "check_file_info"`); the app asks files.info for the rest.
        self.check_file_info = False
        self._hops: set[str] = set()

    def upload(self, user: str, upload: UploadedFile, channel: str) -> dict[str, Any]:
        """Keep the file; returns its file object as message events show it."""
        file_id = "F" + "".join(random.choices(string.ascii_uppercase + string.digits, k=10))
        known = _FILETYPES.get(_extension(upload.name), _BINARY)[2]
        mimetype = upload.mimetype or mimetypes.guess_type(upload.name)[0] or known
        hosted = HostedFile(
            id=file_id,
            name=upload.name,
            title=upload.title or upload.name,
            mimetype=mimetype,
            data=upload.data,
            user=user,
            channel=channel,
            created=int(time.time()),
            secret=secrets.token_hex(5),
        )
        self.files[file_id] = hosted
        if self.check_file_info:
            return {"id": file_id, "mode": "file_access", "file_access": "check_file_info",
                    "created": 0, "timestamp": 0, "user": ""}  # fmt: skip
        return self.file_object(hosted, channel)

    def file_object(self, hosted: HostedFile, channel: str) -> dict[str, Any]:
        emu = self._emu
        team = emu.identity.team_id
        filetype, pretty, _ = _FILETYPES.get(_extension(hosted.name), _BINARY)
        path = f"/files-pri/{team}-{hosted.id}/{quote(hosted.name)}"
        download = f"/files-pri/{team}-{hosted.id}/download/{quote(hosted.name)}"
        slug = quote(hosted.name.lower().replace(" ", "_"))
        return {
            "id": hosted.id,
            "created": hosted.created,
            "timestamp": hosted.created,
            "name": hosted.name,
            "title": hosted.title,
            "mimetype": hosted.mimetype,
            "filetype": filetype,
            "pretty_type": pretty,
            "user": hosted.user,
            "user_team": team,
            "editable": False,
            "size": len(hosted.data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": channel.startswith("C"),
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": self.base_url + path,
            "url_private_download": self.base_url + download,
            "media_display_type": "unknown",
            "permalink": f"https://{emu.identity.team_domain}.slack.com/files/{hosted.user}/"
            f"{hosted.id}/{slug}",
            "permalink_public": f"https://slack-files.com/{team}-{hosted.id}-{hosted.secret}",
            "has_rich_preview": False,
            "file_access": "visible",
        }

    def downloaded(self, file_id: str) -> bool:
        """Whether the file's bytes were ever served (or began to be)."""
        return any(d.file_id == file_id and d.authorized for d in self.downloads)

    # ---- HTTP ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key, tail = request.match_info["key"], request.match_info["tail"]
        team, _, file_id = key.partition("-")
        hosted = self.files.get(file_id)
        emu = self._emu
        token = _bearer(request.headers.get("Authorization", ""))
        if hosted is None or team != emu.identity.team_id:
            self.downloads.append(FileDownload(file_id, False, "not_found"))
            return web.Response(status=404, text="Not Found")
        hop = request.query.get("hop", "")
        if hop:
            # The second request of a redirected download: the signed URL is the permission.
            if hop not in self._hops:
                self.downloads.append(FileDownload(file_id, False, "not_found"))
                return web.Response(status=404, text="Not Found")
            self._hops.discard(hop)
            record = FileDownload(file_id, True, "file", token_to_other_host=bool(token))
            return await self._serve(request, hosted, tail, record)
        if token != emu.identity.bot_token or "files:read" not in emu.scopes:
            self.downloads.append(FileDownload(file_id, False, "sign_in"))
            location = f"{self.base_url}{SIGN_IN_PATH}?redir={quote(request.path_qs, safe='')}"
            raise web.HTTPFound(location)
        if self.redirect_host is not None:
            signed = secrets.token_urlsafe(12)
            self._hops.add(signed)
            self.downloads.append(FileDownload(file_id, False, "redirect"))
            other = URL(str(request.url)).with_host(self.redirect_host).with_query(hop=signed)
            raise web.HTTPFound(str(other))
        return await self._serve(request, hosted, tail, FileDownload(file_id, True, "file"))

    async def _serve(
        self, request: web.Request, hosted: HostedFile, tail: str, record: FileDownload
    ) -> web.StreamResponse:
        self.downloads.append(record)
        hosted.downloads += 1
        self._emu.poke()
        response = web.StreamResponse(
            headers={
                "Content-Type": hosted.mimetype,
                "Content-Disposition": (
                    f'attachment; filename="{quote(hosted.name)}"'
                    if tail.startswith("download/")
                    else "inline"
                ),
            }
        )
        if self.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(hosted.data)
        await response.prepare(request)
        try:
            for start in range(0, len(hosted.data), CHUNK_BYTES):
                chunk = hosted.data[start : start + CHUNK_BYTES]
                await response.write(chunk)
                record.bytes_sent += len(chunk)
            await response.write_eof()
            record.complete = True
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading (a file over its limit)
        finally:
            record.finished = True
            self._emu.poke()
        return response

    async def sign_in_page(self, request: web.Request) -> web.Response:
        return web.Response(text=SIGN_IN_PAGE, content_type="text/html", charset="utf-8")


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _extension(name: str) -> str:
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
