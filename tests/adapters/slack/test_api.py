"""slack_sdk never sends a post twice by itself: after a connection breaks, only calls that end
the same when repeated are retried (ReplaySafeRetryHandler), against the emulator over HTTP."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import ReplaySafeRetryHandler, SlackUnavailable, api_method, call
from sandbox.llm_server import ScriptedReply
from sandbox.slack_emulator import SlackEmulator
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Factory


def client_for(emu: SlackEmulator) -> AsyncWebClient:
    """A client built like the adapter's."""
    return AsyncWebClient(
        token=emu.identity.bot_token,
        base_url=emu.api_base_url,
        retry_handlers=[ReplaySafeRetryHandler()],
    )


async def test_a_post_whose_connection_drops_is_sent_once_and_reported_unavailable(
    emu: SlackEmulator,
) -> None:
    client = client_for(emu)
    emu.drop_connection_after("chat.postMessage")
    with pytest.raises(SlackUnavailable) as failed:
        await call("chat.postMessage", GENERAL, client.chat_postMessage(channel=GENERAL, text="Hi"))
    assert failed.value.code == "ServerDisconnectedError"
    assert [c.http_status for c in emu.calls_to("chat.postMessage")] == [0]
    assert [m.text for m in emu.channel(GENERAL)] == ["Hi"]  # posted once, as Slack did


async def test_stream_starts_and_appends_whose_connection_drops_are_sent_once(
    emu: SlackEmulator,
) -> None:
    client = client_for(emu)
    emu.drop_connection_after("chat.startStream")
    with pytest.raises(SlackUnavailable):
        await call(
            "chat.startStream",
            DM,
            client.chat_startStream(channel=DM, thread_ts="1.000001", markdown_text="Hello"),
        )
    assert len(emu.calls_to("chat.startStream")) == 1
    [started] = emu.thread(DM, "1.000001")
    emu.drop_connection_after("chat.appendStream")
    with pytest.raises(SlackUnavailable):
        await call(
            "chat.appendStream",
            DM,
            client.chat_appendStream(channel=DM, ts=started.ts, markdown_text=" world"),
        )
    assert len(emu.calls_to("chat.appendStream")) == 1
    shown = emu.message(DM, started.ts)
    assert shown is not None and shown.text == "Hello world"  # not "Hello world world"


async def test_an_update_whose_connection_drops_is_retried_and_succeeds(
    emu: SlackEmulator,
) -> None:
    client = client_for(emu)
    posted = await client.chat_postMessage(channel=GENERAL, text="draft")
    emu.drop_connection_after("chat.update")
    emu.drop_connection_after("assistant.threads.setStatus")
    answer = await call(
        "chat.update", GENERAL, client.chat_update(channel=GENERAL, ts=posted["ts"], text="done")
    )
    assert answer["ok"]
    status = client.assistant_threads_setStatus(
        channel_id=GENERAL, thread_ts=posted["ts"], status="is thinking…"
    )
    assert (await call("assistant.threads.setStatus", GENERAL, status))["ok"]
    assert [c.http_status for c in emu.calls_to("chat.update")] == [0, 200]
    assert [c.http_status for c in emu.calls_to("assistant.threads.setStatus")] == [0, 200]
    shown = emu.message(GENERAL, posted["ts"])
    assert shown is not None and shown.text == "done"


async def connection_refused() -> aiohttp.ClientConnectorError:
    """A real ClientConnectorError: nothing listens on the port, so nothing was sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        try:
            await session.post(f"http://127.0.0.1:{port}/api/chat.postMessage")
        except aiohttp.ClientConnectorError as refused:
            return refused
    raise AssertionError("something answered on a free port")


@pytest.mark.parametrize(
    ("method", "retried_after_a_drop"),
    [
        ("chat.postMessage", False),
        ("chat.startStream", False),
        ("chat.appendStream", False),
        ("chat.postEphemeral", False),  # not known to be safe: sent once
        ("chat.update", True),
        ("chat.stopStream", True),
        ("assistant.threads.setStatus", True),
        ("auth.test", True),
        ("conversations.replies", True),
    ],
)
async def test_which_calls_the_sdk_may_send_again(method: str, retried_after_a_drop: bool) -> None:
    handler = ReplaySafeRetryHandler()
    request = HttpRequest(method="POST", url=f"https://slack.com/api/{method}", headers={})

    async def retried(error: Exception) -> bool:
        return await handler.can_retry_async(state=RetryState(), request=request, error=error)

    assert await retried(aiohttp.ServerDisconnectedError()) is retried_after_a_drop
    assert await retried(aiohttp.ClientOSError(104, "Connection reset by peer")) is (
        retried_after_a_drop
    )
    assert await retried(await connection_refused())  # never connected: always safe
    assert not await retried(ValueError("not a connection error"))


def test_the_method_is_read_from_any_base_url() -> None:
    assert api_method("https://slack.com/api/chat.postMessage") == "chat.postMessage"
    assert api_method("http://127.0.0.1:8080/proxy/api/chat.update") == "chat.update"
    assert api_method("https://slack-gov.com/api/auth.test?x=1") == "auth.test"


def logged_failure(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    """Whether a log record, or the exception it carries, says `text`."""
    for record in caplog.records:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            if text in str(error):
                return True
            error = error.__cause__
        if text in record.getMessage():
            return True
    return False


async def test_the_adapters_client_leaves_a_dropped_post_to_the_bridge(
    make_bridge: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # slack_sdk's default handler would post again at once, out of the bridge's sight.
    bridge = await make_bridge(native_streaming="never")
    emu = bridge.emu
    bridge.llm.script(ScriptedReply("One answer."))
    emu.drop_connection_after("chat.postMessage")
    await emu.user_message(GENERAL, f"<@{BOT}> hi", user="U0ALICE")
    await emu.wait_for(lambda: emu.calls_to("chat.postMessage"), timeout=10)
    await bridge.settle()

    assert emu.calls_to("chat.postMessage")[0].http_status == 0
    assert logged_failure(caplog, "chat.postMessage failed in")
    assert logged_failure(caplog, "ServerDisconnectedError")
