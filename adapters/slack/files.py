"""Files on Slack messages: the `files[]` of a message event as the core's `AttachmentRef`s, and
`SlackFiles`, the core's `FileSource` for Slack (downloads with the bot token).

Slack serves a private file only to a request with `Authorization: Bearer <token>` from an app with
`files:read`; without either it answers 200 with its HTML sign-in page, so the content type is
checked. The token goes only to Slack's own hosts (and the configured API host), never along a
redirect to another host.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from adapters.slack.api import call
from bridge.domain import AttachmentRef
from bridge.ports import FileUnavailable, PlatformError, RateLimited

log = logging.getLogger(__name__)

MAX_FILES = 20  # per message; Slack lets a person attach at most 10 at once
MAX_NAME_CHARS = 255
CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 5
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=15, sock_read=60)
# Where Slack serves files (files.slack.com, GovSlack's files.slack-gov.com, ...).
SLACK_FILE_DOMAINS = ("slack.com", "slack-gov.com")
NEEDS_FILES_READ = (
    "Slack answered with its sign-in page instead of the file: the app needs the files:read "
    "scope (add it and reinstall the app)"
)
# Files Slack announces but does not serve: deleted, hidden by a free plan's limit, external links.
_NOT_SERVED_MODES = frozenset({"tombstone", "hidden_by_limit", "external"})


def parse_files(event: Mapping[str, Any], where: str) -> tuple[AttachmentRef, ...]:
    """The files of a message event; malformed entries are dropped with a log line. A file Slack
    does not serve (external, deleted, hidden) keeps its name but no source: the model is told it
    was attached. Files of Slack Connect channels come as ids only (`files_to_look_up`)."""
    files = event.get("files")
    if files is None:
        return ()
    if not isinstance(files, list):
        log.warning("slack: dropping the files of a message in %s: not a list", where)
        return ()
    refs: list[AttachmentRef] = []
    for entry in files:
        if _to_look_up(entry):
            continue
        if len(refs) == MAX_FILES:
            log.warning("slack: a message in %s has more than %d files; the rest are left out",
                        where, MAX_FILES)  # fmt: skip
            break
        ref = file_ref(entry)
        if ref is None:
            log.warning("slack: dropping a malformed file of a message in %s", where)
            continue
        refs.append(ref)
    return tuple(refs)


def files_to_look_up(event: Mapping[str, Any]) -> tuple[str, ...]:
    """Files announced by id only: in Slack Connect channels, events carry
    `{"id": "F…", "file_access": "check_file_info"}` and files.info tells the rest."""
    files = event.get("files")
    if not isinstance(files, list):
        return ()
    ids = [str(entry["id"]) for entry in files if _to_look_up(entry)]
    return tuple(ids[:MAX_FILES])


def _to_look_up(entry: Any) -> bool:
    if not isinstance(entry, Mapping) or entry.get("file_access") != "check_file_info":
        return False
    file_id = entry.get("id")
    return isinstance(file_id, str) and file_id.startswith("F") and len(file_id) <= 32


async def look_up_files(
    client: AsyncWebClient, file_ids: Sequence[str], where: str
) -> list[AttachmentRef]:
    """Files announced by id only, named by files.info (metadata, no download) so the core can
    decide on them like on any other file. One that cannot be looked up is left out."""
    found: list[AttachmentRef] = []
    for file_id in file_ids:
        try:
            answer = await call("files.info", where, client.files_info(file=file_id))
        except (RateLimited, PlatformError) as exc:
            log.warning("slack: file %s of the message in %s not looked up: %s",
                        file_id, where, exc)  # fmt: skip
            continue
        ref = file_ref(answer.get("file"))
        if ref is None:
            log.warning("slack: files.info gave a malformed file for %s in %s", file_id, where)
            continue
        found.append(ref)
    return found


def file_ref(entry: Any) -> AttachmentRef | None:
    """One file object (from an event or files.info) as a ref; None when malformed."""
    if not isinstance(entry, Mapping):
        return None
    file_id, name, size = entry.get("id"), entry.get("name"), entry.get("size")
    if not isinstance(file_id, str) or not file_id.startswith("F") or len(file_id) > 32:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    mime = entry.get("mimetype")
    mime = mime if isinstance(mime, str) and len(mime) <= 255 else ""
    source = ""
    if not entry.get("is_external") and entry.get("mode") not in _NOT_SERVED_MODES:
        url = entry.get("url_private_download") or entry.get("url_private")
        if isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) < 2048:
            source = url
    return AttachmentRef(name=name.strip(), size=size, mime_type=mime, source=source, id=file_id)


class SlackFiles:
    """Downloads files of Slack messages with the bot token (`FileSource`), over one session."""

    def __init__(self, token: str, api_base_url: str, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._token = token
        api = URL(api_base_url)
        # The configured API host (a proxy, GovSlack, the emulator) serves files too.
        self._api_host = (api.host or "").lower()
        self._chunk_bytes = chunk_bytes
        self._session: aiohttp.ClientSession | None = None

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _may_carry_token(self, url: URL) -> bool:
        host = (url.host or "").lower()
        if host == self._api_host:
            return True
        slack = any(host == d or host.endswith("." + d) for d in SLACK_FILE_DOMAINS)
        return slack and url.scheme == "https"

    async def fetch(self, ref: AttachmentRef, max_bytes: int) -> bytes:
        if not ref.source:
            raise FileUnavailable(f"Slack offers no download of {ref.name} (external or deleted)")
        if ref.size > max_bytes:
            raise FileUnavailable(f"{ref.name} is {ref.size} bytes", too_large=True)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT)
        try:
            return await self._download(self._session, ref, max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FileUnavailable(f"downloading {ref.name} failed: {type(exc).__name__}") from exc

    async def _download(
        self, session: aiohttp.ClientSession, ref: AttachmentRef, max_bytes: int
    ) -> bytes:
        url = URL(ref.source)
        first_host = url.host
        for _ in range(MAX_REDIRECTS + 1):
            # The token only to Slack, and not to another host a redirect names.
            authorized = url.host == first_host and self._may_carry_token(url)
            headers = {"Authorization": f"Bearer {self._token}"} if authorized else {}
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    url = response.url.join(URL(location))
                    if url.scheme not in ("http", "https"):
                        raise FileUnavailable(f"{ref.name}: redirected to {url.scheme}:")
                    continue
                if response.status != 200:
                    raise FileUnavailable(f"{ref.name}: Slack answered HTTP {response.status}")
                kind = response.content_type.lower()
                if kind == "text/html" and ref.mime_type.lower() != "text/html":
                    raise FileUnavailable(f"{ref.name}: {NEEDS_FILES_READ}")
                if response.content_length is not None and response.content_length > max_bytes:
                    raise FileUnavailable(
                        f"{ref.name} is {response.content_length} bytes", too_large=True
                    )
                return await self._read(response, ref, max_bytes)
        raise FileUnavailable(f"{ref.name}: more than {MAX_REDIRECTS} redirects")

    async def _read(
        self, response: aiohttp.ClientResponse, ref: AttachmentRef, max_bytes: int
    ) -> bytes:
        parts: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(self._chunk_bytes):
            total += len(chunk)
            if total > max_bytes:
                # Stop reading: the connection is dropped, the rest never comes.
                response.close()
                raise FileUnavailable(f"{ref.name} is over {max_bytes} bytes", too_large=True)
            parts.append(chunk)
        return b"".join(parts)
