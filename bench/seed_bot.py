"""The seed's approach as a running bot, for the platform benchmarks to compare the bridge with.

    python -m bench.seed_bot discord --api-base URL --gateway URL --llm URL --db PATH [--n N]
    python -m bench.seed_bot slack --api-base URL --llm URL --db PATH [--n N]

Deliberately naive, the way popular LLM bots are written: discord.py or slack_bolt + slack_sdk,
the openai SDK's parsed stream, the SQLAlchemy ORM; and on EVERY delta it edits the platform
message and commits the text to the database. No throttle, no shared scheduler. It relies on the
SDKs for rate limits: discord.py waits for its buckets; slack_sdk raises on a 429, which the bot
logs and skips (the next delta sends the whole text again), except for the final edit, which it
retries after Retry-After so that every reply ends complete. Secrets come from the environment:
SEED_DISCORD_TOKEN, SEED_SLACK_BOT_TOKEN, SEED_SLACK_APP_TOKEN, OPENAI_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import discord.gateway
import discord.http
import openai
import yarl
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import String, Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger("seed")

READY = "seed ready"
PLACEHOLDER = "…"
DISCORD_LIMIT = 2000
FINAL_ATTEMPTS = 10
OnDelta = Callable[[int, str], Awaitable[None]]


class Base(DeclarativeBase):
    pass


class SeedMessage(Base):
    __tablename__ = "seed_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    place: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))


class Seed:
    """What both platforms share: the database rows and the LLM stream."""

    def __init__(self, llm_url: str, db: str, n: int) -> None:
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.openai = openai.AsyncOpenAI(base_url=llm_url)  # the key from OPENAI_API_KEY
        self.n = n
        self.tasks: set[asyncio.Task[None]] = set()

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a reply failed", exc_info=task.exception())

    async def start_rows(self, session: AsyncSession, place: str, prompt: str) -> list[SeedMessage]:
        session.add(SeedMessage(place=place, role="user", content=prompt, status="complete"))
        rows = [
            SeedMessage(place=place, role="assistant", content="", status="streaming")
            for _ in range(self.n)
        ]
        session.add_all(rows)
        await session.commit()
        return rows

    async def stream(self, prompt: str, on_delta: OnDelta) -> None:
        """The SDK's parsed stream: one pydantic chunk object per delta."""
        stream = await self.openai.chat.completions.create(
            model="bench-model",
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": prompt},
            ],
            stream=True,
            n=self.n,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    await on_delta(choice.index, choice.delta.content)


# --- Discord -------------------------------------------------------------------------------


class SeedDiscord(discord.Client):
    def __init__(self, seed: Seed) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents)
        self.seed = seed

    async def on_ready(self) -> None:
        print(READY, file=sys.stderr, flush=True)

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None or message.author.id == self.user.id:
            return
        if self.user not in message.mentions:
            return
        await self.answer(message)

    async def answer(self, message: discord.Message) -> None:
        assert self.user is not None
        prompt = message.content.replace(f"<@{self.user.id}>", "").strip()
        seed = self.seed
        async with seed.sessions() as session:
            rows = await seed.start_rows(session, str(message.channel.id), prompt)
            shown = [[await message.reply(PLACEHOLDER, mention_author=False)] for _ in rows]
            texts = [""] * len(rows)

            async def on_delta(index: int, delta: str) -> None:
                texts[index] += delta
                await show(shown[index], texts[index])
                rows[index].content = texts[index]
                await session.commit()

            await seed.stream(prompt, on_delta)
            for row in rows:
                row.status = "complete"
            await session.commit()


async def show(messages: list[discord.Message], text: str) -> None:
    """Edit the last message; past 2,000 characters, fill it and go on in a new one."""
    pieces = [text[i : i + DISCORD_LIMIT] for i in range(0, len(text), DISCORD_LIMIT)]
    while len(pieces) > len(messages):
        messages[-1] = await messages[-1].edit(content=pieces[len(messages) - 1])
        messages.append(await messages[-1].channel.send(pieces[len(messages)]))
    messages[-1] = await messages[-1].edit(content=pieces[-1])


async def run_discord(args: argparse.Namespace, seed: Seed, stop: asyncio.Event) -> None:
    discord.http.Route.BASE = args.api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(args.gateway)
    client = SeedDiscord(seed)
    connection = asyncio.ensure_future(client.start(os.environ["SEED_DISCORD_TOKEN"]))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({connection, stopped}, return_when=asyncio.FIRST_COMPLETED)
    await client.close()
    with contextlib.suppress(Exception):
        await connection


# --- Slack ---------------------------------------------------------------------------------

_MENTION = re.compile(r"<@[A-Z0-9]+>")


async def run_slack(args: argparse.Namespace, seed: Seed, stop: asyncio.Event) -> None:
    client = AsyncWebClient(token=os.environ["SEED_SLACK_BOT_TOKEN"], base_url=args.api_base)
    app = AsyncApp(client=client, signing_secret="", request_verification_enabled=False)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seed.spawn(answer_slack(seed, client, event))

    @app.event("message")
    async def on_message() -> None:
        return None  # own posts and edits come back as events; nothing to do

    handler = AsyncSocketModeHandler(app, os.environ["SEED_SLACK_APP_TOKEN"], web_client=client)
    # slack_bolt leaves these two unannotated.
    connect: Callable[[], Awaitable[None]] = handler.connect_async
    close: Callable[[], Awaitable[None]] = handler.close_async
    await connect()
    print(READY, file=sys.stderr, flush=True)
    await stop.wait()
    await close()


async def answer_slack(seed: Seed, client: AsyncWebClient, event: dict[str, Any]) -> None:
    channel = str(event["channel"])
    thread = str(event.get("thread_ts") or event["ts"])
    prompt = _MENTION.sub("", str(event.get("text", ""))).strip()
    async with seed.sessions() as session:
        rows = await seed.start_rows(session, f"{channel}/{thread}", prompt)
        posted = [
            await client.chat_postMessage(channel=channel, thread_ts=thread, text=PLACEHOLDER)
            for _ in rows
        ]
        stamps = [str(answer["ts"]) for answer in posted]
        texts = [""] * len(rows)

        async def on_delta(index: int, delta: str) -> None:
            texts[index] += delta
            try:
                await client.chat_update(channel=channel, ts=stamps[index], text=texts[index])
            except SlackApiError as exc:
                if exc.response.status_code != 429:
                    raise
                log.info("chat.update rate limited; the next delta sends the text again")
            rows[index].content = texts[index]
            await session.commit()

        await seed.stream(prompt, on_delta)
        for index, text in enumerate(texts):
            await final_update(client, channel, stamps[index], text)
        for row in rows:
            row.status = "complete"
        await session.commit()


async def final_update(client: AsyncWebClient, channel: str, ts: str, text: str) -> None:
    for _ in range(FINAL_ATTEMPTS):
        try:
            await client.chat_update(channel=channel, ts=ts, text=text)
            return
        except SlackApiError as exc:
            if exc.response.status_code != 429:
                raise
            await asyncio.sleep(float(exc.response.headers.get("Retry-After", 1)))


# --- process -------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    seed = Seed(args.llm, args.db, args.n)
    await seed.create_tables()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.platform == "discord":
            await run_discord(args, seed, stop)
        else:
            await run_slack(args, seed, stop)
    finally:
        for task in list(seed.tasks):
            task.cancel()
        await seed.openai.close()
        await seed.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("platform", choices=("discord", "slack"))
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--gateway", default="")
    parser.add_argument("--llm", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--n", type=int, default=1)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
