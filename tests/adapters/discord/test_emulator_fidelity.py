"""The emulator's new surfaces behave as Discord does, so the adapter's tests mean something:
components are validated like Discord validates them, the CDN refuses unsigned, tampered and
expired links, and only a button that is there can be clicked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sandbox.discord_emulator import FileUpload
from tests.adapters.discord.conftest import TOKEN, Scene

GONE = "This content is no longer available."


def button(custom_id: str, label: str = "Go", style: int = 1) -> dict[str, Any]:
    return {"type": 2, "style": style, "label": label, "custom_id": custom_id}


def row(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(buttons)}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as session:
        yield session


async def create(
    scene: Scene, http: aiohttp.ClientSession, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    url = f"{scene.emu.api_base_url}/channels/{scene.channel_id}/messages"
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("components", "error_path"),
    [
        ([row(*(button(f"b{i}") for i in range(6)))], ["components", "0", "components"]),
        ([row(button("x" * 101))], ["components", "0", "components", "0", "custom_id"]),
        ([row(button("same"), button("same"))], ["components", "0", "components", "1"]),
        ([row(button(f"r{i}")) for i in range(6)], ["components"]),
        ([row(button("ok", label="y" * 81))], ["components", "0", "components", "0", "label"]),
        ([button("not in a row")], ["components", "0", "type"]),
    ],
)
async def test_components_are_validated_like_discord(
    scene: Scene, http: aiohttp.ClientSession, components: list[Any], error_path: list[str]
) -> None:
    status, body = await create(scene, http, {"content": "hi", "components": components})
    assert status == 400 and body["code"] == 50035
    errors = body["errors"]
    for part in error_path:
        errors = errors[part]
    assert errors


async def test_components_stay_through_an_edit_without_them_and_go_with_an_empty_list(
    scene: Scene, http: aiohttp.ClientSession
) -> None:
    emu = scene.emu
    status, made = await create(scene, http, {"components": [row(button("only", style=4))]})
    assert status == 200  # buttons alone make a message
    url = f"{emu.api_base_url}/channels/{scene.channel_id}/messages/{made['id']}"
    async with http.patch(url, json={"content": "edited"}) as response:
        assert (await response.json())["components"] == [row(button("only", style=4))]
    async with http.patch(url, json={"components": []}) as response:
        assert (await response.json())["components"] == []
    with pytest.raises(LookupError):
        await emu.click(scene.channel_id, int(made["id"]), scene.alice, "only")


async def test_a_click_needs_the_button_and_a_command_cannot_be_answered_as_a_click(
    scene: Scene, http: aiohttp.ClientSession
) -> None:
    emu = scene.emu
    _, made = await create(scene, http, {"content": "q", "components": [row(button("yes"))]})
    with pytest.raises(LookupError):
        await emu.click(scene.channel_id, int(made["id"]), scene.alice, "no")
    clicked = await emu.click(scene.channel_id, int(made["id"]), scene.alice, "yes")
    record = emu.interaction(clicked)
    assert (record.type, record.custom_id, record.source_message_id) == (3, "yes", int(made["id"]))
    callback = f"{emu.api_base_url}/interactions/{clicked}/{record.token}/callback"
    async with http.post(callback, json={"type": 6}) as response:
        assert response.status == 204
    async with http.post(callback, json={"type": 6}) as response:
        assert (await response.json())["code"] == 40060  # acknowledged once only


async def test_the_cdn_serves_signed_links_only_until_they_expire(
    scene: Scene, http: aiohttp.ClientSession
) -> None:
    emu = scene.emu
    sent = await emu.user_message(
        scene.channel_id, scene.alice, "", attachments=[FileUpload("a.txt", b"hello")]
    )
    shown = emu.message(sent)
    assert shown is not None
    [attachment] = shown.attachments
    url, proxy = attachment["url"], attachment["proxy_url"]
    assert (attachment["filename"], attachment["size"], attachment["content_type"]) == (
        "a.txt", 5, "text/plain",
    )  # fmt: skip
    async with aiohttp.ClientSession() as anonymous:  # no token: the signature is the key
        for good in (url, proxy):
            async with anonymous.get(good) as response:
                assert response.status == 200 and await response.read() == b"hello"
        for bad in (url.split("?")[0], url.replace("hm=", "hm=0")):
            async with anonymous.get(bad) as response:
                assert response.status == 404 and await response.text() == GONE
        emu.expire_attachment_links()
        async with anonymous.get(url) as response:
            assert response.status == 404 and await response.text() == GONE
        # A fetch of the message over REST hands out a freshly signed, working link.
        message_url = f"{emu.api_base_url}/channels/{scene.channel_id}/messages/{sent}"
        async with http.get(message_url) as response:
            fresh = (await response.json())["attachments"][0]["url"]
        async with anonymous.get(fresh) as response:
            assert fresh != url and response.status == 200
