"""Votes on one's own generation: a server setting (/config self_votes), off by default."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from bot.votes import Generation, VoteBook
from tests.bot_harness import ScriptedWorker, harness  # noqa: F401
from tests.fake_discord import PERM_MANAGE_GUILD, PERM_VIEW_SEND


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue).start()
    yield w
    await w.stop()


async def tally(harness, job_id: str, up: int, down: int = 0) -> None:
    """Wait until the generation's counts are (up, down); reactions are fire-and-forget gateway events."""
    async with asyncio.timeout(10):
        while True:
            gen = await harness.bot.votes.get(job_id)
            if gen is not None and (gen.up, gen.down) == (up, down):
                return
            await asyncio.sleep(0.05)


async def test_own_reaction_ignored_by_default_and_counted_when_the_server_allows_it(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    inter = await fake.slash("imagine", ann, prompt="a red circle")
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    msg = await fake.wait_for(lambda: next(iter(fake.channel_messages(via="channel")), None))
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"], timeout=30)
    job_id = worker.seen[0].id

    await fake.react(msg, ann, "👍")  # the author's own: ignored (default)
    await fake.react(msg, ann, "👎")
    await fake.react(msg, bob, "👍")  # applied after the author's (one FIFO, gateway order)
    await tally(harness, job_id, up=1)
    top = await fake.slash("top", bob)
    call = await fake.wait_call("POST", rf"/interactions/{top.id}/")
    assert "1👍 0👎" in call.json["data"]["embeds"][0]["description"]

    inter = await fake.slash("config", admin, self_votes=True)
    call = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "own generations:** counted" in call.json["data"]["content"]
    await fake.react(msg, ann, "👍", add=False)  # Discord: the author un-reacts and reacts again
    await fake.react(msg, ann, "👍")
    await tally(harness, job_id, up=2)

    inter = await fake.slash("config", admin, self_votes=False)
    call = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "own generations:** ignored" in call.json["data"]["content"]
    await fake.react(msg, ann, "👍", add=False)  # a vote counted while allowed can still be taken back
    await tally(harness, job_id, up=1)
    await fake.react(msg, ann, "👍")
    await fake.react(msg, bob, "👎")
    await tally(harness, job_id, up=1, down=1)


async def test_vote_book_checks_the_author_in_the_same_step(redis_url):
    r = aioredis.from_url(redis_url)
    book = VoteBook(r, "t:")
    await book.register(Generation("j1", 7, 1, 100, 42, "mine", time.time()))
    res = await book.vote(100, 7, 42, up=True, add=True, self_votes=False)
    assert (res.changed, res.up) == (False, 0)
    res = await book.vote(100, 7, 43, up=True, add=True, self_votes=False)
    assert (res.changed, res.up) == (True, 1)
    res = await book.vote(100, 7, 42, up=True, add=True)  # allowed
    assert (res.changed, res.up) == (True, 2)
    await r.aclose()
