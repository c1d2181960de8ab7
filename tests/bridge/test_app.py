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
