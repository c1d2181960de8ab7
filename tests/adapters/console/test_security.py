"""The console's doors: login, sessions, CSRF, headers and logs, as a browser meets them."""

from __future__ import annotations

import logging

import pytest

from adapters.console.sessions import COOKIE
from tests.adapters.console.conftest import PASSWORD, Console, csrf_of

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def session_cookie(console: Console) -> str | None:
    for cookie in console.client.session.cookie_jar:
        if cookie.key == COOKIE:
            return cookie.value
    return None


async def test_the_right_password_opens_a_session_with_a_safe_cookie(console: Console) -> None:
    page = await console.client.get("/login")
    assert page.status == 200
    response = await console.client.post(
        "/login",
        data={"password": PASSWORD, "csrf": csrf_of(await page.text())},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/conversations"
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert not cookie["secure"]  # plain http here: a Secure cookie would never come back
    assert int(cookie["max-age"]) == 12 * 3600
    status, html = await console.page("/conversations")
    assert status == 200 and "D9" in html
    # The login page sends a logged-in admin on.
    status, _ = await console.page("/login")
    assert status == 303


async def test_the_cookie_is_secure_when_the_proxy_says_https(console: Console) -> None:
    proxied = await console.client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert proxied.cookies["chat_bridge_console_login"]["secure"] is True
    # (The test client speaks plain http, so it would not send a Secure cookie back: the login
    # itself starts from a plain page.)
    page = await console.client.get("/login")
    response = await console.client.post(
        "/login",
        data={"password": PASSWORD, "csrf": csrf_of(await page.text())},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.cookies[COOKIE]["secure"] is True


async def test_a_wrong_password_is_refused_after_a_pause_and_logged_without_it(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.console")
    assert await console.login("correct horse battery stapler") == 401
    assert console.clock.slept == [0.5]
    assert session_cookie(console) is None
    status, _ = await console.page("/conversations")
    assert status == 303
    refused = [r.getMessage() for r in caplog.records if "wrong password" in r.getMessage()]
    assert refused == ["console: wrong password from 127.0.0.1"]
    assert "stapler" not in caplog.text and PASSWORD not in caplog.text
    # The page says so, and offers the form again.
    page = await console.client.get("/login")
    assert page.status == 200
    assert await console.login("") == 401


async def test_a_login_without_its_csrf_token_is_refused(console: Console) -> None:
    await console.client.get("/login")
    response = await console.client.post("/login", data={"password": PASSWORD})
    assert response.status == 403
    response = await console.client.post("/login", data={"password": PASSWORD, "csrf": "x"})
    assert response.status == 403
    assert console.clock.slept == []  # refused before the password was even looked at
    assert session_cookie(console) is None


async def test_pages_need_a_session(console: Console) -> None:
    for path in ("/", "/conversations", f"/conversations/{console.seeded.ids.popitem()[1]}"):
        response = await console.client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"] in ("/login", "/conversations"), path
    response = await console.client.get("/conversations")  # followed to the end
    assert response.url.path == "/login"
    # A forged or tampered cookie is no session.
    await console.login()
    real = session_cookie(console)
    assert real is not None
    session_id, expires, signature = real.split(".")
    for forged in (f"{session_id}.{int(expires) + 3600}.{signature}", f"abc.{expires}.{signature}",
                   "nonsense", f"{session_id}.{expires}.é"):  # fmt: skip
        console.client.session.cookie_jar.clear()
        response = await console.client.get(
            "/conversations", headers={"Cookie": f"{COOKIE}={forged}"}, allow_redirects=False
        )
        assert response.status == 303, forged


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.console")
    await console.login()
    html = (await console.page("/conversations"))[1]
    token = csrf_of(html)
    response = await console.client.post("/logout", data={}, allow_redirects=False)
    assert response.status == 403
    response = await console.client.post("/logout", data={"csrf": token[:-2] + "xx"})
    assert response.status == 403
    assert "missing or wrong CSRF token" in caplog.text
    status, _ = await console.page("/conversations")
    assert status == 200  # still logged in

    old = session_cookie(console)
    response = await console.client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert session_cookie(console) is None
    # The logged-out session's cookie is refused even if someone kept it.
    assert old is not None
    response = await console.client.get(
        "/conversations", headers={"Cookie": f"{COOKIE}={old}"}, allow_redirects=False
    )
    assert response.status == 303


async def test_an_expired_session_is_refused(console: Console) -> None:
    await console.login()
    console.clock.now += 12 * 3600 - 60
    assert (await console.page("/conversations"))[0] == 200
    console.clock.now += 120
    status, _ = await console.page("/conversations")
    assert status == 303


async def test_every_response_carries_the_security_headers(console: Console) -> None:
    responses = [
        await console.client.get("/login"),
        await console.client.get("/conversations", allow_redirects=False),
        await console.client.get("/static/console.css"),
    ]
    await console.login()
    responses += [
        await console.client.get("/conversations"),
        await console.client.get(f"/conversations/{console.seeded.ids.popitem()[1]}"),
        await console.client.get("/conversations/999999"),
        await console.client.get("/conversations?since=yesterday"),
        await console.client.post("/logout", data={}),
    ]
    assert [r.status for r in responses] == [200, 303, 200, 200, 200, 404, 400, 403]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "*" not in policy


async def test_every_request_is_logged_with_the_session_id_never_the_cookie(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.console")
    await console.client.get("/conversations?q=secret+words", allow_redirects=False)
    await console.login()
    await console.page("/conversations")
    cookie = session_cookie(console)
    assert cookie is not None
    session_id = cookie.split(".")[0]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "console: GET /conversations 303 session -" in lines
    assert "console: GET /login 200 session -" in lines
    assert f"console: POST /login 303 session {session_id}" in lines
    assert f"console: GET /conversations 200 session {session_id}" in lines
    assert cookie.split(".", 1)[1] not in caplog.text  # neither its expiry+signature
    assert "secret words" not in caplog.text  # the query (what was searched) stays out
