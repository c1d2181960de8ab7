"""The policy's rules, limits and intake against in-memory ports, on a virtual clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from bridge.config import ConfigError, Settings, load_settings
from bridge.domain import ChatKey
from bridge.policy import build_policy
from bridge.policy.effective import ReplySettings
from bridge.policy.limits import LLMSlots
from bridge.policy.origin import Origin
from bridge.policy.rules import Rules
from bridge.ports import ReplyOutcome
from bridge.reload import merge
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM, inbound
from tests.virtual_time import run_virtual


def settings(**sections: Any) -> Settings:
    return load_settings(None, {}, values=sections)


def at(user: str = "U1", channel: str = "C1", **facts: Any) -> Origin:
    return Origin(platform=facts.pop("platform", "discord"), user=user, channel=channel, **facts)


# --- access ----------------------------------------------------------------------------------


def test_deny_wins_over_allow_and_empty_allow_lists_allow_everyone() -> None:
    rules = Rules(settings())
    assert rules.denial(at()) is None
    rules = Rules(settings(access={"allowed_users": ["U1"], "denied_users": ["U1"]}))
    denial = rules.denial(at("U1"))
    assert denial is not None and "denied_users" in denial.reason
    assert Rules(settings(access={"allowed_users": ["U2"]})).denial(at("U1")) is not None


def test_a_category_covers_its_channels_and_a_channel_its_threads() -> None:
    rules = Rules(settings(access={"allowed_channels": ["K1"], "denied_channels": ["C9"]}))
    assert rules.denial(at(channel="C1", category="K1")) is None
    assert rules.denial(at(channel="C2", category="K2")) is not None
    assert rules.denial(at(channel="C9", category="K1")) is not None  # deny wins
    thread_rules = Rules(settings(access={"allowed_channels": ["C1"]}))
    assert thread_rules.denial(at(channel="C1", thread="T1")) is None


def test_roles_apply_to_discord_guild_members_only() -> None:
    rules = Rules(settings(access={"allowed_roles": ["R1"], "denied_roles": ["R9"]}))
    assert rules.denial(at(workspace="G1", roles=frozenset({"R1"}))) is None
    assert rules.denial(at(workspace="G1", roles=frozenset({"R2"}))) is not None
    assert rules.denial(at(workspace="G1", roles=frozenset({"R1", "R9"}))) is not None
    assert rules.denial(at(platform="slack", workspace="T1")) is None  # Slack has no roles


def test_dms_follow_allow_dms_not_the_channel_lists() -> None:
    open_rules = Rules(settings(access={"allowed_channels": ["C1"]}))
    assert open_rules.denial(at(channel="D1", is_dm=True)) is None
    closed = Rules(settings(access={"allow_dms": False}))
    assert closed.denial(at(channel="D1", is_dm=True)) is not None


def test_workspaces_outside_the_allow_list_are_refused() -> None:
    rules = Rules(settings(access={"allowed_workspaces": ["T1"]}))
    assert rules.denial(at(platform="slack", workspace="T1")) is None
    assert rules.denial(at(platform="slack", workspace="T2")) is not None


# --- settings --------------------------------------------------------------------------------

OVERRIDES = [
    {"workspace": "G1", "model": "ws-model", "temperature": 0.1},
    {"channel": "K1", "model": "category-model", "system_prompt": "category prompt"},
    {"channel": "C1", "model": "channel-model", "trigger": "always"},
    {"thread": "T1", "model": "thread-model", "n": 2},
]


def test_the_most_specific_override_wins_and_says_where_each_value_came_from() -> None:
    rules = Rules(settings(llm={"model": "default"}, overrides=OVERRIDES))
    assert rules.resolve(at(workspace="G9", channel="C9"), {}).reply.model == "default"
    assert rules.resolve(at(workspace="G1", channel="C9"), {}).reply.model == "ws-model"
    in_category = rules.resolve(at(workspace="G1", channel="C9", category="K1"), {})
    assert in_category.reply.model == "category-model"
    assert in_category.reply.temperature == 0.1  # the workspace's, not overridden below
    in_channel = rules.resolve(at(workspace="G1", channel="C1", category="K1"), {})
    assert (in_channel.reply.model, in_channel.trigger) == ("channel-model", "always")
    assert in_channel.reply.system_prompt == "category prompt"
    in_thread = rules.resolve(at(workspace="G1", channel="C1", category="K1", thread="T1"), {})
    assert (in_thread.reply.model, in_thread.reply.n, in_thread.trigger) == (
        "thread-model",
        2,
        "always",
    )
    sources = dict((key, source) for key, _, source in in_thread.shown())
    assert sources["model"] == "override thread T1"
    assert sources["trigger"] == "override channel C1"
    assert sources["temperature"] == "override workspace G1"
    assert sources["max_context_tokens"] == "defaults"


def test_a_runtime_override_wins_over_the_file_at_its_level_only() -> None:
    rules = Rules(settings(overrides=OVERRIDES))
    runtime = {"C1": ("set in chat for C1", {"model": "runtime-model"})}
    where = at(workspace="G1", channel="C1")
    assert rules.resolve(where, runtime, 1).reply.model == "runtime-model"
    assert rules.resolve(replace(where, thread="T1"), runtime, 1).reply.model == "thread-model"


def test_policy_settings_errors_name_the_key() -> None:
    bad = {
        "overrides": [{"channel": "C1", "trigger": "sometimes"}, {"channel": "C2", "thread": "T"}],
        "access": {"admins": [12345]},
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {}, values=bad)
    text = "\n".join(caught.value.problems)
    assert "overrides.0.trigger: Input should be 'mention', 'always' or 'off'" in text
    assert (
        "overrides.1.thread: an override needs exactly one of workspace, channel or thread" in text
    )
    assert "access.admins.0: Input should be a valid string" in text
    with pytest.raises(ConfigError) as twice:
        load_settings(None, {}, values={"overrides": [{"channel": "C1"}, {"channel": "C1"}]})
    assert twice.value.problems == [
        "overrides.1.channel: 'C1' already has an override (overrides.0)"
    ]


def test_reply_settings_read_back_from_storage_fall_back_per_key() -> None:
    default = ReplySettings("m", "p", 0.7, 4096, 8000, 1, True, 1.0)
    stored = {**default.to_dict(), "model": "x", "temperature": 1, "n": "two"}
    back = ReplySettings.from_dict(stored, default)
    assert (back.model, back.temperature, back.n) == ("x", 1.0, 1)


# --- reload ----------------------------------------------------------------------------------


def test_reload_applies_live_keys_and_keeps_the_rest_for_a_restart() -> None:
    running = settings(llm={"model": "a", "base_url": "http://one/v1"})
    loaded = settings(
        llm={"model": "b", "base_url": "http://two/v1"},
        limits={"queue_limit": 3},
        storage={"url": "sqlite+aiosqlite:///./other.db"},
    )
    merged, restart = merge(running, loaded)
    assert merged.llm.model == "b" and merged.limits.queue_limit == 3
    assert merged.llm.base_url == "http://one/v1"
    assert merged.storage.url == running.storage.url
    assert sorted(restart) == ["llm.base_url", "storage.url"]


# --- limits ----------------------------------------------------------------------------------


def test_llm_slots_go_in_order_of_admission_and_never_exceed_the_cap() -> None:
    async def scenario() -> None:
        slots = LLMSlots(2)
        order: list[int] = []
        peak = 0

        async def one(number: int) -> None:
            nonlocal peak
            await asyncio.sleep(0.01 * (6 - number))  # arrive at the slots in reverse order
            await slots.acquire(number)
            order.append(number)
            peak = max(peak, slots.open)
            await asyncio.sleep(1.0)
            slots.release()

        await asyncio.gather(*(one(n) for n in range(6)))
        assert peak == 2
        assert order[2:] == [0, 1, 2, 3]  # the first two took free slots; then admission order

    run_virtual(scenario())


def build(llm: ScriptedLLM, **sections: Any) -> tuple[Any, MemoryStore, Responder]:
    store = MemoryStore()
    responder = Responder(
        store=store,
        llm=llm,
        scheduler=EditScheduler(interval=0.5),
        settings=ResponderSettings(model="default-model", titles=False),
    )
    parts = build_policy(settings(**sections), responder=responder, store=store)
    return parts, store, responder


def test_intake_answers_with_the_resolved_settings_and_stores_them() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, store, _ = build(llm, overrides=[{"channel": "C1", "model": "channel-model"}])
        surface = RecordingSurface()
        report = await parts.intake.receive(
            inbound("hi", "e1"), at(channel="C1"), lambda _: surface
        )
        assert report is not None
        assert [r.model for r in llm.requests] == ["channel-model"]
        [user] = [m for m in store.rows.values() if m.role.value == "user"]
        assert user.metadata["settings"]["model"] == "channel-model"
        assert store.usage  # its tokens are counted for the user and the channel

    run_virtual(scenario())


def test_a_denied_message_is_neither_stored_nor_sent_and_notified_once_a_minute() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, store, _ = build(llm, access={"denied_users": ["U1"], "notify_denied": True})
        surface = RecordingSurface()
        for number in range(3):
            got = await parts.intake.receive(
                inbound("hi", f"e{number}"), at("U1"), lambda _: surface
            )
            assert got is None
        assert not llm.requests and not store.rows and not store.events
        assert surface.notices == ["🚫 _You cannot use this bot here._"]

    run_virtual(scenario())


def test_trigger_mention_skips_unaddressed_messages_and_always_answers_them() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, _, _ = build(llm, overrides=[{"channel": "C2", "trigger": "always"},
                                            {"channel": "C3", "trigger": "off"}])  # fmt: skip
        surface = RecordingSurface()
        quiet = at(channel="C1", addressed=False)
        assert await parts.intake.receive(inbound("x", "e1"), quiet, lambda _: surface) is None
        loud = at(channel="C2", addressed=False)
        assert await parts.intake.receive(inbound("x", "e2"), loud, lambda _: surface)
        off = at(channel="C3")
        assert await parts.intake.receive(inbound("x", "e3"), off, lambda _: surface) is None
        assert len(llm.requests) == 1

    run_virtual(scenario())


def test_the_per_user_rate_refuses_with_a_notice_that_says_when_it_resets() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, _, _ = build(llm, limits={"user_messages_per_minute": 2})
        surface = RecordingSurface()
        answered = []
        for number in range(4):
            key = ChatKey("discord", "", f"C{number}")
            got = await parts.intake.receive(
                inbound("hi", f"e{number}", key=key), at(channel=f"C{number}"), lambda _: surface
            )
            answered.append(got is not None)
        assert answered == [True, True, False, False]
        [notice] = surface.notices  # one notice a minute, however many messages
        assert "2 messages in the last minute" in notice and "Try again in" in notice
        await asyncio.sleep(61)
        key = ChatKey("discord", "", "C9")
        assert await parts.intake.receive(inbound("hi", "e9", key=key), at(), lambda _: surface)

    run_virtual(scenario())


def test_the_daily_quota_counts_reported_usage_and_refuses_past_it() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("a" * 40), Script.text("b" * 40))
        parts, store, _ = build(llm, limits={"user_daily_tokens": 30})
        surface = RecordingSurface()
        first = await parts.intake.receive(inbound("hi", "e1"), at(), lambda _: surface)
        assert first is not None and first.usage is not None
        assert first.usage.total_tokens >= 30
        second = await parts.intake.receive(inbound("again", "e2"), at(), lambda _: surface)
        assert second is None and len(llm.requests) == 1
        [notice] = surface.notices
        assert "daily quota is 30" in notice and "00:00 UTC" in notice

    run_virtual(scenario())


def test_max_input_chars_sends_nothing_to_the_model() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, store, _ = build(llm, limits={"max_input_chars": 10})
        surface = RecordingSurface()
        got = await parts.intake.receive(inbound("x" * 11, "e1"), at(), lambda _: surface)
        assert got is None and not llm.requests and not store.rows
        assert "11 characters, more than the 10 allowed" in surface.notices[0]

    run_virtual(scenario())


def test_concurrent_limits_and_the_queue_limit_refuse_while_replies_run() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(*(Script.text("slow reply", delay=1.0) for _ in range(5)))
        parts, _, _ = build(
            llm,
            limits={
                "user_concurrent_replies": 1,
                "queue_limit": 2,
                "llm_concurrent_requests": 1,
            },  # fmt: skip
        )
        surfaces = [RecordingSurface() for _ in range(5)]

        def receive(number: int, user: str) -> Any:
            key = ChatKey("discord", "", f"C{number}")
            origin = at(user, channel=f"C{number}")
            return parts.intake.receive(
                inbound("hi", f"e{number}", key=key, author=user), origin,
                lambda _: surfaces[number],
            )  # fmt: skip

        first = asyncio.ensure_future(receive(0, "U0"))
        await asyncio.sleep(0.1)
        assert await receive(1, "U0") is None  # U0 has one on the way already
        assert "already have 1 answers on the way" in surfaces[1].notices[0]
        second = asyncio.ensure_future(receive(2, "U2"))  # waits for the one LLM slot
        third = asyncio.ensure_future(receive(3, "U3"))
        await asyncio.sleep(0.1)
        assert await receive(4, "U4") is None  # two are queued: the queue is full
        assert surfaces[4].notices == [
            "⏳ _Too many questions at once right now: please try again shortly._"
        ]
        assert all(await asyncio.gather(first, second, third))
        assert parts.policy.limiter.queued == 0 and parts.policy.limiter.slots.open == 0

    run_virtual(scenario())


def test_a_reply_waiting_for_an_llm_slot_says_queued_in_its_placeholder() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("first", delay=2.0), Script.text("second"))
        parts, _, _ = build(llm, limits={"llm_concurrent_requests": 1, "show_queued_after": 1.0})
        surfaces = [RecordingSurface(), RecordingSurface()]
        runs = [
            parts.intake.receive(
                inbound("hi", f"e{n}", key=ChatKey("discord", "", f"C{n}")),
                at(channel=f"C{n}"),
                lambda _, n=n: surfaces[n],
            )
            for n in range(2)
        ]
        await asyncio.gather(*runs)
        shown = [w.text for w in surfaces[1].writes]
        assert "⏳ _Queued: the model is busy, your answer starts shortly…_" in shown
        assert shown[-1] == "second"
        assert not any("Queued" in w.text for w in surfaces[0].writes)

    run_virtual(scenario())


def test_admin_commands_are_refused_to_others_and_set_runtime_settings() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, store, _ = build(llm, access={"admins": ["ADMIN"]})
        commands = parts.commands
        assert "Only the bridge's admins" in await commands.run(at("U1"), "model", "x")
        answer = await commands.run(at("ADMIN", channel="C1"), "model", "big-model")
        assert "big-model" in answer
        assert store.overrides[("discord", "C1")].values == {"model": "big-model"}
        settings_text = await commands.run(at("ADMIN", channel="C1"), "settings")
        assert "model = 'big-model' (set in chat for C1 by ADMIN)" in settings_text
        surface = RecordingSurface()
        await parts.intake.receive(inbound("hi", "e1"), at(channel="C1"), lambda _: surface)
        assert llm.requests[-1].model == "big-model"
        assert "trigger is one of" in await commands.run(at("ADMIN"), "trigger", "loud")
        assert "removed" in await commands.run(at("ADMIN", channel="C1"), "reset-settings")
        assert ("discord", "C1") not in store.overrides
        assert "reset" in await commands.run(at("U1"), "help")  # everyone may reset by default

    run_virtual(scenario())


# --- what a review found ---------------------------------------------------------------------


def test_a_cap_set_by_reload_after_uncapped_replies_does_not_stall_the_next() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        parts, _, _ = build(llm)
        for number in range(3):  # no cap: nobody lines up
            key = ChatKey("discord", "", f"C{number}")
            assert await parts.intake.receive(inbound("hi", f"e{number}", key=key), at(),
                                              lambda _: RecordingSurface())  # fmt: skip
        parts.policy.replace(settings(limits={"llm_concurrent_requests": 2}))
        report = await asyncio.wait_for(
            parts.intake.receive(inbound("hi", "e9"), at(), lambda _: RecordingSurface()), 30
        )
        assert report is not None and report.status.value == "complete"

    run_virtual(scenario())


def test_lifting_the_cap_lets_every_waiting_reply_go() -> None:
    async def scenario() -> None:
        slots = LLMSlots(1)
        await slots.acquire(0)
        slots.line_up(1)  # lined up, not asking yet
        waiting = asyncio.ensure_future(slots.acquire(2))
        await asyncio.sleep(0)
        slots.capacity = 0
        await asyncio.wait_for(waiting, 1)
        await asyncio.wait_for(slots.acquire(1), 1)

    run_virtual(scenario())


def test_a_reply_slow_to_ask_holds_its_place_for_a_while_only() -> None:
    async def scenario() -> None:
        slots = LLMSlots(1, hold=2.0)
        await slots.acquire(0)
        slots.line_up(1)  # its placeholder is slow to post
        later = asyncio.ensure_future(slots.acquire(2))
        slots.release()
        await asyncio.sleep(1.0)
        assert not later.done()  # the earlier reply keeps its place...
        await asyncio.sleep(1.5)
        assert later.done()  # ...for `hold` seconds, not for ever

    run_virtual(scenario())


class SlowUsageStore(MemoryStore):
    async def usage_of(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        await asyncio.sleep(0.05)  # a real database read
        return await super().usage_of(*args, **kwargs)


def test_a_burst_during_the_quota_read_still_meets_the_per_user_limits() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(*(Script.text("slow reply", delay=0.5) for _ in range(5)))
        store = SlowUsageStore()
        responder = Responder(
            store=store, llm=llm, scheduler=EditScheduler(interval=0.5),
            settings=ResponderSettings(model="m", titles=False),
        )  # fmt: skip
        limits = {"user_daily_tokens": 10_000, "user_messages_per_minute": 1}
        parts = build_policy(settings(limits=limits), responder=responder, store=store)
        burst = [
            parts.intake.receive(
                inbound("hi", f"e{n}", key=ChatKey("discord", "", f"C{n}")),
                at(),
                lambda _: RecordingSurface(),
            )  # fmt: skip
            for n in range(5)
        ]
        answered = [r for r in await asyncio.gather(*burst) if r is not None]
        assert len(answered) == 1 and len(llm.requests) == 1

    run_virtual(scenario())


def test_titles_wait_for_an_llm_slot_like_replies() -> None:
    async def scenario() -> None:
        open_now = peak = 0

        class CountingLLM(ScriptedLLM):
            async def stream(self, request: Any) -> Any:
                nonlocal open_now, peak
                open_now += 1
                peak = max(peak, open_now)
                try:
                    async for event in super().stream(request):
                        yield event
                finally:
                    open_now -= 1

            async def complete(self, request: Any) -> str:
                nonlocal open_now, peak
                open_now += 1
                peak = max(peak, open_now)
                try:
                    await asyncio.sleep(1.0)
                    return "A Title"
                finally:
                    open_now -= 1

        llm = CountingLLM(*(Script.text("reply", delay=0.3) for _ in range(3)))
        store = MemoryStore()
        responder = Responder(
            store=store, llm=llm, scheduler=EditScheduler(interval=0.5),
            settings=ResponderSettings(model="m", titles=True),
        )  # fmt: skip
        parts = build_policy(
            settings(limits={"llm_concurrent_requests": 1}), responder=responder, store=store
        )
        await asyncio.gather(*(
            parts.intake.receive(
                inbound("hi", f"e{n}", key=ChatKey("discord", "", f"C{n}")), at(),
                lambda _: RecordingSurface(),
            )
            for n in range(3)
        ))  # fmt: skip
        await responder.wait_background()
        assert peak == 1

    run_virtual(scenario())


def test_a_reply_that_failed_before_its_first_token_is_not_charged() -> None:
    async def scenario() -> None:
        from bridge.ports import LLMError

        llm = ScriptedLLM(Script([(0.0, LLMError("unauthorized", retryable=False))]))
        parts, store, _ = build(llm, limits={"user_daily_tokens": 100})
        report = await parts.intake.receive(inbound("hi", "e1"), at(), lambda _: RecordingSurface())
        assert report is not None and report.status.value == "failed"
        # Nothing charged against the quotas; the reply and its failure are counted.
        assert {key: tokens for key, (tokens, _) in store.usage.items()} == {
            key: 0 for key in store.usage
        }
        assert [replies for _, replies in store.usage.values()] == [1, 1]
        [(_, _, outcome)] = store.outcomes
        assert outcome == ReplyOutcome(failed=True, rate_limited=0)

    run_virtual(scenario())
