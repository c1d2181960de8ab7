"""Files on users' messages: downloaded once when the message is admitted, kept in the vault, and
turned into what the model reads (image parts, inlined text, or a line naming the file).

A message's files live in its metadata (`attachments`: one entry per file, with its state), so a
later turn, crash recovery and another instance all see the same thing. Nothing is downloaded
that the limits refuse: the platform's announced size, type and the image count decide first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from bridge.domain import AttachmentRef, Role, StoredMessage
from bridge.images import ImageRefused, fit_image
from bridge.ports import ChatStore, FileSource, FileUnavailable, FileVault, ImagePart
from bridge.text import clean_text

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/javascript",
        "application/x-sh",
        "application/sql",
        "application/x-ndjson",
    }
)
_TEXT_EXTENSIONS = frozenset(
    ".txt .md .markdown .rst .log .csv .tsv .json .jsonl .ndjson .yaml .yml .toml .ini .cfg .conf "
    ".env.example .xml .html .htm .css .js .mjs .ts .tsx .jsx .py .rb .go .rs .java .kt .c .h .cc "
    ".cpp .hpp .cs .php .sh .bash .zsh .ps1 .sql .swift .scala .r .lua .pl .diff .patch .tf "
    ".dockerfile .gradle .properties .srt .vtt".split()
)
_IMAGE_EXTENSIONS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                     ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip

# What an image costs in the prompt's token estimate (a downscaled image, about 2048 px).
IMAGE_TOKENS = 800


class State:
    """Where a file stands (the `state` of its metadata entry)."""

    ANNOUNCED = "announced"  # named by the platform, not downloaded yet
    STORED = "stored"  # in the vault, read by the model
    UNREADABLE = "unreadable"  # a type the model cannot read: named only, never downloaded
    TOO_LARGE = "too_large"  # over limits.max_attachment_bytes: never downloaded
    OVER_IMAGE_LIMIT = "over_image_limit"  # past limits.max_images_per_message
    FAILED = "failed"  # the download or decoding failed


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_bytes: int = 25_000_000
    max_images: int = 4
    max_text_bytes: int = 100_000
    image_max_side: int = 1568
    # False (`llm.vision = false`): images are named to the model, never downloaded.
    images: bool = True


def kind_of(name: str, mime_type: str) -> str:
    """A file's kind ("image", "text" or "other"): from the announced type, else the name."""
    mime = mime_type.partition(";")[0].strip().lower()
    extension = os.path.splitext(name.lower())[1]
    if mime in IMAGE_TYPES or (not mime and extension in _IMAGE_EXTENSIONS):
        return "image"
    if mime.startswith("text/") or mime in _TEXT_TYPES or extension in _TEXT_EXTENSIONS:
        return "text"
    if mime in ("", "application/octet-stream") and extension in _IMAGE_EXTENSIONS:
        return "image"
    return "other"


def announced(refs: Sequence[AttachmentRef]) -> list[dict[str, Any]]:
    """The metadata entries of a new message's files, before anything is downloaded."""
    return [
        {
            # Names come from users: no control characters (a newline would forge log lines).
            "name": "".join(c for c in clean_text(ref.name) if c.isprintable())[:200] or "file",
            "size": max(int(ref.size), 0),
            "mime_type": clean_text(ref.mime_type)[:100],
            "source": ref.source,
            "id": ref.id,
            "kind": kind_of(ref.name, ref.mime_type),
            "state": State.ANNOUNCED,
        }
        for ref in refs
    ]


def size_text(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.0f} KB"
    return f"{size} bytes"


class Attachments:
    """Downloads, keeps and reads back the files of users' messages."""

    def __init__(
        self,
        *,
        store: ChatStore,
        vault: FileVault,
        limits: AttachmentLimits | Callable[[], AttachmentLimits],
        sources: Mapping[str, FileSource] | None = None,
        image_workers: int = 0,
    ) -> None:
        self._store = store
        self._vault = vault
        # A callable follows reloads of the configuration ([limits] reloads live).
        self._limits = limits
        self._sources: dict[str, FileSource] = dict(sources or {})
        # Images are downloaded, decoded and downscaled a few at a time, which bounds memory when
        # many large ones arrive at once; decoding runs in threads of their own at a lower
        # priority, so the event loop (every other reply's text) keeps its core.
        # One core fewer than the machine has (at least one): the event loop keeps its own.
        # One or two: one core fewer than the machine's, so the event loop keeps one, and never
        # more than two decoded photos (up to 60 megapixels each) in memory at once.
        image_workers = image_workers or min(2, max(1, (os.cpu_count() or 2) - 1))
        self._images = asyncio.Semaphore(image_workers)
        self._decoder = ThreadPoolExecutor(
            image_workers, thread_name_prefix="images", initializer=_lower_priority
        )

    @property
    def limits(self) -> AttachmentLimits:
        return self._limits() if callable(self._limits) else self._limits

    def add_source(self, platform: str, source: FileSource) -> None:
        self._sources[platform] = source

    # --- when a message arrives --------------------------------------------------------------

    async def collect(self, platform: str, message: StoredMessage) -> tuple[StoredMessage, bool]:
        """Download what the message announced and the limits allow; the entries, with their
        states, are saved in its metadata. Returns the message as stored now, and whether
        anything was decided now (False when an earlier run had done it all)."""
        entries = [
            dict(e) for e in message.metadata.get("attachments") or () if isinstance(e, dict)
        ]
        if not any(e.get("state") == State.ANNOUNCED for e in entries):
            return message, False
        source = self._sources.get(platform)
        limits = self.limits
        images = sum(1 for e in entries if e.get("kind") == "image" and e["state"] == State.STORED)
        pending: list[asyncio.Future[None]] = []
        for entry in entries:
            if entry.get("state") != State.ANNOUNCED:
                continue
            kind = entry.get("kind")
            if kind not in ("image", "text"):
                entry["state"] = State.UNREADABLE
            elif kind == "image" and not limits.images:
                entry["state"] = State.UNREADABLE
                entry["reason"] = "images are not sent to the model here"
            elif int(entry.get("size", 0)) > limits.max_bytes:
                entry["state"] = State.TOO_LARGE
            elif kind == "image" and images >= limits.max_images:
                entry["state"] = State.OVER_IMAGE_LIMIT
            elif source is None:
                entry["state"] = State.FAILED
                entry["reason"] = f"no file source for {platform}"
            else:
                images += kind == "image"
                fetching = self._fetch(source, message.id, entry, limits)
                pending.append(asyncio.ensure_future(fetching))
        if pending:
            await asyncio.gather(*pending)
        for entry in entries:
            entry.pop("source", None)  # a signed URL is of no use once the file is decided
        await self._store.update_metadata(message.id, {"attachments": entries})
        metadata = {**message.metadata, "attachments": entries}
        return _with_metadata(message, metadata), True

    async def _fetch(
        self, source: FileSource, message_id: int, entry: dict[str, Any], limits: AttachmentLimits
    ) -> None:
        ref = AttachmentRef(
            entry["name"], int(entry.get("size", 0)), entry["mime_type"], entry["source"]
        )
        try:
            if entry["kind"] == "image":
                async with self._images:
                    data = await source.fetch(ref, limits.max_bytes)
                    loop = asyncio.get_running_loop()
                    image = await loop.run_in_executor(
                        self._decoder, fit_image, data, limits.image_max_side
                    )
                    del data
                entry.update(mime_type=image.mime_type, width=image.width, height=image.height,
                             stored_bytes=len(image.data))  # fmt: skip
                entry["key"] = await self._vault.put(message_id, entry["name"], image.data)
            else:
                # Under the same bound: a text file may be as large as an image before it is cut.
                async with self._images:
                    data = await source.fetch(ref, limits.max_bytes)
                text, truncated = _text_of(data, limits.max_text_bytes)
                entry.update(stored_bytes=len(text.encode()), truncated=truncated,
                             downloaded_bytes=len(data))  # fmt: skip
                entry["key"] = await self._vault.put(message_id, entry["name"], text.encode())
            entry["state"] = State.STORED
        except FileUnavailable as exc:
            entry["state"] = State.TOO_LARGE if exc.too_large else State.FAILED
            entry["reason"] = str(exc)[:200]
            log.warning("attachment %r of message %s not downloaded: %r",
                        entry["name"][:60], message_id, str(exc)[:200])  # fmt: skip
        except ImageRefused as exc:
            entry["state"] = State.FAILED
            entry["reason"] = str(exc)[:200]
            log.warning("attachment %r of message %s is no image we can read: %r",
                        entry["name"][:60], message_id, str(exc)[:200])  # fmt: skip
        except Exception as exc:  # one bad file never costs the reply
            entry["state"] = State.FAILED
            entry["reason"] = f"{type(exc).__name__}"
            log.exception("attachment %r of message %s failed", entry["name"][:60], message_id)
        finally:
            entry.pop("source", None)  # a signed URL is no use once the file is kept or refused

    def unread_files(self, message: StoredMessage) -> str:
        """Which of the message's files the model cannot read, and why ("" when it reads all):
        the `{files}` of `notices.unreadable`."""
        lines = []
        for entry in message.metadata.get("attachments") or ():
            state = entry.get("state")
            name, size = entry.get("name", "file"), size_text(int(entry.get("size", 0)))
            if state == State.UNREADABLE and entry.get("kind") == "image":
                lines.append(f"{name} ({size}): images are not sent to the model here")
            elif state == State.UNREADABLE:
                lines.append(f"{name} ({size}): not a file type I can read")
            elif state == State.TOO_LARGE:
                lines.append(f"{name} ({size}): larger than {size_text(self.limits.max_bytes)}")
            elif state == State.OVER_IMAGE_LIMIT:
                lines.append(f"{name}: more than {self.limits.max_images} images in one message")
            elif state == State.FAILED:
                lines.append(f"{name}: could not be read")
        return "; ".join(lines)

    # --- when a prompt is built --------------------------------------------------------------

    async def for_prompt(
        self, history: Sequence[StoredMessage], *, image_turns: int, vision: bool
    ) -> dict[int, tuple[str, tuple[ImagePart, ...]]]:
        """Per user message with files: the text that names (and inlines) them, and its images:
        always those of the newest message, those of earlier ones only within `image_turns`
        user turns before it."""
        result: dict[int, tuple[str, tuple[ImagePart, ...]]] = {}
        user_turns = 0
        for message in reversed(history):
            if message.role is not Role.USER:
                continue
            user_turns += 1
            entries = message.metadata.get("attachments")
            if not entries:
                continue
            with_images = vision and user_turns - 1 <= image_turns
            result[message.id] = await self._turn(entries, with_images)
        return result

    async def _turn(
        self, entries: Sequence[Mapping[str, Any]], with_images: bool
    ) -> tuple[str, tuple[ImagePart, ...]]:
        lines: list[str] = []
        images: list[ImagePart] = []
        for entry in entries:
            name = str(entry.get("name", "file"))
            size = size_text(int(entry.get("size", 0)))
            state, kind = entry.get("state"), entry.get("kind")
            key = entry.get("key")
            data = await self._vault.get(key) if state == State.STORED and key else None
            if data is None:
                reason = {
                    State.UNREADABLE: "not readable",
                    State.TOO_LARGE: "too large to read",
                    State.OVER_IMAGE_LIMIT: "not sent, too many images",
                }.get(str(state), "could not be read")
                if state == State.STORED:
                    reason = "no longer kept"
                lines.append(f"[attached: {name}, {size}, {reason}]")
            elif kind == "image":
                if with_images:
                    images.append(ImagePart(str(entry.get("mime_type", "image/png")), data))
                    lines.append(f"[attached image: {name}]")
                else:
                    lines.append(
                        f"[attached image: {name}, shown in an earlier turn, not sent again]"
                    )
            else:
                text = data.decode("utf-8", errors="replace")
                note = ""
                if entry.get("truncated"):
                    kept = size_text(int(entry.get("stored_bytes", len(data))))
                    note = f" (truncated: the first {kept} of {size})"
                lines.append(f"[attached file: {name}{note}]\n```\n{text}\n```")
        return "\n\n".join(lines), tuple(images)


def _lower_priority() -> None:
    """Run this (image) thread at the lowest scheduling priority, nice 19 (Linux applies it per
    thread), so every other reply's work, and a model server on the same machine, come first
    (docs/benchmarks.md section 8); elsewhere it runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _text_of(data: bytes, max_bytes: int) -> tuple[str, bool]:
    """The file as text, cut at `max_bytes` on a character boundary, with a note when cut."""
    truncated = len(data) > max_bytes
    text = clean_text(data[:max_bytes].decode("utf-8", errors="replace"))
    if truncated:
        text = text.rstrip("\ufffd")  # a character the cut split in two
        whole, kept = size_text(len(data)), size_text(max_bytes)
        text += f"\n[… truncated: {whole} in all, the first {kept} shown]"
    return text, truncated


def _with_metadata(message: StoredMessage, metadata: dict[str, Any]) -> StoredMessage:
    return replace(message, metadata=metadata)
