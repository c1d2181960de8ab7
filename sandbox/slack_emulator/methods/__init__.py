"""Web API method implementations, one module per family; `HANDLERS` maps method names to them."""

from __future__ import annotations

from sandbox.slack_emulator.arguments import Handler
from sandbox.slack_emulator.methods import (
    assistant,
    chat,
    directory,
    ephemeral,
    files,
    streaming,
)

HANDLERS: dict[str, Handler] = {
    **chat.HANDLERS,
    **ephemeral.HANDLERS,
    **streaming.HANDLERS,
    **assistant.HANDLERS,
    **directory.HANDLERS,
    **files.HANDLERS,
}
