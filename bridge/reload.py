"""Hot reload: SIGHUP, or a change of the configuration file, loads it again.

The policy (access, limits, overrides, and the defaults an override may change) applies to the
next message; replies in flight keep the settings they started with. An invalid file is refused
with one log line per problem, the same lines `chat-bridge check` prints, and the running
configuration stays. A changed key that needs a restart (tokens, the storage URL, ports...) is
named in the log and keeps its old value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.config import ConfigError, Settings, load_settings
from bridge.policy.policy import Policy

log = logging.getLogger(__name__)

# Per section, the keys that apply without a restart; None: the whole section.
LIVE: Mapping[str, frozenset[str] | None] = {
    "access": None,
    "limits": None,
    "overrides": None,
    "llm": frozenset(
        {
            "model",
            "system_prompt",
            "temperature",
            "max_output_tokens",
            "max_context_tokens",
            "n",
            "titles",
        }
    ),  # fmt: skip
    "streaming": frozenset({"edit_interval"}),
    "mcp": frozenset({"default_tools"}),
    "slack": frozenset({"native_streaming"}),
    "notices": frozenset({"limited", "busy", "queued", "queued_status", "denied"}),
}
POLL_INTERVAL = 2.0


def live_keys() -> list[str]:
    """Every key that reloads live, as `section.key` (docs and tests read it)."""
    keys = []
    for section, names in LIVE.items():
        field = Settings.model_fields[section]
        fields = getattr(field.annotation, "model_fields", None)
        if names is None:
            keys.append(f"{section}.*" if fields else section)
        else:
            keys.extend(f"{section}.{name}" for name in sorted(names))
    return keys


def merge(running: Settings, loaded: Settings) -> tuple[Settings, list[str]]:
    """`loaded` where it may change live, `running` elsewhere; and the keys kept for a restart."""
    update: dict[str, Any] = {}
    needs_restart: list[str] = []
    for section in Settings.model_fields:
        old, new = getattr(running, section), getattr(loaded, section)
        if old == new:
            continue
        live = LIVE.get(section, frozenset())
        if live is None:
            update[section] = new
            continue
        if not isinstance(old, BaseModel):
            needs_restart.append(section)
            continue
        changed = [k for k in type(old).model_fields if getattr(old, k) != getattr(new, k)]
        needs_restart.extend(f"{section}.{k}" for k in changed if k not in live)
        applied = {k: getattr(new, k) for k in changed if k in live}
        if applied:
            update[section] = old.model_copy(update=applied)
    return running.model_copy(update=update), needs_restart


class ConfigReloader:
    """A lifecycle service that watches one configuration file."""

    def __init__(
        self,
        path: Path,
        policy: Policy,
        *,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = POLL_INTERVAL,
        handle_signals: bool = True,
        load: Callable[[Path, Mapping[str, str] | None], Settings] = load_settings,
    ) -> None:
        self.name = "config-reload"
        self._path = path
        self._policy = policy
        self._environ = environ
        self._poll_interval = poll_interval
        self._handle_signals = handle_signals
        self._load = load
        self._seen = self._signature()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.rejected = 0

    async def start(self) -> None:
        self._seen = self._signature()
        loop = asyncio.get_running_loop()
        if self._handle_signals and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._task = loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._handle_signals and hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_sighup(self) -> None:
        log.info("config: SIGHUP, reloading %s", self._path)
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _watch(self) -> None:
        """Poll the file (no dependency, works on every file system); a change is reloaded once
        two polls in a row see the same content, so a half-written file is not read."""
        pending: str | None = None
        while True:
            await asyncio.sleep(self._poll_interval)
            signature = self._signature()
            if signature == self._seen:
                pending = None
            elif signature == pending:
                try:
                    await self.reload()
                except Exception:  # the watch goes on; the running configuration stays
                    log.exception("config reload of %s failed", self._path)
                pending = None
            else:
                pending = signature

    def _signature(self) -> str:
        try:
            return hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError as exc:
            return f"unreadable: {exc}"

    async def reload(self) -> bool:
        """Load the file again; True when the new configuration is in force."""
        async with self._lock:
            self._seen = self._signature()
            try:
                loaded = await asyncio.to_thread(self._load, self._path, self._environ)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config reload: %s", problem)
                log.error("config reload refused (%d problem(s)): the running configuration "
                          "stays in force", len(exc.problems))  # fmt: skip
                self.rejected += 1
                return False
            settings, needs_restart = merge(self._policy.settings, loaded)
            for key in needs_restart:
                log.warning("config reload: %s changed, but it needs a restart; keeping the "
                            "running value until then", key)  # fmt: skip
            self._policy.replace(settings)
            try:
                # Another instance's admins may have set some in chat since this one started.
                await self._policy.start()
            except Exception as exc:
                log.warning("config reload: the settings set in chat were not read again: %s", exc)
            self.reloads += 1
            log.info("config reloaded from %s: the next messages use it", self._path)
            return True
