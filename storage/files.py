"""The files of users' messages on disk (the FileVault port): `<root>/<message id>/<safe name>`,
so that later turns still see a file whose platform URL expired. Names come from users and are
treated as hostile; every disk call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from storage.database import sqlite_path

if TYPE_CHECKING:
    from bridge.config import StorageSettings

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
# 100 characters of CJK or emoji are up to 400 bytes; file systems allow 255 per name.
MAX_NAME_BYTES = 200
_MAX_EXTENSION = 16
_UNSAFE = re.compile(r"[^\w.-]+")
_DOTS = re.compile(r"\.{2,}")
# Names Windows will not open whatever the extension (a vault copied to a Windows share).
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{n}" for n in range(10)} | {f"lpt{n}" for n in range(10)}
)
_TEMP_PREFIX = ".part-"
DEFAULT_FILES_DIR = Path("chat-bridge-files")


def files_dir_for(storage: StorageSettings) -> Path:
    """`storage.files_dir`, or by default a `files` folder next to the SQLite database (or
    `./chat-bridge-files` with PostgreSQL or an in-memory SQLite)."""
    if storage.files_dir:
        return Path(storage.files_dir).expanduser()
    database = sqlite_path(storage.url)
    return DEFAULT_FILES_DIR if database is None else database.parent / "files"


def safe_name(name: str) -> str:
    """A file name from a user as one harmless path part: no folders, no `..`, not hidden, not
    empty, word characters, dots and dashes only, at most MAX_NAME_CHARS with its extension."""
    # NFKC first: fullwidth "／" and "．" become "/" and "." and are then treated as such.
    name = unicodedata.normalize("NFKC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = _DOTS.sub(".", name).strip("._-")
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION:
        stem, extension = name, ""
    stem = stem.rstrip(".") or "file"
    if stem.lower() in _RESERVED:
        stem = f"{stem}_"
    suffix = f".{extension}" if extension else ""
    return _fit(stem, suffix, MAX_NAME_CHARS)


def _fit(stem: str, suffix: str, chars: int) -> str:
    stem = stem[: max(1, chars - len(suffix))]
    while len((stem + suffix).encode()) > MAX_NAME_BYTES and len(stem) > 1:
        stem = stem[:-1]
    return stem.rstrip(".") + suffix


class DirectoryVault:
    """FileVault on a folder; the key of a file is `<message id>/<name>`.

    `clock` is the wall clock file times are compared with (tests pass their own).
    """

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._root = Path(root)
        self._clock = clock

    @property
    def root(self) -> Path:
        return self._root

    async def put(self, message_id: int, name: str, data: bytes) -> str:
        if message_id < 0:
            raise ValueError(f"no message has the id {message_id}")
        return await asyncio.to_thread(self._put, int(message_id), safe_name(name), data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def prune(self, older_than_seconds: float) -> int:
        return await asyncio.to_thread(self._prune, self._clock() - older_than_seconds)

    # --- in a worker thread ----------------------------------------------------------------

    def _put(self, message_id: int, name: str, data: bytes) -> str:
        folder = self._root / str(message_id)
        for attempt in range(3):
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            try:
                final = _reserve(folder, name)
                break
            except FileNotFoundError:  # a prune removed the empty folder meanwhile
                if attempt == 2:
                    raise
        try:
            # Written beside the file and renamed over it: a reader (or a crash) never sees
            # half a file under the key.
            handle, temp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                final.unlink()
            raise
        return f"{message_id}/{final.name}"

    def _get(self, key: str) -> bytes | None:
        path = self._inside(key)
        if path is None:
            log.warning("file key %r refused: it is not a file of the vault", key[:200])
            return None
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _inside(self, key: str) -> Path | None:
        """The path of `key` if it names a file in a message folder of the root."""
        if not key or "\x00" in key or os.path.isabs(key) or "\\" in key:
            return None
        root = self._root.resolve()
        # resolve() follows symbolic links too: a link out of the root is refused as well.
        path = (root / key).resolve()
        if not path.is_relative_to(root) or len(path.relative_to(root).parts) != 2:
            return None
        return path

    def _prune(self, cutoff: float) -> int:
        if not self._root.is_dir():
            return 0
        removed = 0
        for folder in self._root.iterdir():
            if folder.is_symlink() or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
            # A folder a writer is filling at this moment is not empty, or is made again.
            with contextlib.suppress(OSError):
                folder.rmdir()
        return removed


def _reserve(folder: Path, name: str) -> Path:
    """A new empty file in `folder` named `name`, or `name-2`, `name-3`... when taken: created
    exclusively, so two writers of one name at once never get the same one."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    for number in range(1, 1000):
        candidate = name if number == 1 else _fit(stem, f"-{number}{suffix}", MAX_NAME_CHARS + 4)
        try:
            os.close(os.open(folder / candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return folder / candidate
    raise FileExistsError(f"too many files named {name!r} in {folder}")
