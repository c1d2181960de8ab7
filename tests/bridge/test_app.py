"""The composition root's process-level setup."""

from __future__ import annotations

import sys
from pathlib import Path

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

        assert await current_revision(database_url) == "0011"
        return
    with pytest.raises(StartupError, match="chat-bridge migrate"):
        await prepare_database(settings)


def test_the_garbage_collector_is_tuned_for_streaming() -> None:
    import gc

    from bridge.app import GC_THRESHOLDS, tune_garbage_collector

    before = gc.get_threshold()
    long_lived = [object() for _ in range(3)], {"config": "built before the call"}
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        # What was built before the call is out of every later collection.
        assert gc.get_freeze_count() >= len(gc.get_referents(long_lived))
        assert not any(obj is long_lived for obj in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_cluster_on_sqlite_is_refused_naming_the_key(tmp_path: Path) -> None:
    from bridge.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as refused:
        load_settings(
            None,
            {
                "CHAT_BRIDGE_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
                "CHAT_BRIDGE_CLUSTER__ENABLED": "true",
            },
        )
    (problem,) = refused.value.problems
    assert problem.startswith("cluster.enabled: needs PostgreSQL")
    assert "storage.url is sqlite+aiosqlite" in problem
