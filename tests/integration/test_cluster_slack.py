"""Several instances on one PostgreSQL database, as an admin runs them: real `chat-bridge run`
processes with `[cluster]` on, Socket Mode or HTTP, against the Slack emulator. The workspace's
replies are produced by the one instance holding its lease; the others hand their events over.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from sandbox.llm_server import ScriptedReply
from tests.integration.cluster_world import TAKEOVER_SECONDS, ClusterWorld, cluster_world

CHANNEL = "C0GENERAL"
STORY = " ".join(f"Word{n}" for n in range(400))  # 20 s at 20 tokens per second
NOTICE = "Reply interrupted: the bridge restarted"


def assistant_turns(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages if m["role"] == "assistant"]


async def test_messages_of_one_thread_received_by_two_instances_are_answered_in_order(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster_world(postgres_url, tmp_path) as world:
        first = ScriptedReply(text="First answer, " + " ".join(["one"] * 40), tokens_per_second=40)
        world.llm.script(first, "Second answer.", "Third answer.")
        a = await world.start("a")
        await world.holder()
        b = await world.start("b")
        await world.wait_running(b)
        await world.emu.wait_for_socket(2, timeout=30)

        root = await world.emu.user_message(CHANNEL, "<@U0BOT> count to forty")
        await world.emu.wait_for(lambda: world.bot_replies(CHANNEL, root), timeout=30)
        # Two follow-ups while the first answer streams: Socket Mode gives each envelope to the
        # next connection, so one of them reaches the instance without the lease.
        await world.emu.user_message(CHANNEL, "and then?", thread_ts=root)
        await asyncio.sleep(0.5)
        await world.emu.user_message(CHANNEL, "and at last?", thread_ts=root)
        await world.emu.wait_for(lambda: len(world.bot_replies(CHANNEL, root)) == 3, timeout=60)
        await world.emu.wait_for(
            lambda: "Third answer." in world.bot_replies(CHANNEL, root)[2], timeout=30
        )

        replies = world.bot_replies(CHANNEL, root)
        assert replies[0].startswith("First answer") and "Second answer." in replies[1]
        # Each request was built once the previous answer was complete, and holds it.
        assert len(world.llm.requests) == 3
        assert assistant_turns(world.llm.requests[1]) == [first.text]
        assert assistant_turns(world.llm.requests[2]) == [first.text, "Second answer."]
        assert b.said("handed to the holder") or a.said("handed to the holder")
        assert await a.stop() == 0 and await b.stop() == 0


async def test_one_event_delivered_to_three_instances_at_once_is_answered_once(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster_world(postgres_url, tmp_path) as world:
        world.llm.script("Only once.")
        ports = [_free_port() for _ in range(3)]
        instances = [await world.start(f"h{n}", http_port=port) for n, port in enumerate(ports)]
        for instance in instances:
            await world.wait_running(instance)
        await world.holder()
        world.emu.delivery = "http"
        world.emu.event_url = f"http://127.0.0.1:{ports[0]}/slack/events"
        root = await world.emu.user_message(CHANNEL, "<@U0BOT> hello")
        bodies = [d.body for d in world.emu.deliveries]
        # The same events again, to all three at once (a retry that reached every instance).
        async with aiohttp.ClientSession() as http:
            posts = [
                _post(http, world, body, port) for body in bodies for port in ports
            ]  # fmt: skip
            statuses = await asyncio.gather(*posts)
        assert set(statuses) == {200}
        await world.emu.wait_for(lambda: world.bot_replies(CHANNEL, root), timeout=30)
        await world.emu.wait_for(
            lambda: "Only once." in world.bot_replies(CHANNEL, root)[0], timeout=30
        )
        await asyncio.sleep(2.0)  # time for a second answer to show, if one were coming
        assert world.bot_replies(CHANNEL, root) == ["Only once."]
        assert len(world.llm.requests) == 1
        for instance in instances:
            assert await instance.stop() == 0, instance.text


async def test_the_owner_killed_mid_reply_its_replies_are_finished_and_its_queue_answered(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster_world(postgres_url, tmp_path) as world:
        slow = ScriptedReply(text=STORY, tokens_per_second=20)
        world.llm.script(slow, slow, "The queued one, answered.")
        first = await world.start("first")
        owner = await world.holder()
        assert owner is first
        standby = await world.start("standby")
        await world.wait_running(standby)
        await world.emu.wait_for_socket(2, timeout=30)

        one = await world.emu.user_message(CHANNEL, "<@U0BOT> a long story")
        two = await world.emu.user_message(CHANNEL, "<@U0BOT> another long story")

        def streaming(root: str) -> bool:
            replies = world.bot_replies(CHANNEL, root)
            return bool(replies) and "Word20" in replies[0]

        await world.emu.wait_for(lambda: streaming(one) and streaming(two), timeout=60)
        await world.emu.user_message(CHANNEL, "and after that?", thread_ts=one)  # queued
        await asyncio.sleep(1.0)  # stored by the owner, or still queued for it: both must end
        assert len(world.llm.requests) == 2  # answered
        killed = asyncio.get_running_loop().time()
        owner.kill()
        await owner.process.wait()

        def settled() -> bool:
            first_thread = world.bot_replies(CHANNEL, one)
            second_thread = world.bot_replies(CHANNEL, two)
            return (
                len(first_thread) == 2
                and NOTICE in first_thread[0]
                and "The queued one, answered." in first_thread[1]
                and len(second_thread) == 1
                and NOTICE in second_thread[0]
            )

        await world.emu.wait_for(settled, timeout=60)
        took = asyncio.get_running_loop().time() - killed
        print(f"cluster: settled {took:.2f}s after the owner was killed")
        assert took <= TAKEOVER_SECONDS + 5, standby.text
        assert standby.said("holds slack:T0TEAM")
        assert await standby.stop() == 0


async def test_an_instance_joining_mid_load_loses_and_doubles_nothing_within_the_budget(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster_world(postgres_url, tmp_path) as world:
        world.emu.apply_slack_tiers()
        # Opening a Socket Mode connection is Tier 1 (about one a minute): three instances
        # starting within a minute wait for it, as they would on Slack. Not what this tests.
        world.emu.rate_limit("apps.connections.open", None)
        world.llm.script(
            *[ScriptedReply(text=f"Answer {n} " + "word " * 30, tokens_per_second=30)
              for n in range(12)]
        )  # fmt: skip
        a = await world.start("a")
        await world.holder()
        b = await world.start("b")
        await world.wait_running(b)
        await world.emu.wait_for_socket(2, timeout=30)
        roots = []
        c = None
        for n in range(12):
            roots.append(await world.emu.user_message(CHANNEL, f"<@U0BOT> question {n}"))
            if n == 4:
                c = await world.start("c")  # joins while replies stream
            await asyncio.sleep(0.3)
        assert c is not None
        await world.wait_running(c)

        def all_answered() -> bool:
            return all(
                len(r := world.bot_replies(CHANNEL, root)) == 1 and r[0].rstrip().endswith("word")
                for root in roots
            )

        await world.emu.wait_for(all_answered, timeout=120)
        await asyncio.sleep(1.0)
        assert all(len(world.bot_replies(CHANNEL, root)) == 1 for root in roots)
        assert len(world.llm.requests) == 12
        assert world.emu.stats.rate_limited == {}, world.emu.stats.rate_limited
        for instance in (a, b, c):
            assert await instance.stop() == 0, instance.text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _post(http: aiohttp.ClientSession, world: ClusterWorld, body: dict[str, object],
                port: int) -> int:  # fmt: skip
    raw = json.dumps(body).encode()
    headers = world.emu.events.signed_headers(raw)
    async with http.post(f"http://127.0.0.1:{port}/slack/events", data=raw, headers=headers) as r:
        return r.status


async def test_a_refused_message_is_not_handed_over_and_an_allowed_one_is(
    postgres_url: str, tmp_path: Path
) -> None:
    import asyncpg

    async with cluster_world(postgres_url, tmp_path) as world:
        world.llm.script("For Alice.")
        access = '[access]\ndenied_users = ["U0EVE"]\n'
        ports = [_free_port(), _free_port()]
        holder = await world.start("holder", http_port=ports[0], extra=access)
        await world.holder()
        other = await world.start("other", http_port=ports[1], extra=access)
        await world.wait_running(other)
        world.emu.delivery = "http"
        world.emu.event_url = f"http://127.0.0.1:{ports[1]}/slack/events"  # the one without it
        world.emu.add_user("U0EVE", "eve")
        refused = await world.emu.user_message(CHANNEL, "<@U0BOT> secret plans", user="U0EVE")
        allowed = await world.emu.user_message(CHANNEL, "<@U0BOT> hello")
        await world.emu.wait_for(lambda: world.bot_replies(CHANNEL, allowed), timeout=30)
        await world.emu.wait_for(
            lambda: "For Alice." in world.bot_replies(CHANNEL, allowed)[0], timeout=30
        )
        assert world.bot_replies(CHANNEL, refused) == []
        assert other.said("handed to the holder")
        conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            # The allowed message's two events (app_mention and message) were queued, handled
            # and deleted; nothing of the refused one was ever written.
            async with asyncio.timeout(15):
                while await conn.fetchval("SELECT count(*) FROM handoffs"):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            stored = [r["content"] for r in await conn.fetch("SELECT content FROM messages")]
        finally:
            await conn.close()
        assert not any("secret plans" in text for text in stored)
        assert other.said("not answering .*: the user is in access.denied_users")
        for instance in (holder, other):
            assert await instance.stop() == 0, instance.text
