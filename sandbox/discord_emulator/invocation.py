"""What Discord's client sends when a user runs a chat-input command: the interaction's `options`.

The client only offers what the command declares: its subcommands (type 1) and subcommand groups
(type 2), each option's type, the declared choices, and every required option filled in. A test
asking for anything else gets the error the person would have seen as a greyed-out command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import Command, Json

SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2


def chat_input_options(command: Command, path: list[str], values: Mapping[str, Any]) -> list[Json]:
    """The `data.options` of `/command path... name:value...`, checked against the declaration.

    Raises LookupError for an undeclared subcommand and ValueError for options the client would
    not send (unknown, missing required, not one of the choices).
    """
    declared: list[Json] = command.payload.get("options") or []
    spelled = f"/{command.name}"
    nesting: list[tuple[str, int]] = []
    for part in path:
        found = next(
            (
                option
                for option in declared
                if option.get("name") == part
                and option.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP)
            ),
            None,
        )
        if found is None:
            raise LookupError(f"{spelled} has no subcommand {part!r}")
        spelled += f" {part}"
        nesting.append((part, int(found["type"])))
        declared = found.get("options") or []
    if any(option.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP) for option in declared):
        names = ", ".join(str(option["name"]) for option in declared)
        raise ValueError(f"{spelled} needs a subcommand: one of {names}")
    by_name = {str(option["name"]): option for option in declared}
    options: list[Json] = []
    for name, value in values.items():
        option = by_name.get(name)
        if option is None:
            raise ValueError(f"{spelled} has no option {name!r}")
        choices = option.get("choices")
        if choices and value not in [choice["value"] for choice in choices]:
            shown = ", ".join(repr(choice["value"]) for choice in choices)
            raise ValueError(f"{spelled} {name}: {value!r} is not one of {shown}")
        options.append({"name": name, "type": option["type"], "value": value})
    missing = [name for name, option in by_name.items() if option.get("required")]
    missing = [name for name in missing if name not in values]
    if missing:
        raise ValueError(f"{spelled} needs {', '.join(missing)}")
    for name, kind in reversed(nesting):
        options = [{"name": name, "type": kind, "options": options}]
    return options
