"""The composition root's process-level setup."""

from __future__ import annotations

import sys

import pytest

from bridge.app import limit_malloc_arenas


def test_an_admins_malloc_arena_setting_is_left_alone() -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_arenas_are_capped_on_glibc() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert limit_malloc_arenas({}) is True


async def test_an_unmigrated_postgres_database_is_refused_with_the_fix(database_url: str) -> None:
    from bridge.app import StartupError, prepare_database
    from bridge.config import load_settings

    settings = load_settings(None, {"CHAT_BRIDGE_STORAGE__URL": database_url})
    if database_url.startswith("sqlite"):
        await prepare_database(settings)  # SQLite is migrated on start
        from storage.migrate import current_revision

        assert await current_revision(database_url) == "0001"
        return
    with pytest.raises(StartupError, match="chat-bridge migrate"):
        await prepare_database(settings)
