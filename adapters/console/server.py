"""`ConsoleServer`: the admin console on its own aiohttp server (`[console]`), a service of the
lifecycle started after the store and before the platforms.

Every request passes two middlewares: the first logs it (method, path, status, session id) and
gives every response the security headers; the second finds the session, sends a request without
one to the login page and refuses a POST whose CSRF token is missing or wrong.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from adapters.console.pages import PAGE_SIZE, ConversationPages
from adapters.console.passwords import FAILURE_DELAY, PasswordCheck
from adapters.console.section import SESSION, SESSION_ACTIVE, ConsoleSection
from adapters.console.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions, same_token
from adapters.listen import listen
from bridge.console_settings import ConsoleSettings
from bridge.ports import ConversationBrowser

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
OPEN_PATHS = ("/login", "/static/")
MAX_PASSWORD_CHARS = 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConsoleServer:
    """Service "console". `redact` is applied to every value a page shows (the config's secrets
    out of stored errors and tool results); `sections`: the console's other parts (live
    replies, usage, settings), each with its routes and navigation entry; `clock` and `sleep`
    are injected for the tests."""

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        browser: ConversationBrowser,
        redact: Callable[[str], str] = lambda text: text,
        sections: Sequence[ConsoleSection] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if settings.password_hash is None:
            raise ValueError("console.password_hash: required when console.enabled is true")
        self.name = "console"
        self._settings = settings
        self._sessions = Sessions(lifetime=settings.session_hours * 3600, clock=clock)
        self._password = PasswordCheck(
            settings.password_hash.get_secret_value(), failure_delay=FAILURE_DELAY, sleep=sleep
        )
        self._templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"], default=True),
            undefined=StrictUndefined,
            # Markup is a template's own output (an include, a macro): its values were
            # finalized when it was rendered, and escaping it again would show its tags.
            finalize=lambda value: (
                redact(value) if isinstance(value, str) and not isinstance(value, Markup) else value
            ),
        )
        self._pages = ConversationPages(browser, self._render, page_size=page_size)
        self._sections = tuple(sections)
        self._nav = (("/conversations", "Conversations"), *(part.nav for part in self._sections))
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = self._settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._settings.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._log_and_protect, self._require_session])
        app.router.add_get("/", self._home)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/conversations", self._pages.conversations)
        app.router.add_get("/conversations/{chat_id:[0-9]+}", self._pages.conversation)
        for part in self._sections:
            part.add_routes(app.router, self._render)
        app.router.add_static("/static/", HERE / "static", append_version=False)
        return app

    async def start(self) -> None:
        settings = self._settings
        self._runner = await listen(
            self.app(), host=settings.host, port=settings.port, section="console"
        )
        log.info("console: at %s/", self.url)

    async def stop(self) -> None:
        # Open streams (the live page's events) end first: the runner would wait up to a minute
        # for every request in progress before cancelling them.
        for part in self._sections:
            await part.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _log_and_protect(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(HEADERS)
            self._log(request, exc.status)
            raise
        except Exception:
            self._log(request, 500)
            raise
        response.headers.update(HEADERS)
        self._log(request, response.status)
        return response

    def _log(self, request: web.Request, status: int) -> None:
        session = request.get(SESSION)
        log.info(
            "console: %s %s %d session %s",
            request.method,
            request.path,
            status,
            session.id if session is not None else "-",
        )

    @web.middleware
    async def _require_session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session = self._sessions.read(request.cookies.get(COOKIE))
        if session is not None:
            request[SESSION] = session
            active: Callable[[], bool] = functools.partial(self._sessions.active, session)
            request[SESSION_ACTIVE] = active
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        if session is None:
            raise web.HTTPSeeOther("/login")
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not same_token(token if isinstance(token, str) else None, session.csrf):
                log.warning(
                    "console: %s %s refused: missing or wrong CSRF token (session %s, from %s)",
                    request.method,
                    request.path,
                    session.id,
                    _client(request),
                )
                raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the page.")
        return await handler(request)

    # --- login and logout ----------------------------------------------------------------------

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/conversations")

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        if request.get(SESSION) is not None:
            raise web.HTTPSeeOther("/conversations")
        return self._login_form(request, error=None, status=200)

    def _login_form(self, request: web.Request, *, error: str | None, status: int) -> web.Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or self._sessions.login_nonce()
        response = self._render(
            "login.html",
            request,
            {"csrf": self._sessions.login_token(nonce), "error": error},
            status=status,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=3600,
            httponly=True,
            samesite="Strict",
            secure=_secure(request),
            path="/login",
        )
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        nonce = request.cookies.get(LOGIN_COOKIE)
        token = form.get("csrf")
        if nonce is None or not same_token(
            token if isinstance(token, str) else None, self._sessions.login_token(nonce)
        ):
            log.warning(
                "console: POST /login refused: missing or wrong CSRF token (from %s)",
                _client(request),
            )
            raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the login page.")
        password = form.get("password")
        password = password[:MAX_PASSWORD_CHARS] if isinstance(password, str) else ""
        if not password or not await self._password.matches(password):
            log.warning("console: wrong password from %s", _client(request))
            return self._login_form(request, error="Wrong password.", status=401)
        session, cookie = self._sessions.begin()
        request[SESSION] = session
        log.info("console: session %s logged in from %s", session.id, _client(request))
        response = web.HTTPSeeOther("/conversations")
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self._sessions.lifetime),
            httponly=True,
            samesite="Strict",
            secure=_secure(request),
            path="/",
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        self._sessions.end(session)
        log.info("console: session %s logged out", session.id)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- rendering -----------------------------------------------------------------------------

    def _render(
        self, template: str, request: web.Request, values: dict[str, object], *, status: int = 200
    ) -> web.Response:
        session: Session | None = request.get(SESSION)
        page = self._templates.get_template(template).render(
            session_csrf=session.csrf if session is not None else None,
            nav=self._nav,
            current=request.path,
            **values,
        )
        return web.Response(text=page, content_type="text/html", status=status)


def _secure(request: web.Request) -> bool:
    """Over https, directly or through a proxy that says so (X-Forwarded-Proto)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _client(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For")
    remote = request.remote or "?"
    return f"{remote} (forwarded for {forwarded[:100]})" if forwarded else remote
