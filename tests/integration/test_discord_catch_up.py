"""Catch-up as an admin meets it: `chat-bridge run` stopped, mentions sent meanwhile, then the
bridge started again with `discord.catch_up_minutes`: it answers exactly the mentions it missed
within the window, once; not what it answered before, not what is older, not mere chatter.
Real processes against the Discord emulator and the local LLM server, which echoes."""

from __future__ import annotations

from pathlib import Path

from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer
from tests.integration.test_discord_shards import TOKEN, bridge_process
from tests.test_run import common_config, poll

MINUTES = 10


def config_file(tmp_path: Path, emu: DiscordEmulator, llm: LLMServer, name: str) -> Path:
    """The same bridge each time: one SQLite database, catch-up over the last MINUTES."""
    config = tmp_path / f"{name}.toml"
    config.write_text(
        common_config(tmp_path / "bridge.db", llm.base_url)
        + f'[discord]\nenabled = true\napi_base_url = "{emu.api_base_url}"\n'
        f'gateway_url = "{emu.gateway_url}"\nguild_ready_timeout = 0.2\n'
        f"catch_up_minutes = {MINUTES}\n"
    )
    return config


async def test_a_restarted_bridge_answers_the_mentions_it_missed_within_the_window_once(
    tmp_path: Path,
) -> None:
    async with DiscordEmulator(token=TOKEN) as emu, LLMServer() as llm:
        guild = emu.add_guild("Guild")
        general = emu.add_text_channel(guild, "general")
        random = emu.add_text_channel(guild, "random")
        alice, bob = emu.add_user("alice"), emu.add_user("bob")

        def replies(channel: int) -> list[str]:
            return [m.content for m in emu.messages(channel) if m.author_id == emu.bot_user_id]

        async with bridge_process(config_file(tmp_path, emu, llm, "first")) as first:
            await emu.user_message(general, alice, "asked live", mention_bot=True)
            await poll(lambda: replies(general) == ["You said: asked live"], 30)
            assert await first.stop() == 0, first.text

        # While no bridge runs: two mentions, chatter, and a mention from before the window.
        await emu.user_message(general, bob, "missed in general", mention_bot=True)
        await emu.user_message(random, alice, "just chatting, no mention")
        await emu.user_message(random, alice, "missed in random", mention_bot=True)
        old = (MINUTES + 1) * 60
        await emu.user_message(random, bob, "from before the window", mention_bot=True, age=old)

        async with bridge_process(config_file(tmp_path, emu, llm, "second")) as second:
            await poll(lambda: second.said("caught up"), 30)
            assert await second.stop() == 0, second.text

    assert replies(general) == ["You said: asked live", "You said: missed in general"]
    assert replies(random) == ["You said: missed in random"]
    assert second.said(rf"caught up 2 mention\(s\) of the last {MINUTES} minutes"), second.text
    assert len(llm.requests) == 3
