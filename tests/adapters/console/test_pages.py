"""The conversation pages as an admin reads them: the list filtered and paged, one conversation
with its tool round, and nothing of the config's secrets anywhere."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from adapters.console import ConsoleServer
from bridge.app import build
from bridge.config import load_settings, secret_values
from bridge.domain import MessageStatus
from storage import SqlChatStore
from tests.adapters.console.conftest import PASSWORD, PASSWORD_HASH, Console, csrf_of
from tests.storage.conversations_seed import FAILING, THREAD, TOOLS, WAITING, answer, ask, seed

ROW = re.compile(r'<a href="/conversations/(\d+)">')


def rows(html: str) -> list[int]:
    return [int(chat_id) for chat_id in ROW.findall(html)]


def older_link(html: str) -> str | None:
    match = re.search(r'<a rel="next" href="([^"]+)">', html)
    return None if match is None else match.group(1).replace("&amp;", "&")


async def test_the_list_filters_and_pages(console: Console) -> None:
    ids = console.seeded.ids
    await console.login()
    status, html = await console.page("/conversations")
    assert status == 200
    assert rows(html) == [ids[WAITING], ids[TOOLS], ids[FAILING]]  # a page of 3, newest first
    assert "2027-01-04 12:00 UTC" in html and "failed" in html
    link = older_link(html)
    assert link is not None and "offset" not in link.lower()
    status, html = await console.page(link)
    assert rows(html) == [ids[THREAD]] and older_link(html) is None
    assert "Password reset" in html and ">2<" in html  # its title and message count
    assert 'href="/conversations">Newest</a>' in html

    async def listed(query: str) -> list[int]:
        status, html = await console.page(f"/conversations?{query}")
        assert status == 200, html
        return rows(html)

    assert await listed("platform=slack") == [ids[FAILING], ids[THREAD]]
    assert await listed("workspace=G1") == [ids[TOOLS]]
    assert await listed("channel=C1") == [ids[THREAD]]
    assert await listed("user=U1") == [ids[TOOLS], ids[THREAD]]
    assert await listed("status=failed") == [ids[FAILING]]
    assert await listed("since=2027-01-02&until=2027-01-03") == [ids[TOOLS], ids[FAILING]]
    assert await listed("q=paris") == [ids[TOOLS]]
    assert await listed("platform=&q=") == [ids[WAITING], ids[TOOLS], ids[FAILING]]
    # Filters are kept in the form and in the "older" link.
    status, html = await console.page("/conversations?platform=slack&q=%3Cb%3E")
    assert 'value="&lt;b&gt;"' in html and "<b>" not in html
    assert (await console.page("/conversations?status=lost"))[0] == 400
    assert (await console.page("/conversations?older=yesterday"))[0] == 400
    assert (await console.page("/conversations?until=2027-13-01"))[0] == 400

    status, html = await console.page(
        "/conversations?user=U1&older=" + "2027-01-03T12:00:00%2B00:00,0"
    )
    assert rows(html) == [ids[THREAD]]


async def test_one_conversation_shows_its_messages_with_a_tool_round(console: Console) -> None:
    await console.login()
    status, html = await console.page(f"/conversations/{console.seeded.ids[TOOLS]}")
    assert status == 200
    order = [html.index(text) for text in (
        "What is the weather in Paris?", "weather.today", "Sunny, 21 °C",
        "It is sunny in Paris, 21 °C.",
    )]  # fmt: skip
    assert order == sorted(order)
    assert "alice" in html  # the author's name
    assert "paris-map.png" in html  # the attachment's name
    assert "tool calls" in html and "tool result" in html
    assert "{&#34;city&#34;: &#34;Paris&#34;}" in html  # the call's arguments, escaped
    assert "call_w1" in html and "0.4 s" in html  # the result's call id and time
    assert "reasoned 3.5 s" in html
    assert "300 in, 12 out tokens" in html and "gpt-test" in html

    status, html = await console.page(f"/conversations/{console.seeded.ids[FAILING]}")
    assert "Error: the model service returned an error" in html
    assert "status-failed" in html
    assert (await console.page("/conversations/424242"))[0] == 404


async def test_a_message_is_shown_as_text_never_as_markup(
    console: Console, store: SqlChatStore
) -> None:
    question = await ask(store, THREAD, "<script>alert(1)</script> **bold**", "1.9")
    await answer(store, question, "<img src=x onerror=alert(2)>")
    await console.login()
    _, html = await console.page(f"/conversations/{console.seeded.ids[THREAD]}")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x" in html


async def test_no_secret_of_the_config_appears_in_any_page(tmp_path: Path) -> None:
    secrets = {
        "CHAT_BRIDGE_LLM__API_KEY": "sk-live-4f1d2c3b5a6e7f8091a2b3c4",
        "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-1111-2222-secretbottoken",
        "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-1-A111-secretapptoken",
        "CHAT_BRIDGE_SLACK__SIGNING_SECRET": "signing-secret-0123456789",
        "CHAT_BRIDGE_DISCORD__TOKEN": "discord-token-abcdefghijklmnop",
        "CHAT_BRIDGE_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
        "CHAT_BRIDGE_CONSOLE__ENABLED": "true",
        "CHAT_BRIDGE_CONSOLE__PASSWORD_HASH": PASSWORD_HASH,
    }
    settings = load_settings(None, secrets)
    bridge = await build(settings)
    try:
        (console,) = [s for s in bridge.services if s.name == "console"]
        assert isinstance(console, ConsoleServer)
        seeded = await seed(bridge.store)
        # A stored error that quotes a secret (a provider echoing the key back) is shown
        # redacted, as the logs show it.
        key = secrets["CHAT_BRIDGE_LLM__API_KEY"]
        question = await ask(bridge.store, THREAD, "and now?", "1.5")
        await answer(bridge.store, question, "", status=MessageStatus.FAILED,
                     error=f"401: Incorrect API key provided: {key}")  # fmt: skip
        client = TestClient(TestServer(console.app()))
        await client.start_server()
        try:
            pages = [await (await client.get("/login")).text()]
            token = csrf_of(pages[0])
            await client.post("/login", data={"password": PASSWORD, "csrf": token})
            paths = ["/conversations", "/conversations?platform=slack", "/static/console.css"]
            paths += [f"/conversations/{chat_id}" for chat_id in seeded.ids.values()]
            for path in paths:
                response = await client.get(path)
                assert response.status == 200, path
                pages.append(await response.text())
        finally:
            await client.close()
        everything = "\n".join(pages)
        assert "401: Incorrect API key provided: [redacted]" in everything
        for secret in [*secret_values(settings), *secrets.values()]:
            if secret.startswith("sqlite") or secret == "true":
                continue
            assert secret not in everything
        assert "$argon2" not in everything
    finally:
        await bridge.store.close()
        if bridge.close is not None:
            await bridge.close()


async def test_the_console_is_a_service_only_when_enabled(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    for enabled in (False, True):
        environ = {"CHAT_BRIDGE_STORAGE__URL": url}
        if enabled:
            environ |= {
                "CHAT_BRIDGE_CONSOLE__ENABLED": "true",
                "CHAT_BRIDGE_CONSOLE__PASSWORD_HASH": PASSWORD_HASH,
            }
        bridge = await build(load_settings(None, environ))
        names = [service.name for service in bridge.services]
        await bridge.store.close()
        if bridge.close is not None:
            await bridge.close()
        assert ("console" in names) is enabled
        if enabled:  # after the parts the store needs, before the responder (and platforms)
            assert names.index("console") > names.index("policy")
            assert names.index("console") < names.index("responder")
