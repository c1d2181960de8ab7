"""The files folder: users' file names are hostile, writes are whole or absent, keys never reach
outside the folder, retention removes old files and their empty folders."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from bridge.config import StorageSettings
from storage.files import DirectoryVault, files_dir_for, safe_name

NOW = 1_800_000_000.0


def vault_at(tmp_path: Path) -> DirectoryVault:
    return DirectoryVault(tmp_path / "files", clock=lambda: NOW)


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/etc/shadow", "shadow"),
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("...", "file"),
        (".bashrc", "bashrc"),
        ("..hidden..txt", "hidden.txt"),
        ("a/..", "file"),
        ("evil\x00.png", "evil_.png"),
        ("new\nline.log", "new_line.log"),
        ("my photo (1).JPG", "my_photo_1_.JPG"),
        ("résumé.md", "résumé.md"),
        ("．．／．．／etc／passwd", "passwd"),  # fullwidth dots and slashes
        ("CON.txt", "CON_.txt"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("-rf", "rf"),
    ],
)
def test_a_users_file_name_becomes_one_harmless_name(name: str, kept: str) -> None:
    assert safe_name(name) == kept


def test_a_long_name_is_cut_keeping_its_extension() -> None:
    name = safe_name("x" * 300 + ".log")
    assert len(name) <= 100 and name.endswith(".log") and name.startswith("xxx")
    # Many bytes per character: within what file systems allow for one name.
    wide = safe_name("日本語" * 100 + ".txt")
    assert wide.endswith(".txt") and len(wide.encode()) <= 200
    # An "extension" that is really the rest of a long name is not kept whole.
    dotted = safe_name("a." + "b" * 300)
    assert len(dotted) <= 100


async def test_files_are_kept_under_their_message_and_read_back(tmp_path: Path) -> None:
    vault = vault_at(tmp_path)
    assert not vault.root.exists()  # created when the first file comes
    key = await vault.put(42, "screenshot.png", b"\x89PNG...")
    assert key == "42/screenshot.png"
    assert await vault.get(key) == b"\x89PNG..."
    assert stat.S_IMODE(vault.root.stat().st_mode) & 0o077 == 0  # only the bridge's user
    assert stat.S_IMODE((vault.root / key).stat().st_mode) & 0o077 == 0
    assert await vault.get("42/other.png") is None  # never kept (or pruned)
    assert await vault.get("42") is None  # a folder is not a file


async def test_hostile_names_stay_inside_their_message_folder(tmp_path: Path) -> None:
    vault = vault_at(tmp_path)
    hostile = ["../../etc/passwd", "", ".bashrc", "x" * 300 + ".txt", "..", "/abs/olute"]
    keys = [await vault.put(7, name, name.encode()) for name in hostile]
    folder = vault.root / "7"
    assert names_in(vault.root) == ["7"]
    assert len(names_in(folder)) == len(hostile)
    for key, name in zip(keys, hostile, strict=True):
        assert key.startswith("7/") and "/" not in key[2:]
        part = key[2:]
        assert part and not part.startswith(".") and ".." not in part and len(part) <= 104
        assert await vault.get(key) == name.encode()
    assert not (tmp_path / "etc").exists()


async def test_the_same_name_twice_keeps_both_files(tmp_path: Path) -> None:
    vault = vault_at(tmp_path)
    first = await vault.put(1, "log.txt", b"one")
    second = await vault.put(1, "log.txt", b"two")
    together = await asyncio.gather(*(vault.put(1, "log.txt", b"%d" % n) for n in range(10)))
    assert (first, second) == ("1/log.txt", "1/log-2.txt")
    assert len({first, second, *together}) == 12
    assert await vault.get(first) == b"one" and await vault.get(second) == b"two"
    contents = [await vault.get(k) or b"" for k in together]
    assert sorted(contents) == sorted(b"%d" % n for n in range(10))
    # Another message has its own folder: the name is free there.
    assert await vault.put(2, "log.txt", b"three") == "2/log.txt"
    long = "y" * 300 + ".txt"
    assert await vault.put(1, long, b"a") != await vault.put(1, long, b"b")


async def test_a_key_that_leads_outside_the_folder_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault = vault_at(tmp_path)
    await vault.put(1, "a.txt", b"inside")
    (tmp_path / "secret.txt").write_bytes(b"outside")
    (vault.root / "1" / "link.txt").symlink_to(tmp_path / "secret.txt")
    outside = [
        "../secret.txt",
        "1/../../secret.txt",
        str(tmp_path / "secret.txt"),
        "1/link.txt",  # a link planted inside that points out
        "1\\..\\..\\secret.txt",
        "1/a.txt\x00",
        "",
    ]
    with caplog.at_level(logging.WARNING, logger="storage.files"):
        for key in outside:
            assert await vault.get(key) is None, key
    assert sum("refused" in r.getMessage() for r in caplog.records) == len(outside)
    assert await vault.get("1/a.txt") == b"inside"


async def test_a_failed_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = vault_at(tmp_path)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        await vault.put(3, "big.png", b"x" * 1000)
    monkeypatch.undo()
    assert names_in(vault.root / "3") == []  # neither the name nor a temporary file
    assert await vault.put(3, "big.png", b"ok") == "3/big.png"


async def test_prune_removes_old_files_then_their_empty_folders(tmp_path: Path) -> None:
    vault = vault_at(tmp_path)
    old_a = await vault.put(1, "a.png", b"a")
    old_b = await vault.put(1, "b.png", b"b")
    mixed_old = await vault.put(2, "old.txt", b"o")
    mixed_new = await vault.put(2, "new.txt", b"n")
    day = 86400.0
    for key, age in ((old_a, 3 * day), (old_b, 2 * day), (mixed_old, 5 * day), (mixed_new, 60)):
        os.utime(vault.root / key, (NOW - age, NOW - age))
    (vault.root / "stray.txt").write_bytes(b"not a message's")  # left alone

    assert await vault.prune(older_than_seconds=day) == 3
    assert names_in(vault.root) == ["2", "stray.txt"]
    assert names_in(vault.root / "2") == ["new.txt"]
    assert await vault.get(old_a) is None and await vault.get(mixed_new) == b"n"
    assert await vault.prune(older_than_seconds=day) == 0


async def test_prune_of_a_vault_never_written_finds_nothing(tmp_path: Path) -> None:
    assert await vault_at(tmp_path).prune(older_than_seconds=0) == 0


def test_the_files_folder_defaults_to_one_beside_the_sqlite_database(tmp_path: Path) -> None:
    beside = StorageSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'bridge.db'}")
    assert files_dir_for(beside) == tmp_path / "data" / "files"
    relative = StorageSettings(url="sqlite+aiosqlite:///./chat-bridge.db")
    assert files_dir_for(relative) == Path("files")
    for url in ("postgresql+asyncpg://bridge@db/bridge", "sqlite+aiosqlite:///:memory:"):
        assert files_dir_for(StorageSettings(url=url)) == Path("chat-bridge-files")
    chosen = StorageSettings(url="sqlite+aiosqlite:///x.db", files_dir=str(tmp_path / "kept"))
    assert files_dir_for(chosen) == tmp_path / "kept"
