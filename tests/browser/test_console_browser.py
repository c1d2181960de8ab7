"""The admin console as an admin uses it, in Chromium: log in, watch a reply grow on the live page
while Discord shows the same text, find a conversation and open it, read the usage charts and
download the CSV; and the refusals (a wrong password, a change without its CSRF token, an expired
session). A screenshot of each page is saved (see conftest)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from pathlib import Path

from playwright.async_api import Browser, expect

from sandbox.llm_server import ScriptedReply
from tests.browser.conftest import Community, console_bridge, errors_of, log_in
from tests.integration.whole_bridge import eventually, settled

# An emoji first: positions the page gets count characters, one for 🚀 (two UTF-16 units).
STORY = "🚀 " + " ".join(f"word{i}" for i in range(120)) + "."


async def test_a_reply_grows_on_the_live_page_as_it_grows_on_discord(
    tmp_path: Path, browser: Browser, community: Community, shots: Path
) -> None:
    emu = community.emu
    async with console_bridge(tmp_path, community) as console:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        errors = errors_of(page)
        await log_in(page, console.url)
        await expect(page).to_have_url(f"{console.url}/conversations")
        streams: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if "/live/events" in r.url else None)
        await page.goto(f"{console.url}/live")
        await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")

        community.llm.script(ScriptedReply(STORY, tokens_per_second=40))  # about 3 seconds
        await emu.user_message(community.support, community.alice, "tell me a story", True)
        row = page.locator("li.live-reply").first
        text = row.locator("pre.text")
        # While it streams: the page shows a part of the story that Discord shows too.
        await expect(row.locator(".status")).to_have_text("streaming", timeout=10_000)
        await expect(text).to_contain_text("word1", timeout=10_000)
        seen_growing = await text.inner_text()
        assert STORY.startswith(seen_growing.strip()) and seen_growing.strip() != STORY
        shown_on_discord = community.replies(community.support)
        assert shown_on_discord and STORY.startswith(shown_on_discord[-1].removesuffix(" ▌"))
        await page.screenshot(path=shots / "live.png")

        await expect(row.locator(".status")).to_have_text("answered", timeout=15_000)
        await expect(text).to_have_text(STORY)
        # One stream all along: every append followed what the page held (no fresh start).
        assert len(streams) == 1, streams
        await eventually(lambda: community.replies(community.support) == [STORY])
        assert await row.locator(".model").inner_text() == "local"
        assert int(await row.locator(".updates").inner_text()) >= 2
        # Its place links to the conversation.
        await row.locator("a.place").click()
        await expect(page.locator("body")).to_contain_text("tell me a story")
        await settled(console.bridge)
        assert errors == []


async def test_conversations_filter_open_and_the_usage_charts_and_csv(
    tmp_path: Path, browser: Browser, community: Community, shots: Path
) -> None:
    emu = community.emu
    quota = "[limits]\nuser_daily_tokens = 18\n"  # alice's reply takes 16: near it
    async with console_bridge(tmp_path, community, more=quota) as console:
        community.llm.script(
            ScriptedReply("The invoice is in the billing tab."),
            ScriptedReply("Lunch is at noon."),
        )
        await emu.user_message(community.support, community.alice, "where is my invoice?", True)
        await eventually(lambda: community.replies(community.support))
        await emu.user_message(community.general, community.bob, "when is lunch?", True)
        await eventually(lambda: community.replies(community.general))
        await settled(console.bridge)

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors = errors_of(page)
        await log_in(page, console.url)
        rows = page.locator("table.chats tbody tr")
        await expect(rows).to_have_count(2)
        await page.screenshot(path=shots / "conversations.png", full_page=True)

        await page.fill("input[name=channel]", str(community.support))
        await page.click("form.filters button[type=submit]")
        await expect(rows).to_have_count(1)
        await rows.first.locator("a").first.click()
        body = page.locator("main")
        await expect(body).to_contain_text("where is my invoice?")
        await expect(body).to_contain_text("The invoice is in the billing tab.")
        await expect(body).not_to_contain_text("when is lunch?")
        await page.screenshot(path=shots / "conversation.png", full_page=True)

        await page.click("nav >> text=Usage")
        await expect(page).to_have_url(f"{console.url}/usage")
        drawn = await page.evaluate(
            "() => ['chart-tokens', 'chart-replies', 'chart-errors'].map(id => {"
            " const chart = window.Chart && window.Chart.getChart(document.getElementById(id));"
            " return chart ? chart.data.datasets.reduce((n, d) => n + d.data.length, 0) : -1; })"
        )
        assert all(points > 0 for points in drawn), drawn
        await expect(page.locator("#usage-days")).to_contain_text("discord")
        near = page.locator("#quota-users")
        await expect(near).to_contain_text(str(community.alice))
        await expect(near).not_to_contain_text(str(community.bob))
        await page.screenshot(path=shots / "usage.png", full_page=True)

        async with page.expect_download() as download_info:
            await page.click("a.usage-csv")
        download = await download_info.value
        saved = await asyncio.to_thread(Path(await download.path()).read_text)
        table = list(csv.DictReader(io.StringIO(saved)))
        days = [row for row in table if row["kind"] == "day"]
        assert days and sum(int(row["replies"]) for row in days) == 2
        channels = {row["key"] for row in table if row["kind"] == "channel"}
        assert {str(community.support), str(community.general)} <= channels
        assert errors == []


async def test_a_wrong_password_a_missing_csrf_token_and_an_expired_session_are_refused(
    tmp_path: Path, browser: Browser, community: Community, shots: Path
) -> None:
    # A login lasts 7.2 seconds here.
    async with console_bridge(tmp_path, community, session_hours=0.002) as console:
        context = await browser.new_context()
        page = await context.new_page()
        await log_in(page, console.url, password="not the password")
        await expect(page.locator("p.error")).to_have_text("Wrong password.")
        await expect(page).to_have_url(f"{console.url}/login")
        await page.screenshot(path=shots / "login-refused.png")

        await log_in(page, console.url)
        await expect(page).to_have_url(f"{console.url}/conversations")
        # The session's cookie goes with it, but not the page's CSRF token: refused.
        refused = await context.request.post(f"{console.url}/logout", form={}, max_redirects=0)
        assert refused.status == 403
        assert "CSRF" in await refused.text()
        await page.reload()
        await expect(page).to_have_url(f"{console.url}/conversations")  # still logged in

        await asyncio.sleep(7.5)
        await page.goto(f"{console.url}/usage")
        await expect(page).to_have_url(f"{console.url}/login")


async def test_a_channel_s_model_changed_on_the_settings_page_is_used_for_the_next_reply(
    tmp_path: Path, browser: Browser, community: Community, shots: Path
) -> None:
    emu = community.emu
    async with console_bridge(tmp_path, community) as console:
        await emu.user_message(community.support, community.alice, "first question", True)
        await eventually(lambda: community.replies(community.support))
        await settled(console.bridge)
        assert [r["model"] for r in community.llm.requests if r.get("stream")] == ["local"]

        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = errors_of(page)
        await log_in(page, console.url)
        await page.locator("table.chats tbody tr a").first.click()
        await page.click("a.settings-link")
        await expect(page.locator("main")).to_contain_text("local")  # the model in force now
        await page.fill("form[action='/settings/override'] input[name=value]", "big-model")
        await page.click("text=Set model")
        await expect(page).to_have_url(re.compile(r"/settings\?.*done="))
        await expect(page.locator("main")).to_contain_text("big-model")
        await page.screenshot(path=shots / "settings.png", full_page=True)

        await emu.user_message(community.support, community.alice, "second question", True)
        await eventually(lambda: len(community.replies(community.support)) == 2)
        await settled(console.bridge)
        models = [r["model"] for r in community.llm.requests if r.get("stream")]
        assert models == ["local", "big-model"]
        # Elsewhere the file's model still answers.
        await emu.user_message(community.general, community.bob, "and here?", True)
        await eventually(lambda: community.replies(community.general))
        await settled(console.bridge)
        assert [r["model"] for r in community.llm.requests if r.get("stream")][-1] == "local"
        assert errors == []
