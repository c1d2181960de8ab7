"""A deploy on Slack: once the bridge drains, it takes no new event, and Slack's retry of an
event it refused reaches the next instance, which answers it once."""

from __future__ import annotations

from tests.adapters.slack.conftest import BOT, GENERAL, Factory, free_port


async def test_over_http_an_event_arriving_during_the_drain_is_answered_by_the_next_instance(
    make_bridge: Factory,
) -> None:
    port = free_port()
    old = await make_bridge(mode="http", http_port=port)
    emu = old.emu
    emu.retry_delays = (0.0, 1.0, 5.0)  # Slack's 0 s, 60 s, 300 s, shortened
    await old.adapter.stop_intake()  # SIGTERM: the lifecycle's first step
    ts = await emu.user_message(GENERAL, f"<@{BOT}> are you there?", user="U0ALICE")
    attempts = emu.deliveries[-1].attempts
    await emu.wait_for(lambda: len(attempts) >= 2 and attempts[1].http_status, timeout=5)
    # Refused without an acknowledgement, so Slack keeps the event for a later retry.
    assert [a.http_status for a in attempts] == [503, 503]
    assert old.bot_messages(GENERAL, ts) == [] and not old.llm.requests
    await old.responder.stop()
    await old.adapter.stop()

    new = await make_bridge(mode="http", http_port=port)
    await new.reply_done(GENERAL, ts)
    assert [m.rendered for m in new.bot_messages(GENERAL, ts)] == ["You said: are you there?"]
    assert len(new.llm.requests) == 1  # app_mention and message: answered once


async def test_in_socket_mode_the_drain_closes_the_connection(make_bridge: Factory) -> None:
    bridge = await make_bridge(mode="socket")
    assert bridge.adapter.connected
    await bridge.adapter.stop_intake()
    assert not bridge.adapter.connected
    await bridge.emu.wait_for(lambda: bridge.emu.stats.socket_connects == 1)
