"""The Settings page as an admin uses it: a place's effective settings with their sources, the
chat commands' actions from forms (the next message answered with the model set here), a reset
with its confirmation, CSRF and login enforced, and no secret of the config on the page."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.console import ConsoleServer
from adapters.console.settings import HIDDEN, SettingsSection, masked
from bridge.config import load_settings, secret_values
from bridge.console_settings import ConsoleSettings
from bridge.policy import PolicyParts, build_policy
from bridge.policy.origin import Origin
from bridge.redaction import Redactor
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from storage import SqlChatStore
from tests.adapters.console.conftest import PASSWORD_HASH, Clock, Console, csrf_of
from tests.fakes import ScriptedLLM, inbound
from tests.storage.conversations_seed import FAILING, THREAD, TOOLS, seed

API_KEY = "sk-live-9a8b7c6d5e4f3a2b1c0d"
# The Slack thread of the seed, and where a message in it comes from.
IN_THREAD = Origin("slack", "U1", workspace="T1", channel="C1", thread=f"C1/{THREAD.thread}")
PLACE = {"platform": "slack", "workspace": "T1", "channel": "C1"}
HERE = "platform=slack&workspace=T1&channel=C1"
ROW = re.compile(
    r'<tr class="[a-z]+">\s*<td><code>([a-z_]+)</code></td><td class="value">(.*?)</td>'
    r"<td>(.*?)</td>",
    re.S,
)


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class Forms(HTMLParser):
    """The forms of a page with the values a browser would send unchanged."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None
        self._select: str | None = None
        self._textarea: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        form, name = self._open, a.get("name", "")
        if tag == "form":
            self._open = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._open)
        elif form is None:
            return
        elif tag == "input" and name:
            form.fields[name] = a.get("value", "")
        elif tag == "textarea":
            self._textarea, form.fields[name] = name, ""
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            form.fields[self._select] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._open is not None and self._textarea:
            self._open.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None
        self._select = None if tag == "select" else self._select
        self._textarea = None if tag == "textarea" else self._textarea

    def find(self, action: str, **having: str) -> Form:
        (found,) = [
            form
            for form in self.forms
            if form.action == action and all(form.fields.get(k) == v for k, v in having.items())
        ]
        return found


@dataclass
class Settings:
    console: Console
    parts: PolicyParts
    llm: ScriptedLLM
    store: SqlChatStore

    async def rows(self, query: str) -> dict[str, tuple[str, str]]:
        status, page = await self.console.page(f"/settings?{query}")
        assert status == 200, page
        return {key: (html.unescape(v), html.unescape(s)) for key, v, s in ROW.findall(page)}

    async def token(self) -> str:
        return csrf_of(await (await self.console.client.get("/settings")).text())

    async def submit(
        self, page: str, action: str, having: dict[str, str] | None = None, **values: str
    ) -> tuple[int, str, str]:
        """Fill in and send the form of `page` (a path, or a page's HTML) that posts to `action`
        (the one `having` these fields), as a browser would."""
        if page.startswith("/"):
            status, page = await self.console.page(page)
            assert status == 200, page
        form = Forms(page).find(action, **(having or {}))
        assert form.method == "post"
        return await self.post(action, **{**form.fields, **values})

    async def post(self, path: str, **form: str) -> tuple[int, str, str]:
        response = await self.console.client.post(path, data=form, allow_redirects=False)
        return response.status, response.headers.get("Location", ""), await response.text()

    async def answer(self, text: str, event: str) -> str:
        """A new message in the seeded Slack thread, through the intake: the model it asked."""
        await self.parts.intake.receive(
            inbound(text, event, key=THREAD), IN_THREAD, lambda _: RecordingSurface()
        )
        return self.llm.requests[-1].model


@pytest.fixture
async def settings_page(store: SqlChatStore) -> AsyncIterator[Settings]:
    seeded = await seed(store)
    config = load_settings(
        None,
        {"CHAT_BRIDGE_LLM__API_KEY": API_KEY},
        values={
            "llm": {"model": "default-model", "system_prompt": "Be helpful."},
            "access": {"admins": ["ADMIN"]},
            "streaming": {"edit_interval": 0.01},  # a reply's last edit waits no longer
            "overrides": [
                {"workspace": "T1", "temperature": 0.3},
                {"channel": "C1", "trigger": "always"},
                # A prompt that quotes the key, as a careless admin might write it.
                {"channel": "C2", "system_prompt": f"Never say {API_KEY}."},
            ],
        },
    )
    llm = ScriptedLLM()
    responder = Responder(
        store=store,
        llm=llm,
        scheduler=EditScheduler(interval=0.01),
        settings=ResponderSettings(model="default-model", titles=False),
    )
    parts = build_policy(config, responder=responder, store=store)
    await parts.policy.start()
    clock = Clock()
    server = ConsoleServer(
        ConsoleSettings(enabled=True, password_hash=SecretStr(PASSWORD_HASH)),
        browser=store,
        redact=Redactor(secret_values(config)).redact,
        sections=[SettingsSection(parts.commands.actions, browser=store)],
        clock=clock,
        sleep=clock.sleep,
    )
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Settings(Console(client, clock, seeded), parts, llm, store)
    finally:
        await client.close()


def session_of(caplog: pytest.LogCaptureFixture) -> str:
    (found,) = re.findall(r"console: session (\w+) logged in", caplog.text)
    return str(found)


async def test_each_value_shows_the_layer_that_supplied_it(settings_page: Settings) -> None:
    admin = Origin("slack", "ADMIN", workspace="T1", channel="C1")
    await settings_page.parts.commands.run(admin, "prompt", "Answer in French.")
    await settings_page.console.login()
    rows = await settings_page.rows("platform=slack&workspace=T1&channel=C1")
    assert rows["model"] == ("default-model", "defaults")
    assert rows["temperature"] == ("0.3", "override workspace T1")
    assert rows["trigger"] == ("always", "override channel C1")
    assert rows["system_prompt"] == ("Answer in French.", "set in chat for C1 by ADMIN")
    # The same rows the chat command `settings` lists, in its order.
    text = await settings_page.parts.commands.run(admin, "settings")
    assert [line.split(" = ")[0][2:] for line in text.splitlines()[1:]] == list(rows)
    status, page = await settings_page.console.page("/settings?platform=slack&channel=C1")
    assert "No workspace or guild given" in page
    assert "Answer in French." in page and "ADMIN" in page  # the runtime override, who set it

    # From a conversation: its place, its Slack thread included.
    chat = settings_page.console.seeded.ids[THREAD]
    status, page = await settings_page.console.page(f"/conversations/{chat}")
    assert f'href="/settings?chat={chat}"' in page
    status, page = await settings_page.console.page(f"/settings?chat={chat}")
    assert status == 200
    assert f'name="thread" value="C1/{THREAD.thread}"' in page
    assert f'href="/conversations/{chat}"' in page
    assert "default-model" in page and "override workspace T1" in page
    assert (await settings_page.console.page("/settings?chat=424242"))[0] == 404
    assert (await settings_page.console.page("/settings?platform=irc&channel=C1"))[0] == 400
    assert (await settings_page.console.page("/settings?platform=slack"))[0] == 400

    # Without a place: every runtime override, linked to its place.
    status, page = await settings_page.console.page("/settings")
    assert 'href="/settings?platform=slack&amp;channel=C1"' in page
    assert 'href="/settings" aria-current="page"' in page  # its entry in the navigation


async def test_a_model_set_on_the_page_answers_the_next_message_there(
    settings_page: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert await settings_page.answer("before", "e1") == "default-model"
    await settings_page.console.login()
    session = session_of(caplog)
    # From the conversation's page to its settings, then the model form as the page has it.
    status, page = await settings_page.console.page(
        f"/conversations/{settings_page.console.seeded.ids[THREAD]}"
    )
    link = html.unescape(re.findall(r'href="(/settings\?chat=\d+)"', page)[0])
    status, location, _ = await settings_page.submit(
        link, "/settings/override", {"key": "model"}, value=" big-model "
    )
    assert status == 303
    assert location == (
        "/settings?platform=slack&workspace=T1&channel=C1&thread=C1/1700000000.000100"
        "&done=set-model"
    )
    [stored] = await settings_page.store.runtime_overrides()
    assert (stored.platform, stored.scope, stored.values) == ("slack", "C1", {"model": "big-model"})
    assert stored.set_by == f"console:{session}"
    effective = settings_page.parts.policy.resolve(IN_THREAD)
    assert effective.reply.model == "big-model"
    assert effective.sources["model"] == f"set in the console for C1 (session {session})"
    assert await settings_page.answer("after", "e2") == "big-model"
    assert f"console: session {session} set model = 'big-model' for slack channel C1" in caplog.text

    status, page = await settings_page.console.page(location)
    assert "The model is set here." in page
    rows = await settings_page.rows("platform=slack&workspace=T1&channel=C1")
    assert rows["model"] == ("big-model", f"set in the console for C1 (session {session})")

    # The prompt and the trigger, as the chat commands set them.
    for key, value in (("system_prompt", "Be brief."), ("trigger", "mention")):
        status, _, _ = await settings_page.submit(
            f"/settings?{HERE}", "/settings/override", {"key": key}, value=value
        )
        assert status == 303
    [stored] = await settings_page.store.runtime_overrides()
    assert stored.values == {
        "model": "big-model",
        "system_prompt": "Be brief.",
        "trigger": "mention",
    }
    assert "system_prompt = (9 characters)" in caplog.text  # a prompt's length, not its text
    # A form sent unchanged sets what the page showed: the trigger select shows the current one.
    status, _, _ = await settings_page.submit(
        f"/settings?{HERE}", "/settings/override", {"key": "trigger"}
    )
    assert settings_page.parts.policy.resolve(IN_THREAD).trigger == "mention"


async def test_a_refused_value_says_why_as_the_chat_command_does(settings_page: Settings) -> None:
    await settings_page.console.login()
    admin = Origin("slack", "ADMIN", workspace="T1", channel="C1")
    for key, command, value in (
        ("model", "model", "two words"),
        ("system_prompt", "prompt", "   "),
        ("trigger", "trigger", "loud"),
        ("system_prompt", "prompt", "x" * 4001),
    ):
        status, _, page = await settings_page.submit(
            f"/settings?{HERE}", "/settings/override", {"key": key}, value=value
        )
        assert status == 400, (key, value)
        told = await settings_page.parts.commands.run(admin, command, value)
        assert html.escape(told, quote=False) in page
        # The page again, with what was typed kept in its form.
        form = Forms(page).find("/settings/override", key=key)
        assert form.fields.get("value") == (value.strip() if key != "trigger" else None)
    assert await settings_page.store.runtime_overrides() == []
    token = await settings_page.token()
    status, _, page = await settings_page.post(
        "/settings/override", csrf=token, key="temperature", value="2", **PLACE
    )
    assert status == 400 and "may be set at run time" in page


async def test_clear_removes_what_was_set_and_the_file_applies_again(
    settings_page: Settings,
) -> None:
    await settings_page.console.login()
    here = f"/settings?{HERE}"
    await settings_page.submit(here, "/settings/override", {"key": "model"}, value="big")
    await settings_page.submit(here, "/settings/override", {"key": "trigger"}, value="off")
    assert settings_page.parts.policy.resolve(IN_THREAD).trigger == "off"
    status, location, _ = await settings_page.submit(here, "/settings/clear")
    assert status == 303 and location.endswith("&done=cleared")
    assert await settings_page.store.runtime_overrides() == []
    effective = settings_page.parts.policy.resolve(IN_THREAD)
    assert (effective.reply.model, effective.trigger) == ("default-model", "always")
    assert await settings_page.answer("again", "e3") == "default-model"
    status, page = await settings_page.console.page(location)
    assert "set here at run time are removed" in page
    status, location, _ = await settings_page.submit(here, "/settings/clear")
    assert location.endswith("&done=nothing")


async def test_reset_asks_first_then_starts_a_fresh_conversation(
    settings_page: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = settings_page.store
    await settings_page.console.login()
    status, _, page = await settings_page.submit(f"/settings?{HERE}", "/settings/reset")
    assert status == 200 and "Start a fresh conversation here?" in page
    chat = await store.get_chat(THREAD)
    assert chat is not None and chat.context_floor == 0  # asking changed nothing

    status, location, _ = await settings_page.submit(page, "/settings/reset", {"confirmed": "yes"})
    assert status == 303 and location.endswith("&done=reset&count=1")
    chat = await store.get_chat(THREAD)
    assert chat is not None and chat.context_floor > 0
    other = await store.get_chat(FAILING)  # another channel keeps its conversation
    assert other is not None and other.context_floor == 0
    status, page = await settings_page.console.page(location)
    assert "Started a fresh conversation" in page and "(1 conversation)" in page
    assert f"console: session {session_of(caplog)} reset the conversation of slack" in caplog.text
    # The next message is answered without the earlier ones.
    await settings_page.answer("a fresh start", "e4")
    sent = [turn.content for turn in settings_page.llm.requests[-1].messages]
    assert not any("reset my password" in text for text in sent)
    assert any("a fresh start" in text for text in sent)
    # Without the workspace no Slack conversation is found, and the page says so.
    _, _, confirm = await settings_page.submit(
        "/settings?platform=slack&channel=C2", "/settings/reset"
    )
    _, location, _ = await settings_page.submit(confirm, "/settings/reset", {"confirmed": "yes"})
    assert location.endswith("&done=reset&count=0")
    assert "Nothing to reset" in (await settings_page.console.page(location))[1]


async def test_a_discord_thread_keeps_its_own_settings_as_bridge_model_there_does(
    settings_page: Settings,
) -> None:
    await settings_page.console.login()
    # A thread D1 of channel P1 in category K1, as the form takes it.
    here = "/settings?platform=discord&workspace=G1&channel=P1&thread=D1&category=K1"
    status, location, _ = await settings_page.submit(
        here, "/settings/override", {"key": "trigger"}, value="off"
    )
    assert status == 303
    [stored] = await settings_page.store.runtime_overrides()
    assert (stored.platform, stored.scope, stored.values) == ("discord", "D1", {"trigger": "off"})
    in_thread = Origin("discord", "U1", workspace="G1", channel="P1", thread="D1", category="K1")
    assert settings_page.parts.policy.resolve(in_thread).trigger == "off"
    in_channel = Origin("discord", "U1", workspace="G1", channel="P1", category="K1")
    assert settings_page.parts.policy.resolve(in_channel).trigger == "mention"
    status, page = await settings_page.console.page(location)
    assert "discord thread D1 (workspace G1)" in page and "D1 (here)" in page
    # From the stored conversation (a Discord thread is stored as a channel of its own).
    chat = settings_page.console.seeded.ids[TOOLS]
    status, page = await settings_page.console.page(f"/settings?chat={chat}")
    assert 'name="channel" value="D1"' in page and "give its parent channel" in page


async def test_a_change_without_the_session_token_is_refused_and_changes_nothing(
    settings_page: Settings,
) -> None:
    await settings_page.console.login()
    for path, form in (
        ("/settings/override", {"key": "model", "value": "stolen"}),
        ("/settings/clear", {}),
        ("/settings/reset", {"confirmed": "yes"}),
    ):
        for token in ({}, {"csrf": "not-the-token"}):
            status, _, _ = await settings_page.post(path, **form, **token, **PLACE)
            assert status == 403, (path, token)
    assert await settings_page.store.runtime_overrides() == []
    chat = await settings_page.store.get_chat(THREAD)
    assert chat is not None and chat.context_floor == 0


async def test_without_a_session_every_settings_path_goes_to_the_login(
    settings_page: Settings,
) -> None:
    status, _ = await settings_page.console.page("/settings?platform=slack&channel=C1")
    assert status == 303
    for path in ("/settings/override", "/settings/clear", "/settings/reset"):
        status, location, _ = await settings_page.post(
            path, key="model", value="x", confirmed="yes", **PLACE
        )
        assert (status, location) == (303, "/login"), path
    assert await settings_page.store.runtime_overrides() == []


async def test_no_secret_of_the_config_appears_on_the_page(settings_page: Settings) -> None:
    await settings_page.console.login()
    # Even an admin pasting the key as a model name sees it redacted.
    await settings_page.submit(
        f"/settings?{HERE}", "/settings/override", {"key": "model"}, value=API_KEY
    )
    pages = [
        (await settings_page.console.page(path))[1]
        for path in (
            "/settings",
            "/settings?platform=slack&workspace=T1&channel=C1",
            "/settings?platform=slack&workspace=T1&channel=C2",
            "/static/settings.css",
        )
    ]
    everything = "\n".join(pages)
    assert API_KEY not in everything
    assert "Never say [redacted]." in everything and "[redacted]" in pages[0]
    assert masked("api_key", "sk-1") == HIDDEN and masked("bot_token", "x") == HIDDEN
    assert masked("max_output_tokens", "100") == "100"
