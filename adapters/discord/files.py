"""Files on Discord messages: their attachment objects as the core's `AttachmentRef`s, and
`DiscordFiles`, the core's `FileSource` for them (downloads from Discord's CDN).

Discord signs attachment URLs (`ex`, `is`, `hm`) and they expire about a day later, so the core
downloads what it keeps as soon as a message is admitted. The URL is the credential: no bot token
goes with the request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp
import discord

from bridge.domain import AttachmentRef
from bridge.ports import FileUnavailable
from bridge.text import clean_text

log = logging.getLogger(__name__)

# Discord's own limit of files on one message; anything past it is not a user's upload.
MAX_ATTACHMENTS = 10
# Where Discord serves attachments (`url`, `proxy_url`).
CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
CHUNK = 64 * 1024
EXPIRED = "its link has expired or is no longer valid (Discord's attachment links last about a day)"


def attachment_refs(message: discord.Message) -> tuple[AttachmentRef, ...]:
    """The message's files as the core reads them (at most 10); an entry without a name, a
    size or an http(s) URL is dropped with a log line."""
    refs: list[AttachmentRef] = []
    for attachment in message.attachments:
        ref = _ref(attachment)
        if ref is None:
            log.warning(
                "discord: message %s: attachment %s dropped, it is malformed (%r, %r bytes)",
                message.id, attachment.id, attachment.filename, attachment.size,
            )  # fmt: skip
            continue
        refs.append(ref)
    if len(refs) > MAX_ATTACHMENTS:
        log.warning("discord: message %s has %d attachments; reading the first %d",
                    message.id, len(refs), MAX_ATTACHMENTS)  # fmt: skip
        refs = refs[:MAX_ATTACHMENTS]
    return tuple(refs)


def _ref(attachment: discord.Attachment) -> AttachmentRef | None:
    name = clean_text(attachment.filename or "").strip()
    size = attachment.size
    if not name or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    url = attachment.url or ""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    # Discord omits content_type when it cannot tell; the core then goes by the name.
    mime_type = (attachment.content_type or "").strip()
    return AttachmentRef(
        name=name, size=size, mime_type=mime_type, source=url, id=str(attachment.id)
    )


class DiscordFiles:
    """Downloads attachments from Discord's CDN over one reused aiohttp session.

    Only Discord's CDN hosts (and `extra_hosts`: the configured API's host when it is not
    Discord's, e.g. an emulator or a proxy) are fetched from, whatever a stored URL says.
    """

    def __init__(
        self, *, extra_hosts: Iterable[str] = (), read_timeout: float = 30.0, total: float = 120.0
    ) -> None:
        self._hosts = CDN_HOSTS | {host.lower() for host in extra_hosts}
        # `total`: a host that drips bytes cannot hold a reply's files for ever.
        self._timeout = aiohttp.ClientTimeout(total=total, connect=10.0, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, ref: AttachmentRef, max_bytes: int) -> bytes:
        if ref.size > max_bytes:
            raise FileUnavailable(_over(ref, max_bytes, f"{ref.size} bytes"), too_large=True)
        host = (urlsplit(ref.source).hostname or "").lower()
        if host not in self._hosts:
            raise FileUnavailable(f"discord: {ref.name}: {host or 'its URL'} is not Discord's CDN")
        try:
            # No redirects: a signed CDN link answers itself, and a hop could leave the CDN.
            async with self._session_now().get(ref.source, allow_redirects=False) as response:
                if response.status != 200:
                    raise FileUnavailable(await _refused(ref, response))
                length = response.content_length
                if length is not None and length > max_bytes:
                    seen = f"{length} bytes"
                    raise FileUnavailable(_over(ref, max_bytes, seen), too_large=True)
                chunks: list[bytes] = []
                total = 0
                # Read no further than one chunk past the limit, whatever the file's size.
                async for chunk in response.content.iter_chunked(CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        seen = "the download stopped there"
                        raise FileUnavailable(_over(ref, max_bytes, seen), too_large=True)
                    chunks.append(chunk)
                return b"".join(chunks)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise FileUnavailable(
                f"discord: {ref.name} could not be downloaded ({detail})"
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def _over(ref: AttachmentRef, max_bytes: int, seen: str) -> str:
    return f"discord: {ref.name} is larger than the {max_bytes} bytes allowed ({seen})"


async def _refused(ref: AttachmentRef, response: aiohttp.ClientResponse) -> str:
    body = (await response.content.read(200)).decode("utf-8", errors="replace").strip()
    said = f": {body}" if body and not body.startswith("<") else ""
    if response.status in (403, 404, 410):
        return f"discord: {ref.name}: {EXPIRED} ({response.status}{said})"
    return f"discord: {ref.name} could not be downloaded ({response.status}{said})"
