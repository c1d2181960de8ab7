"""What a part of the console (live replies, usage, settings) gives the server: its routes and
its place in the navigation. Each part lives in a module of its own and is handed to
`ConsoleServer` by the composition root; the server keeps login, sessions, CSRF and logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from adapters.console.sessions import Session

# The logged-in session of a request (every route but /login and /static/ has one).
SESSION = web.RequestKey("session", Session)
# Whether that session still stands (a long request, such as a stream, asks as it goes).
SESSION_ACTIVE: web.RequestKey[Callable[[], bool]] = web.RequestKey("session_active")

# render(template, request, values, status=200): a page of the console's templates, with the
# session's CSRF token and the navigation; every string value passes the config's redaction.
Render = Callable[..., web.Response]


class ConsoleSection(Protocol):
    """One part of the console. `nav`: (path, label) of its entry in the top navigation."""

    nav: tuple[str, str]

    def add_routes(self, router: web.UrlDispatcher, render: Render) -> None: ...

    async def close(self) -> None:
        """End what the part holds open (a stream of events) before the server stops."""
        ...
