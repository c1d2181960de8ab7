"""Discord's attachment CDN on the emulator's port: files users attach, served at signed URLs.

Discord signs attachment URLs with three query parameters: `ex` (hex Unix time the link expires,
about a day after it was issued), `is` (hex Unix time it was issued) and `hm` (a signature).
Every payload that carries an attachment carries a freshly signed URL; an expired, unsigned or
tampered link gets 404 "This content is no longer available." The download needs no token.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from .model import Json

LINK_LIFETIME = 24 * 3600.0  # Discord's links last about a day
GONE = "This content is no longer available."
CHUNK = 64 * 1024
# Discord's own limit of files on one message.
MAX_ATTACHMENTS = 10
_PREFIXES = ("attachments", "media/attachments")  # cdn.discordapp.com, media.discordapp.net


@dataclass(frozen=True, slots=True)
class FileUpload:
    """A file a test person attaches to a message."""

    filename: str
    data: bytes
    content_type: str = ""  # guessed from the name when empty
    width: int | None = None  # images: read from the data when not given
    height: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    channel_id: int
    filename: str
    content_type: str
    data: bytes
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class Download:
    """One request to the CDN and how it ended (`bytes_sent` of the file's `size`)."""

    attachment_id: int | None
    filename: str
    status: int
    size: int
    bytes_sent: int
    completed: bool
    with_token: bool  # the request carried an Authorization header (it needs none)
    time: float


@dataclass
class Cdn:
    """The files, their signed links, and a record of every download."""

    wall: Callable[[], float] = time.time
    base_url: str = "https://cdn.discordapp.com"
    lifetime: float = LINK_LIFETIME
    # Sent without Content-Length (chunked), as a CDN may: a client must count what it reads.
    omit_length: bool = False
    files: dict[int, StoredFile] = field(default_factory=dict)
    downloads: list[Download] = field(default_factory=list)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _offset: float = 0.0  # added to the wall clock: how the tests make links expire

    def now(self) -> float:
        return self.wall() + self._offset

    def expire_links(self) -> None:
        """Every link issued so far is past its `ex` from now on; links issued later are valid
        (as when the bot fetches the message again and Discord signs its URLs anew)."""
        self._offset += self.lifetime + 1.0

    # --- files -------------------------------------------------------------------------------

    def store(self, file_id: int, channel_id: int, upload: FileUpload) -> StoredFile:
        content_type = upload.content_type or _guess_type(upload.filename)
        width, height = upload.width, upload.height
        if content_type.startswith("image/") and (width is None or height is None):
            width, height = _image_size(upload.data)
        stored = StoredFile(
            file_id, channel_id, upload.filename, content_type, upload.data, width, height
        )
        self.files[file_id] = stored
        return stored

    def attachment(self, stored: StoredFile) -> Json:
        """The attachment object of a message, as Discord sends it (signed when serialised)."""
        payload: Json = {
            "id": str(stored.id),
            "filename": stored.filename,
            "size": len(stored.data),
            "content_type": stored.content_type,
            "placeholder_version": 1,
            "content_scan_version": 0,
        }
        if stored.width is not None and stored.height is not None:
            payload["width"] = stored.width
            payload["height"] = stored.height
        payload.update(self.signed(stored.id))
        return payload

    def signed(self, file_id: int) -> Json:
        """`url` and `proxy_url` of a stored file, signed now."""
        stored = self.files[file_id]
        issued = int(self.now())
        query = self._query(_path(stored), issued, issued + int(self.lifetime))
        return {
            "url": f"{self.base_url}/attachments{_path(stored)}?{query}",
            "proxy_url": f"{self.base_url}/media/attachments{_path(stored)}?{query}",
        }

    def _query(self, path: str, issued: int, expires: int) -> str:
        ex, is_ = f"{expires:x}", f"{issued:x}"
        return f"ex={ex}&is={is_}&hm={self._signature(path, ex, is_)}&"

    def _signature(self, path: str, ex: str, is_: str) -> str:
        return hmac.new(self._key, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()

    # --- serving -----------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        for prefix in _PREFIXES:
            app.router.add_get(f"/{prefix}/{{channel_id}}/{{file_id}}/{{filename}}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with_token = "Authorization" in request.headers
        stored = self._valid(request)
        if stored is None:
            raw = request.match_info.get("file_id", "")
            self.downloads.append(
                Download(
                    int(raw) if raw.isdigit() else None,
                    request.match_info.get("filename", ""),
                    404,
                    0,
                    0,
                    False,
                    with_token,
                    self.wall(),
                )
            )
            return web.Response(status=404, body=GONE.encode(), content_type="text/plain")
        response = web.StreamResponse(status=200)
        response.content_type = stored.content_type
        if not self.omit_length:
            response.content_length = len(stored.data)
        sent, completed = 0, False
        try:
            await response.prepare(request)
            view = memoryview(stored.data)
            while sent < len(view):
                await response.write(view[sent : sent + CHUNK])
                sent = min(sent + CHUNK, len(view))
            await response.write_eof()
            completed = True
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading (a download cut at its size limit)
        finally:
            self.downloads.append(
                Download(
                    stored.id,
                    stored.filename,
                    200,
                    len(stored.data),
                    sent,
                    completed,
                    with_token,
                    self.wall(),
                )
            )
        return response

    def _valid(self, request: web.Request) -> StoredFile | None:
        raw = request.match_info["file_id"]
        stored = self.files.get(int(raw)) if raw.isdigit() else None
        if stored is None or request.match_info["channel_id"] != str(stored.channel_id):
            return None
        ex, is_, hm = (request.query.get(name, "") for name in ("ex", "is", "hm"))
        try:
            expires = int(ex, 16)
        except ValueError:
            return None
        expected = self._signature(_path(stored), ex, is_)
        if not hmac.compare_digest(hm, expected) or expires <= self.now():
            return None
        return stored


def _path(stored: StoredFile) -> str:
    return f"/{stored.channel_id}/{stored.id}/{quote(stored.filename)}"


def _guess_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    """Discord reads an image's size on upload; a file that does not decode has none."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:
        return None, None
