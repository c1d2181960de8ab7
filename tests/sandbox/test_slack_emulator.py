"""The Slack emulator, driven by the real slack_sdk and slack_bolt over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.local_server import LocalServer
from sandbox.slack_emulator import SLACK_POST_BURST, SLACK_TIERS, SlackEmulator, slack_signature
from tests.sandbox.slack_emulator_helpers import EventsEndpoint, FakeClock, RawSocketApp

GENERAL = "C0GENERAL"
DM = "D0ALICE"


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        emulator.ack_timeout = 0.3
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)


async def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


def bolt_app(emu: SlackEmulator) -> AsyncApp:
    web_client = AsyncWebClient(token=emu.identity.bot_token, base_url=emu.api_base_url)
    return AsyncApp(client=web_client, signing_secret=emu.identity.signing_secret)


# ---- Web API: identity and auth -------------------------------------------------------------


async def test_auth_test_answers_like_a_bot_token(client: AsyncWebClient) -> None:
    answer = await client.auth_test()
    assert answer["user_id"] == "U0BOT"
    assert answer["bot_id"] == "B0BOT"
    assert answer["team_id"] == "T0TEAM"
    assert answer["url"].startswith("https://")


async def test_tokens_are_checked(emu: SlackEmulator) -> None:
    no_token = AsyncWebClient(base_url=emu.api_base_url)
    assert (await api_error(no_token.auth_test())).response["error"] == "not_authed"
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=emu.api_base_url)
    assert (await api_error(wrong.auth_test())).response["error"] == "invalid_auth"
    app_token = AsyncWebClient(token="xapp-test", base_url=emu.api_base_url)
    error = await api_error(app_token.chat_postMessage(channel=GENERAL, text="x"))
    assert error.response["error"] == "not_allowed_token_type"
    bot = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
    error = await api_error(bot.apps_connections_open(app_token="xoxb-test"))
    assert error.response["error"] == "not_allowed_token_type"
    assert error.response.status_code == 200
    assert [c.error for c in emu.calls] == ["not_authed", "invalid_auth"] + [
        "not_allowed_token_type"
    ] * 2


async def test_unknown_method(client: AsyncWebClient) -> None:
    error = await api_error(client.api_call("chat.teleport", json={"channel": GENERAL}))
    assert error.response["error"] == "unknown_method"


# ---- Web API: messages -----------------------------------------------------------------------


async def test_post_message_in_thread_is_shown_with_bot_identity(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    root = await emu.user_message(GENERAL, "<@U0BOT> summarise this")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Summary* for <@U0ALICE>"}}]
    answer = await client.chat_postMessage(
        channel=GENERAL, thread_ts=root, text="Summary", blocks=blocks
    )
    assert answer["channel"] == GENERAL
    assert answer["message"]["bot_id"] == "B0BOT"
    assert answer["message"]["user"] == "U0BOT"
    assert answer["message"]["thread_ts"] == root
    shown = emu.thread(GENERAL, root)
    assert [m.ts for m in shown] == [root, answer["ts"]]
    assert shown[1].rendered == "*Summary* for @alice"
    assert shown[1].text == "Summary"
    assert [m.ts for m in emu.channel(GENERAL)] == [root]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_message_validation(client: AsyncWebClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": "no channel"}, "channel_not_found"),
        ({"channel": "#general", "text": "by name"}, "channel_not_found"),
        ({"channel": GENERAL}, "no_text"),
        ({"channel": GENERAL, "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": GENERAL, "text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {"channel": GENERAL, "blocks": [{"type": "section", "text": _mrkdwn("x" * 3001)}]},
            "invalid_blocks",
        ),
        (
            {"channel": GENERAL, "blocks": [{"type": "markdown", "text": "x" * 12_001}]},
            "invalid_blocks",
        ),
    ]
    for arguments, expected in cases:
        error = await api_error(client.api_call("chat.postMessage", json=arguments))
        assert error.response["error"] == expected, arguments
    long_markdown = [{"type": "markdown", "text": "x" * 12_000}]
    assert (
        await client.chat_postMessage(channel=GENERAL, text="x" * 40_000, blocks=long_markdown)
    )["ok"]
    error = await api_error(
        client.chat_postMessage(
            channel=GENERAL, blocks=[{"type": "section", "text": _mrkdwn("x" * 3001)}]
        )
    )
    assert "json-pointer:/blocks/0/text/text" in error.response["response_metadata"]["messages"][0]


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


async def test_update_counts_edits_and_keeps_blocks_unless_replaced(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    blocks = [{"type": "section", "text": _mrkdwn("first")}]
    posted = await client.chat_postMessage(channel=GENERAL, text="first", blocks=blocks)
    await client.chat_update(channel=GENERAL, ts=posted["ts"], text="second")
    shown = emu.message(GENERAL, posted["ts"])
    assert shown is not None and shown.text == "second" and shown.rendered == "first"
    await client.chat_update(channel=GENERAL, ts=posted["ts"], text="third", blocks=[])
    shown = emu.message(GENERAL, posted["ts"])
    assert shown is not None and shown.rendered == "third" and shown.edits == 2

    missing = await api_error(client.chat_update(channel=GENERAL, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"
    someone_elses = await emu.user_message(GENERAL, "mine")
    error = await api_error(client.chat_update(channel=GENERAL, ts=someone_elses, text="x"))
    assert error.response["error"] == "cant_update_message"


async def test_delete_and_change_listeners(emu: SlackEmulator, client: AsyncWebClient) -> None:
    changes: list[tuple[str, str | None]] = []
    emu.subscribe(lambda change: changes.append((change.kind, change.ts)))
    posted = await client.chat_postMessage(channel=GENERAL, text="oops")
    await client.chat_delete(channel=GENERAL, ts=posted["ts"])
    assert emu.channel(GENERAL) == []
    assert changes == [("posted", posted["ts"]), ("deleted", posted["ts"])]
    users_message = await emu.user_message(GENERAL, "keep me")
    error = await api_error(client.chat_delete(channel=GENERAL, ts=users_message))
    assert error.response["error"] == "cant_delete_message"


async def test_who_a_message_notifies_is_recorded_when_posted_updated_and_streamed(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    root = await emu.user_message(GENERAL, "<@U0BOT> who is on call?")
    assert emu.thread(GENERAL, root)[0].notified == ("U0BOT",)

    # Escaped, or broken by a zero-width space, a mention is only text; bare @here needs
    # link_names. Mentions count in `text` and in mrkdwn and markdown blocks alike.
    posted = await client.chat_postMessage(
        channel=GENERAL,
        thread_ts=root,
        text="&lt;@U0BOB&gt; <@U0ALICE|alice> @here <\u200b!here>",
        blocks=[
            {"type": "markdown", "text": "<!subteam^S0DEVS|@devs> <@U0ALICE> <\u200b@U0CAROL>"},
            {"type": "header", "text": {"type": "plain_text", "text": "<@U0ERIN>"}},
        ],
    )
    shown = emu.message(GENERAL, posted["ts"])
    assert shown is not None and shown.notified == ("U0ALICE", "S0DEVS")
    # An edit notifies whom it adds; whom an earlier version pinged stays notified.
    await client.chat_update(channel=GENERAL, ts=posted["ts"], text="now <!here|here>", blocks=[])
    shown = emu.message(GENERAL, posted["ts"])
    assert shown is not None and shown.notified == ("U0ALICE", "S0DEVS", "@here")

    stream = await client.chat_startStream(
        channel=DM, thread_ts="1.000001", markdown_text="ask <@W0B"
    )
    started = emu.message(DM, stream["ts"])
    assert started is not None and started.notified == ()  # half a mention is none
    await client.chat_appendStream(
        channel=DM, ts=stream["ts"], markdown_text="OB|bob> or <!channel>"
    )
    rich = {
        "type": "rich_text",
        "elements": [
            {
                "type": "rich_text_section",
                "elements": [
                    {"type": "user", "user_id": "U0DAN"},
                    {"type": "usergroup", "usergroup_id": "S0OPS"},
                    {"type": "broadcast", "range": "everyone"},
                ],
            }
        ],
    }
    await client.chat_stopStream(channel=DM, ts=stream["ts"], blocks=[rich])
    streamed = emu.message(DM, stream["ts"])
    assert streamed is not None
    assert streamed.notified == ("W0BOB", "@channel", "U0DAN", "S0OPS", "@everyone")


async def test_conversations_replies_paginates_with_cursor(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    root = await emu.user_message(GENERAL, "question")
    for n in range(4):
        await client.chat_postMessage(channel=GENERAL, thread_ts=root, text=f"part {n}")
    first = await client.conversations_replies(channel=GENERAL, ts=root, limit=2)
    # The SDK reuses one response object while paging; keep each page's data.
    pages = [page.data async for page in first]
    texts = [m["text"] for page in pages for m in page["messages"]]
    assert texts == ["question", "part 0", "part 1", "part 2", "part 3"]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert pages[0]["messages"][0]["reply_count"] == 4
    assert pages[0]["messages"][1]["parent_user_id"] == "U0ALICE"
    error = await api_error(client.conversations_replies(channel=GENERAL, ts=root, cursor="%%%"))
    assert error.response["error"] == "invalid_cursor"
    error = await api_error(client.conversations_replies(channel=GENERAL, ts="1.000001"))
    assert error.response["error"] == "thread_not_found"


async def test_users_info(emu: SlackEmulator, client: AsyncWebClient) -> None:
    emu.add_user("U0CAROL", "carol", real_name="Carol Danvers")
    answer = await client.users_info(user="U0CAROL")
    assert answer["user"]["real_name"] == "Carol Danvers" and answer["user"]["is_bot"] is False
    assert (await client.users_info(user="U0BOT"))["user"]["is_bot"] is True
    error = await api_error(client.users_info(user="U0NOBODY"))
    assert error.response["error"] == "user_not_found"


# ---- Web API: assistant threads -----------------------------------------------------------


async def test_assistant_status_title_prompts(emu: SlackEmulator, client: AsyncWebClient) -> None:
    thread = await emu.start_assistant_thread("U0ALICE", DM)
    await client.assistant_threads_setStatus(
        channel_id=DM, thread_ts=thread, status="is thinking...", loading_messages=["Reading"]
    )
    assert emu.status(DM, thread) == "is thinking..."
    await client.assistant_threads_setTitle(channel_id=DM, thread_ts=thread, title="Trip plan")
    prompts = [{"title": "Plan", "message": "Plan a trip"}]
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=DM, thread_ts=thread, prompts=prompts
    )
    assert emu.titles[(DM, thread)] == "Trip plan"
    assert emu.suggested_prompts[(DM, thread)]["prompts"] == prompts

    await client.chat_postMessage(channel=DM, thread_ts=thread, text="Here is a plan")
    assert emu.status(DM, thread) == ""  # a reply clears the status, as in Slack

    await client.assistant_threads_setStatus(channel_id=DM, thread_ts=thread, status="again")
    await client.assistant_threads_setStatus(channel_id=DM, thread_ts=thread, status="")
    assert emu.status(DM, thread) == ""
    too_many = await api_error(
        client.assistant_threads_setStatus(
            channel_id=DM, thread_ts=thread, status="x", loading_messages=["m"] * 11
        )
    )
    assert too_many.response["error"] == "invalid_arguments"


async def test_status_expires_after_two_minutes() -> None:
    clock = FakeClock()
    async with SlackEmulator(clock=clock) as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        await client.assistant_threads_setStatus(channel_id=DM, thread_ts="1.000001", status="busy")
        clock.advance(119)
        assert emu.status(DM, "1.000001") == "busy"
        clock.advance(2)
        assert emu.status(DM, "1.000001") == ""


# ---- Web API: native streaming -------------------------------------------------------------


async def test_chat_stream_append_and_stop(emu: SlackEmulator, client: AsyncWebClient) -> None:
    root = await emu.user_message(GENERAL, "<@U0BOT> write a poem")
    stream = await client.chat_stream(
        channel=GENERAL,
        thread_ts=root,
        recipient_team_id="T0TEAM",
        recipient_user_id="U0ALICE",
        buffer_size=10,
    )
    await stream.append(markdown_text="Roses are ")
    shown = emu.thread(GENERAL, root)[-1]
    assert shown.is_streaming and shown.text == "Roses are "
    await stream.append(markdown_text="red")  # buffered by the SDK: under buffer_size
    await stream.stop(blocks=[{"type": "context", "elements": [_mrkdwn("AI generated")]}])
    shown = emu.thread(GENERAL, root)[-1]
    assert not shown.is_streaming
    assert shown.rendered == "Roses are red\nAI generated"
    sent = emu.calls_to("chat.startStream")[0].args
    assert sent["chunks"] == [{"type": "markdown_text", "text": "Roses are "}]
    assert [c.method for c in emu.calls if c.method.startswith("chat.")] == [
        "chat.startStream",
        "chat.stopStream",
    ]
    error = await api_error(
        client.chat_appendStream(channel=GENERAL, ts=shown.ts, markdown_text="more")
    )
    assert error.response["error"] == "message_not_in_streaming_state"


async def test_stream_needs_recipients_in_channels_but_not_in_dms(client: AsyncWebClient) -> None:
    error = await api_error(client.chat_startStream(channel=GENERAL, thread_ts="1.000001"))
    assert error.response["error"] == "missing_recipient_team_id"
    error = await api_error(
        client.chat_startStream(channel=GENERAL, thread_ts="1.000001", recipient_team_id="T0TEAM")
    )
    assert error.response["error"] == "missing_recipient_user_id"
    assert (await client.chat_startStream(channel=DM, thread_ts="1.000001"))["ok"]
    error = await api_error(
        client.chat_startStream(channel=DM, thread_ts="1.000001", markdown_text="x" * 12_001)
    )
    assert error.response["error"] == "msg_too_long"


async def test_expired_streams_reject_appends(emu: SlackEmulator, client: AsyncWebClient) -> None:
    first = await client.chat_startStream(channel=DM, thread_ts="1.000001", markdown_text="a")
    emu.expire_stream(DM, first["ts"])
    error = await api_error(client.chat_appendStream(channel=DM, ts=first["ts"], markdown_text="b"))
    assert error.response["error"] == "message_not_in_streaming_state"
    error = await api_error(client.chat_stopStream(channel=DM, ts=first["ts"]))
    assert error.response["error"] == "message_not_in_streaming_state"
    assert emu.thread(DM, "1.000001")[-1].text == "a"  # what was streamed stays visible


async def test_streams_expire_after_ttl() -> None:
    clock = FakeClock()
    async with SlackEmulator(clock=clock) as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        started = await client.chat_startStream(channel=DM, thread_ts="1.000001")
        clock.advance(299)
        await client.chat_appendStream(channel=DM, ts=started["ts"], markdown_text="still here")
        clock.advance(2)
        error = await api_error(
            client.chat_appendStream(channel=DM, ts=started["ts"], markdown_text="too late")
        )
        assert error.response["error"] == "message_not_in_streaming_state"


async def test_streaming_can_be_unavailable(emu: SlackEmulator, client: AsyncWebClient) -> None:
    emu.native_streaming = False
    error = await api_error(client.chat_startStream(channel=DM, thread_ts="1.000001"))
    assert error.response["error"] == "missing_scope"
    assert error.response["needed"] == "assistant:write"


# ---- Web API: rate limits ---------------------------------------------------------------------


async def test_injected_429_reaches_the_sdk_with_retry_after(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    emu.inject_429("chat.postMessage", 1, retry_after=7)
    error = await api_error(client.chat_postMessage(channel=GENERAL, text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"
    assert (await client.chat_postMessage(channel=GENERAL, text="x"))["ok"]
    assert emu.stats.rate_limited == {"chat.postMessage": 1}
    assert emu.stats.calls["chat.postMessage"] == 2


async def test_sdk_retry_handler_waits_and_succeeds(emu: SlackEmulator) -> None:
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=emu.api_base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    emu.inject_429("chat.update", 1, retry_after=0)
    posted = await client.chat_postMessage(channel=GENERAL, text="x")
    assert (await client.chat_update(channel=GENERAL, ts=posted["ts"], text="y"))["ok"]
    assert [c.http_status for c in emu.calls_to("chat.update")] == [429, 200]


async def test_a_connection_dropped_after_a_post_leaves_the_post_and_no_answer(
    emu: SlackEmulator,
) -> None:
    emu.drop_connection_after("chat.postMessage")
    no_retries = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url, retry_handlers=[])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await no_retries.chat_postMessage(channel=GENERAL, text="once")
    assert [m.text for m in emu.channel(GENERAL)] == ["once"]  # Slack did post it
    assert [c.http_status for c in emu.calls_to("chat.postMessage")] == [0]

    # slack_sdk's default handler sends it again after the drop: the message is there twice.
    emu.drop_connection_after("chat.postMessage")
    default = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
    assert (await default.chat_postMessage(channel=GENERAL, text="twice"))["ok"]
    assert [m.text for m in emu.channel(GENERAL)] == ["once", "twice", "twice"]
    assert [c.http_status for c in emu.calls_to("chat.postMessage")] == [0, 0, 200]


async def test_sliding_window_limit_per_workspace_and_per_channel() -> None:
    clock = FakeClock()
    async with SlackEmulator(clock=clock) as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        emu.rate_limit("chat.update", 3)
        posted = await client.chat_postMessage(channel=GENERAL, text="x")
        for second in range(3):
            clock.advance(10)
            await client.chat_update(channel=GENERAL, ts=posted["ts"], text=str(second))
        error = await api_error(client.chat_update(channel=GENERAL, ts=posted["ts"], text="4"))
        assert (
            error.response.headers["Retry-After"] == "40"
        )  # when the first call leaves the window
        clock.advance(40)
        assert (await client.chat_update(channel=GENERAL, ts=posted["ts"], text="5"))["ok"]

        emu.rate_limit("chat.postMessage", 1, per_channel=True)
        await client.chat_postMessage(channel=GENERAL, text="x")
        await client.chat_postMessage(channel="C0RANDOM", text="x")
        error = await api_error(client.chat_postMessage(channel=GENERAL, text="x"))
        assert error.response.status_code == 429
        assert emu.stats.rate_limited == {"chat.update": 1, "chat.postMessage": 1}


async def test_posts_in_a_channel_take_a_burst_then_one_a_second_or_strictly_one_a_second() -> None:
    clock = FakeClock()
    async with SlackEmulator(clock=clock) as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)

        async def post(channel: str = GENERAL) -> str | None:
            """None if posted, else the 429's Retry-After."""
            try:
                await client.chat_postMessage(channel=channel, text="x")
            except SlackApiError as error:
                assert error.response.status_code == 429
                assert error.response["error"] == "ratelimited"
                return str(error.response.headers["Retry-After"])
            return None

        emu.apply_slack_tiers()  # Slack-like: a burst of SLACK_POST_BURST, then one a second
        assert [await post() for _ in range(SLACK_POST_BURST)] == [None] * SLACK_POST_BURST
        assert await post() == "1"
        assert await post("C0RANDOM") is None  # per channel
        clock.advance(1.0)
        assert [await post(), await post()] == [None, "1"]
        clock.advance(3.0)  # refilled one a second while quiet
        assert [await post() for _ in range(4)] == [None, None, None, "1"]

        emu.limit_posts(burst=1)  # strictly one a second
        assert [await post(), await post()] == [None, "1"]
        clock.advance(0.5)
        assert await post() == "1"  # half a second left: whole seconds, rounded up
        clock.advance(0.5)
        assert [await post(), await post()] == [None, "1"]
        assert emu.stats.rate_limited == {"chat.postMessage": 6}


# ---- Web API: how arguments arrive ----------------------------------------------------------


async def test_arguments_merge_from_query_form_and_json(emu: SlackEmulator) -> None:
    url = emu.api_base_url + "chat.postMessage"
    auth = {"Authorization": "Bearer xoxb-test"}
    blocks = json.dumps([{"type": "section", "text": _mrkdwn("from a form")}])
    async with aiohttp.ClientSession() as session:
        form = {"channel": GENERAL, "text": "form", "blocks": blocks, "token": "xoxb-test"}
        async with session.post(url, data=form) as response:
            assert (await response.json())["ok"]
        async with session.post(
            url, params={"channel": GENERAL, "text": "query"}, headers=auth
        ) as response:
            assert (await response.json())["ok"]
        mixed = {"text": "json", "thread_ts": None, "blocks": None}
        async with session.post(
            url, params={"channel": GENERAL}, json=mixed, headers=auth
        ) as response:
            assert (await response.json())["ok"]
        async with session.get(
            emu.api_base_url + "users.info?user=U0BOT", headers=auth
        ) as response:
            assert (await response.json())["user"]["id"] == "U0BOT"
    shown = emu.channel(GENERAL)
    assert [m.rendered for m in shown] == ["from a form", "query", "json"]
    assert emu.calls_to("chat.postMessage")[2].args == {"channel": GENERAL, "text": "json"}
    assert "token" not in emu.calls[0].args


async def test_a_thousand_concurrent_updates_are_all_served(emu: SlackEmulator) -> None:
    # Throughput is measured in bench/, not asserted here (shared machines are noisy).
    emu.echo_own_messages = False
    auth = {"Authorization": "Bearer xoxb-test"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            emu.api_base_url + "chat.postMessage",
            json={"channel": GENERAL, "text": "0"},
            headers=auth,
        ) as response:
            ts = (await response.json())["ts"]
        gate = asyncio.Semaphore(50)

        async def update(n: int) -> None:
            body = {"channel": GENERAL, "ts": ts, "text": str(n)}
            async with (
                gate,
                session.post(emu.api_base_url + "chat.update", json=body, headers=auth) as r,
            ):
                assert r.status == 200

        await asyncio.gather(*(update(n) for n in range(1000)))
    assert emu.stats.calls["chat.update"] == 1000
    shown = emu.message(GENERAL, ts)
    assert shown is not None and shown.edits == 1000


# ---- Events: what people do -----------------------------------------------------------------


async def test_channel_mention_arrives_as_message_and_app_mention(emu: SlackEmulator) -> None:
    app = RawSocketApp(emu)
    await app.connect()
    try:
        await emu.wait_for_socket()
        ts = await emu.user_message(GENERAL, "<@U0BOT> hi")
        await emu.user_message(DM, "hello in private")
        await emu.wait_for(lambda: len(app.envelopes) == 3)
        assert app.hello["type"] == "hello" and app.hello["connection_info"]["app_id"] == "A0APP"
        bodies = [e["payload"] for e in app.envelopes]
        kinds = [(b["event"]["type"], b["event"].get("channel_type")) for b in bodies]
        assert kinds == [("message", "channel"), ("app_mention", None), ("message", "im")]
        assert len({b["event_id"] for b in bodies}) == 3
        mention = bodies[1]
        assert mention["type"] == "event_callback" and mention["team_id"] == "T0TEAM"
        assert mention["authorizations"][0]["user_id"] == "U0BOT"
        assert mention["event"]["ts"] == ts and mention["event"]["user"] == "U0ALICE"
        assert mention["event"]["blocks"][0]["elements"][0]["elements"][0] == {
            "type": "user",
            "user_id": "U0BOT",
        }
        envelope = app.envelopes[0]
        assert envelope["accepts_response_payload"] is False and envelope["retry_attempt"] == 0
        await emu.wait_for(lambda: emu.stats.acks == 3)
        assert set(emu.acks) == {e["envelope_id"] for e in app.envelopes}
    finally:
        await app.close()


async def test_edits_deletes_bots_and_assistant_threads_arrive_as_events(
    emu: SlackEmulator,
) -> None:
    app = RawSocketApp(emu)
    await app.connect()
    try:
        await emu.wait_for_socket()
        ts = await emu.user_message(GENERAL, "typo")
        await emu.edit_user_message(GENERAL, ts, "fixed")
        await emu.delete_user_message(GENERAL, ts)
        await emu.bot_message(GENERAL, "beep", bot_id="B0OTHER")
        thread = await emu.start_assistant_thread("U0ALICE", DM, context_channel=GENERAL)
        await emu.wait_for(lambda: len(app.envelopes) == 5)
        events = [e["payload"]["event"] for e in app.envelopes]
        assert events[1]["subtype"] == "message_changed"
        assert (
            events[1]["message"]["text"] == "fixed"
            and events[1]["previous_message"]["text"] == "typo"
        )
        assert events[2]["subtype"] == "message_deleted" and events[2]["deleted_ts"] == ts
        assert events[3]["subtype"] == "bot_message" and events[3]["bot_id"] == "B0OTHER"
        started = events[4]["assistant_thread"]
        assert events[4]["type"] == "assistant_thread_started"
        assert started == {
            "user_id": "U0ALICE",
            "context": {"team_id": "T0TEAM", "enterprise_id": None, "channel_id": GENERAL},
            "channel_id": DM,
            "thread_ts": thread,
        }
    finally:
        await app.close()


async def test_the_app_hears_its_own_posts_like_on_slack(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    app = RawSocketApp(emu)
    await app.connect()
    try:
        await emu.wait_for_socket()
        posted = await client.chat_postMessage(channel=GENERAL, text="mine")
        await client.chat_update(channel=GENERAL, ts=posted["ts"], text="mine, edited")
        await emu.wait_for(lambda: len(app.envelopes) == 2)
        own = app.envelopes[0]["payload"]["event"]
        assert (own["user"], own["bot_id"], own["ts"]) == ("U0BOT", "B0BOT", posted["ts"])
        assert app.envelopes[1]["payload"]["event"]["subtype"] == "message_changed"
    finally:
        await app.close()


async def test_unacked_envelopes_are_retried_with_the_same_event_id(emu: SlackEmulator) -> None:
    emu.ack_timeout = 0.05
    emu.retry_delays = (0.0, 0.1, 0.2)  # Slack's 0 s, 60 s, 300 s, shortened
    app = RawSocketApp(emu, ack=False)
    await app.connect()
    try:
        await emu.wait_for_socket()
        await emu.user_message(DM, "anyone?")
        await emu.wait_for(lambda: emu.stats.events_failed == 1)
        sent = [
            (e["retry_attempt"], e["retry_reason"], e["payload"]["event_id"]) for e in app.envelopes
        ]
        event_id = sent[0][2]
        assert sent == [(0, "", event_id)] + [(n, "timeout", event_id) for n in (1, 2, 3)]
        assert len({e["envelope_id"] for e in app.envelopes}) == 4
        assert emu.stats.retries == 3 and emu.stats.acks == 0
        sent_at = [a.sent_at for a in emu.deliveries[-1].attempts]
        gaps = [later - earlier for earlier, later in zip(sent_at, sent_at[1:], strict=False)]
        # Each retry waits for the ack timeout, then its pause: never sooner.
        assert gaps[1] >= 0.05 + 0.1 and gaps[2] >= 0.05 + 0.2
    finally:
        await app.close()


async def test_each_envelope_goes_to_one_of_several_connections(emu: SlackEmulator) -> None:
    apps = [RawSocketApp(emu), RawSocketApp(emu)]
    for app in apps:
        await app.connect()
    try:
        await emu.wait_for_socket(2)
        for n in range(4):
            await emu.user_message(DM, f"message {n}")
        await emu.wait_for(lambda: sum(len(a.envelopes) for a in apps) == 4)
        assert [len(a.envelopes) for a in apps] == [2, 2]
        assert apps[1].hello["num_connections"] == 2
    finally:
        for app in apps:
            await app.close()


async def test_events_without_a_receiver_are_dropped(emu: SlackEmulator) -> None:
    await emu.user_message(GENERAL, "<@U0BOT> is anyone there?")
    assert emu.stats.events_dropped == 2 and emu.stats.events_delivered == 0


# ---- Bolt in Socket Mode --------------------------------------------------------------------


async def test_bolt_socket_mode_answers_a_mention_in_its_thread(emu: SlackEmulator) -> None:
    app = bolt_app(emu)
    heard: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def reply(event: dict[str, Any], say: Any) -> None:
        await say(text="On it", thread_ts=event["ts"])

    @app.event("message")
    async def listen(event: dict[str, Any]) -> None:
        heard.append(event)

    handler = AsyncSocketModeHandler(app, emu.identity.app_token)
    await handler.connect_async()
    try:
        await emu.wait_for_socket()
        ts = await emu.user_message(GENERAL, "<@U0BOT> please help")
        answers = await emu.wait_for(lambda: [m for m in emu.thread(GENERAL, ts) if m.is_bot])
        assert answers[0].text == "On it" and answers[0].user == "U0BOT"
        # Slack echoes the reply to the app; Bolt must ack it and keep it from listeners.
        await emu.wait_for(lambda: len(emu.deliveries) == 3 and emu.stats.acks == 3)
        assert emu.deliveries[2].body["event"]["bot_id"] == "B0BOT"
        assert [e["user"] for e in heard] == ["U0ALICE"]
        assert emu.calls_to("auth.test") and emu.stats.retries == 0
        for delivery in emu.deliveries:
            assert delivery.attempts[0].envelope_id in emu.acks
    finally:
        await handler.close_async()


async def test_bolt_sees_retry_headers_and_reconnects_on_disconnect(emu: SlackEmulator) -> None:
    app = bolt_app(emu)
    retry_numbers: list[str | None] = []

    @app.event("app_mention")
    async def record(request: AsyncBoltRequest) -> None:
        retry_numbers.append(request.headers.get("x-slack-retry-num", [None])[0])

    handler = AsyncSocketModeHandler(app, emu.identity.app_token)
    await handler.connect_async()
    try:
        await emu.wait_for_socket()
        mention = {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": "<@U0BOT> hi",
            "channel": GENERAL,
        }
        mention |= {"ts": "1.000001", "event_ts": "1.000001"}
        await emu.deliver(mention, retries=2)
        await emu.wait_for(lambda: len(retry_numbers) == 3)
        # Slack's first envelope says retry_attempt 0, so Bolt shows "0" rather than no header.
        assert sorted(retry_numbers, key=str) == ["0", "1", "2"]

        assert await emu.disconnect_socket() == 1
        await emu.wait_for(
            lambda: emu.stats.socket_connects == 2 and emu.stats.socket_connections == 1
        )
        await emu.deliver(mention)
        await emu.wait_for(lambda: len(retry_numbers) == 4)
        assert len(emu.calls_to("apps.connections.open")) == 2
    finally:
        await handler.close_async()


# ---- Bolt over HTTP (Events API) -------------------------------------------------------------


@pytest.fixture
async def bolt_http(emu: SlackEmulator) -> AsyncIterator[tuple[AsyncApp, list[dict[str, Any]]]]:
    app = bolt_app(emu)
    handled: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def reply(event: dict[str, Any], say: Any, request: AsyncBoltRequest) -> None:
        handled.append({"event": event, "retry": request.headers.get("x-slack-retry-num")})
        await say(text="pong", thread_ts=event["ts"])

    server = LocalServer(app.web_app(path="/slack/events"))
    await server.start()
    emu.delivery = "http"
    emu.event_url = f"{server.url}/slack/events"
    try:
        yield app, handled
    finally:
        await server.stop()


async def test_bolt_http_handles_a_signed_event(
    emu: SlackEmulator, bolt_http: tuple[AsyncApp, list[dict[str, Any]]]
) -> None:
    _, handled = bolt_http
    ts = await emu.user_message(GENERAL, "<@U0BOT> ping")
    replies = await emu.wait_for(lambda: [m for m in emu.thread(GENERAL, ts) if m.is_bot])
    assert replies[0].text == "pong"
    assert handled[0]["retry"] is None
    mention = next(d for d in emu.deliveries if d.event_type == "app_mention")
    assert mention.attempts[0].http_status == 200 and len(mention.attempts) == 1


async def test_bolt_http_rejects_bad_missing_and_stale_signatures(
    emu: SlackEmulator, bolt_http: tuple[AsyncApp, list[dict[str, Any]]]
) -> None:
    _, handled = bolt_http
    event = {"type": "app_mention", "user": "U0ALICE", "text": "<@U0BOT> hi", "channel": GENERAL}
    event |= {"ts": "1.000001", "event_ts": "1.000001"}
    body = json.dumps({"type": "event_callback", "team_id": "T0TEAM", "event": event}).encode()
    assert await emu.post_signed(body, signature="v0=" + "0" * 64) == 401
    assert await emu.post_signed(body, sign=False) == 401
    stale = int(time.time()) - 10 * 60
    stale_signature = slack_signature("test-secret", str(stale), body)
    assert await emu.post_signed(body, signature=stale_signature, timestamp=stale) == 401
    assert handled == []
    assert await emu.post_signed(body) == 200
    await emu.wait_for(lambda: len(handled) == 1)


async def test_bolt_http_sees_retry_headers(
    emu: SlackEmulator, bolt_http: tuple[AsyncApp, list[dict[str, Any]]]
) -> None:
    _, handled = bolt_http
    mention = {"type": "app_mention", "user": "U0ALICE", "text": "<@U0BOT> hi", "channel": GENERAL}
    mention |= {"ts": "1.000001", "event_ts": "1.000001"}
    delivery = await emu.deliver(mention, retries=1, retry_reason="http_timeout")
    await emu.wait_for(lambda: len(handled) == 2)
    assert [h["retry"] for h in handled] == [None, ["1"]]
    assert [a.retry_num for a in delivery.attempts] == [0, 1]


async def test_http_delivery_retries_failures_and_timeouts(emu: SlackEmulator) -> None:
    endpoint = EventsEndpoint(script=[(500, 0.0, {}), (200, 0.5, {}), (200, 0.0, {})])
    emu.delivery = "http"
    emu.ack_timeout = 0.2
    emu.retry_delays = (0.0, 0.05, 0.05)  # Slack's 0 s, 60 s, 300 s, shortened
    emu.event_url = await endpoint.start()
    try:
        await emu.user_message(DM, "hello")
        await emu.wait_for(lambda: emu.deliveries[0].acked.is_set())
        headers = [r.headers for r in endpoint.received]
        assert [h.get("X-Slack-Retry-Num") for h in headers] == [None, "1", "2"]
        assert [h.get("X-Slack-Retry-Reason") for h in headers] == [
            None,
            "http_error",
            "http_timeout",
        ]
        assert len({r.body["event_id"] for r in endpoint.received}) == 1
        signature = slack_signature(
            "test-secret",
            headers[0]["X-Slack-Request-Timestamp"],
            json.dumps(endpoint.received[0].body).encode(),
        )
        assert headers[0]["X-Slack-Signature"] == signature

        endpoint.script = [(500, 0.0, {"X-Slack-No-Retry": "1"})]
        await emu.user_message(DM, "again")
        await emu.wait_for(lambda: not emu.events.busy)
        assert len(endpoint.received) == 4  # the app asked for no retry
    finally:
        await endpoint.stop()


# ---- Ephemeral messages and slash commands ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_ephemeral_shows_only_to_members_of_the_channel(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    root = await emu.user_message(GENERAL, "question", user="U0ALICE")
    reply = await emu.user_message(GENERAL, "more", user="U0ALICE", thread_ts=root)
    emu.add_user("U0CAROL", "carol")
    answer = await client.chat_postEphemeral(
        channel=GENERAL, user="U0ALICE", text="only for you", thread_ts=reply
    )
    shown = emu.ephemerals("U0ALICE", GENERAL)
    assert [(e.text, e.ts, e.thread_ts, e.author) for e in shown] == [
        ("only for you", answer["message_ts"], root, "U0BOT")  # a reply's ts threads under its root
    ]
    assert emu.ephemerals("U0CAROL") == [] and len(emu.thread(GENERAL, root)) == 2
    lone = await emu.user_message(GENERAL, "no replies yet", user="U0ALICE")
    await client.chat_postEphemeral(channel=GENERAL, user="U0ALICE", text="lost", thread_ts=lone)
    # Slack shows an ephemeral message in a thread only once the thread has replies.
    assert [e.text for e in emu.ephemerals("U0ALICE")] == ["only for you"]
    assert [e.text for e in emu.ephemerals("U0ALICE", hidden=True)] == ["only for you", "lost"]

    markdown = [{"type": "markdown", "text": "**bold** <@U0ALICE>"}]
    await client.chat_postEphemeral(channel=GENERAL, user="U0ALICE", text="fb", blocks=markdown)
    assert emu.ephemerals("U0ALICE")[-1].rendered == "**bold** @alice"

    errors = [
        (dict(channel="C0NOWHERE", user="U0ALICE", text="x"), "channel_not_found"),
        (dict(channel="general", user="U0ALICE", text="x"), "channel_not_found"),
        (dict(channel=GENERAL, user="U0NOBODY", text="x"), "user_not_found"),
        (dict(channel=GENERAL, user="U0CAROL", text="x"), "user_not_in_channel"),
        (dict(channel=GENERAL, user="U0ALICE"), "no_text"),
        (dict(channel=GENERAL, user="U0ALICE", text="x" * 40_001), "msg_too_long"),
    ]
    for arguments, expected in errors:
        error = await api_error(client.chat_postEphemeral(**arguments))  # type: ignore[arg-type]
        assert error.response["error"] == expected, arguments
    emu.join(GENERAL, "U0CAROL")
    await client.chat_postEphemeral(channel=GENERAL, user="U0CAROL", text="welcome")
    assert [e.text for e in emu.ephemerals("U0CAROL", GENERAL)] == ["welcome"]
    assert SLACK_TIERS["chat.postEphemeral"] == (100, False)


async def test_slash_command_arrives_in_socket_mode_as_slack_sends_it(emu: SlackEmulator) -> None:
    app = RawSocketApp(emu)  # acknowledges with an empty payload
    await app.connect()
    try:
        await emu.wait_for_socket()
        run = await emu.slash_command(
            "U0ALICE", GENERAL, "/chat-bridge", "prompt a<b & @bob", channel_name="general"
        )
        envelope = next(m for m in app.received if m.get("type") == "slash_commands")
        assert envelope["accepts_response_payload"] is True
        assert envelope["envelope_id"] == run.envelope_id and "retry_attempt" not in envelope
        payload = envelope["payload"]
        assert {key: payload[key] for key in ("team_id", "team_domain", "channel_id",
                "channel_name", "user_id", "user_name", "command", "text", "api_app_id")} == {
            "team_id": "T0TEAM", "team_domain": "emulated", "channel_id": GENERAL,
            "channel_name": "general", "user_id": "U0ALICE", "user_name": "alice",
            "command": "/chat-bridge", "text": "prompt a&lt;b &amp; @bob", "api_app_id": "A0APP",
        }  # fmt: skip
        assert payload["response_url"].startswith(emu.url + "/commands/T0TEAM/")
        assert payload["trigger_id"] and payload["token"]
        assert run.acked_at is not None and run.failure is None
        assert emu.ephemerals("U0ALICE") == []  # an empty acknowledgement shows nothing
        dm = await emu.slash_command("U0ALICE", DM, "/chat-bridge")
        assert dm.payload["channel_name"] == "directmessage" and dm.payload["text"] == ""
    finally:
        await app.close()


async def test_slash_command_not_acknowledged_in_time_shows_slacks_error(
    emu: SlackEmulator,
) -> None:
    emu.ack_timeout = 0.05
    app = RawSocketApp(emu, ack=False)
    await app.connect()
    try:
        await emu.wait_for_socket()
        run = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "usage")
        assert run.failure == "operation_timeout"
        [shown] = emu.ephemerals("U0ALICE", GENERAL)
        assert (shown.source, shown.author) == ("slack", "USLACKBOT")
        assert "operation_timeout" in shown.text
        await asyncio.sleep(0.1)
        assert len([m for m in app.received if m.get("type") == "slash_commands"]) == 1
    finally:
        await app.close()
    nobody = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "usage")
    assert nobody.failure == "dispatch_failed"


async def test_response_url_answers_ephemerally_five_times_in_thirty_minutes() -> None:
    clock = FakeClock()
    async with SlackEmulator(clock=clock) as emu:
        app = RawSocketApp(emu)
        await app.connect()
        try:
            await emu.wait_for_socket()
            run = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "help")
            later = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "help")
        finally:
            await app.close()
        async with aiohttp.ClientSession() as session:

            async def respond(url: str, body: Any) -> tuple[int, dict[str, Any]]:
                async with session.post(url, json=body) as response:
                    return response.status, await response.json()

            url = run.response_url
            assert await respond(url, {"text": "first"}) == (200, {"ok": True})
            assert await respond(url, {"text": "public", "response_type": "in_channel"}) == (
                200, {"ok": True},
            )  # fmt: skip
            assert (await respond(url, {"text": "second", "replace_original": True}))[0] == 200
            assert await respond(url, {"response_type": "ephemeral"}) == (
                400, {"ok": False, "error": "no_text"},
            )  # fmt: skip
            assert await respond(url, ["not", "an", "object"]) == (
                400, {"ok": False, "error": "invalid_payload"},
            )  # fmt: skip
            assert await respond(url, {"text": "third"}) == (200, {"ok": True})
            assert await respond(url, {"delete_original": True}) == (200, {"ok": True})
            assert await respond(url, {"text": "sixth"}) == (
                404, {"ok": False, "error": "used_url"},
            )  # fmt: skip
            shown = emu.ephemerals("U0ALICE", GENERAL)
            assert [(e.text, e.source) for e in shown] == [("second", "response_url")]
            assert [m.rendered for m in emu.channel(GENERAL)] == ["public"]
            assert emu.channel(GENERAL)[0].bot_id == "B0BOT"

            clock.advance(30 * 60 + 1)
            assert await respond(later.response_url, {"text": "late"}) == (
                404, {"ok": False, "error": "expired_url"},
            )  # fmt: skip
            unknown = run.response_url.rsplit("/", 1)[0] + "/nope"
            assert (await respond(unknown, {"text": "x"}))[0] == 404


async def test_bolt_acks_and_responds_to_a_command_in_socket_mode(emu: SlackEmulator) -> None:
    app = bolt_app(emu)
    seen: list[dict[str, Any]] = []

    @app.command("/chat-bridge")
    async def command(ack: Any, body: dict[str, Any], respond: Any) -> None:
        seen.append(body)
        await ack("Working on it…")
        await respond(text=f"You asked for {body['text']}")

    handler = AsyncSocketModeHandler(app, emu.identity.app_token, web_client=app.client)
    await handler.connect_async()
    try:
        await emu.wait_for_socket()
        run = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "usage")
        assert run.ack_payload == {"text": "Working on it…"}
        await emu.wait_for(lambda: len(emu.ephemerals("U0ALICE", GENERAL)) == 2)
        # The response may overtake the acknowledgement, as on Slack.
        shown = sorted((e.source, e.text) for e in emu.ephemerals("U0ALICE", GENERAL))
        assert shown == [("command_ack", "Working on it…"), ("response_url", "You asked for usage")]
        assert seen[0]["user_id"] == "U0ALICE" and emu.channel(GENERAL) == []
    finally:
        await handler.close_async()


async def test_bolt_over_http_gets_a_signed_form_and_its_body_is_the_reply(
    emu: SlackEmulator, bolt_http: tuple[AsyncApp, list[dict[str, Any]]]
) -> None:
    app, _ = bolt_http
    requests: list[AsyncBoltRequest] = []

    @app.command("/chat-bridge")
    async def command(ack: Any, request: AsyncBoltRequest, respond: Any) -> None:
        requests.append(request)
        await ack(text="Done", response_type="in_channel")
        await respond("and only for you")

    run = await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge", "reset")
    assert run.http_status == 200 and run.failure is None
    assert requests[0].headers["content-type"] == ["application/x-www-form-urlencoded"]
    assert requests[0].body["text"] == "reset"
    assert [m.rendered for m in emu.channel(GENERAL)] == ["Done"]
    await emu.wait_for(lambda: emu.ephemerals("U0ALICE", GENERAL))
    assert [e.text for e in emu.ephemerals("U0ALICE", GENERAL)] == ["and only for you"]


async def test_http_command_answers_text_json_errors_and_unsigned_refusals(
    emu: SlackEmulator,
) -> None:
    answers = [
        web.Response(text="plain words"),
        web.json_response({"text": "json words"}),
        web.Response(status=500),
        web.Response(),
    ]
    received: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        received.append((request.content_type, str(form["command"])))
        assert request.headers["X-Slack-Signature"] == slack_signature(
            "test-secret", request.headers["X-Slack-Request-Timestamp"], await request.read()
        )
        return answers.pop(0)

    application = web.Application()
    application.router.add_post("/slack/events", handle)
    async with LocalServer(application) as server:
        emu.delivery = "http"
        emu.event_url = f"{server.url}/slack/events"
        runs = [await emu.slash_command("U0ALICE", GENERAL, "/chat-bridge") for _ in range(4)]
    assert received[0] == ("application/x-www-form-urlencoded", "/chat-bridge")
    assert [r.failure for r in runs] == [None, None, "http_error", None]
    shown = [(e.text, e.source) for e in emu.ephemerals("U0ALICE", GENERAL)]
    assert shown[:2] == [("plain words", "command_ack"), ("json words", "command_ack")]
    assert shown[2][1] == "slack" and len(shown) == 3
