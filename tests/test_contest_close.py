"""Closing contests exactly once, on a real Redis: restarts between the steps, two bot processes
closing at once, a lost claim, the Redis server itself restarted (AOF)."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bot.contests.closer import ContestCloser
from bot.contests.rules import validate_request
from bot.contests.store import STEP_HALL_OF_FAME, STEP_RANKING, ContestStore

T0 = 1_800_000_000.0
LEASE = 60.0


class Crash(Exception):
    """The bot process dies here (what follows never runs)."""


class RecordingPoster:
    """Stands in for Discord: records every post; can die before or after one."""

    def __init__(self, crash_on: str | None = None, delay: float = 0.0):
        self.rankings: list[tuple[str, list[int]]] = []
        self.halls: list[tuple[str, int]] = []
        self.crash_on, self.delay = crash_on, delay
        self._next_id = 9000

    def _mid(self) -> int:
        self._next_id += 1
        return self._next_id

    async def post_ranking(self, contest, ranked) -> int:
        await asyncio.sleep(self.delay)
        if self.crash_on == "ranking":
            raise Crash()
        self.rankings.append((contest.id, [e.number for e in ranked]))
        return self._mid()

    async def post_hall_of_fame(self, contest, entry) -> int:
        await asyncio.sleep(self.delay)
        if self.crash_on == "hall_of_fame":
            raise Crash()
        self.halls.append((contest.id, entry.number))
        return self._mid()


async def contest_with_entries(store: ContestStore, channel: int, minutes: int = 10) -> str:
    created = await store.create(validate_request(f"theme {channel}", minutes), guild=1, channel=channel, created_by=1,
                                 steps=50, width=64, height=64, now=T0)
    cid = created.contest_id
    await store.set_thread(cid, channel + 1)
    for n, author in enumerate((11, 12), start=1):
        assert (await store.admit_entry(cid, f"{cid}-{n}", author, seed=n, now=T0 + n)).ok
        assert await store.entry_posted(cid, f"{cid}-{n}", channel * 100 + n) == "posted"
    assert (await store.vote(channel * 100 + 2, 99, up=True, add=True, now=T0 + 5)).status == "counted"
    return cid


@pytest.fixture
def store(redis_client):
    return ContestStore(redis_client)


async def test_nothing_closes_before_its_time_then_everything_once(store):
    cid = await contest_with_entries(store, 100)
    poster = RecordingPoster()
    closer = ContestCloser(store, poster, owner="bot", lease_s=LEASE)
    assert await closer.close_due(now=T0 + 599) == []
    assert await closer.close_due(now=T0 + 600) == [cid]
    assert poster.rankings == [(cid, [2, 1])] and poster.halls == [(cid, 2)]
    c = await store.get(cid)
    assert c.state == "closed" and c.step(STEP_RANKING) == "9001" and c.step(STEP_HALL_OF_FAME) == "9002"
    assert await closer.close_due(now=T0 + 700) == [] and await store.due(T0 + 700) == []
    assert len(poster.rankings) == 1 and len(poster.halls) == 1
    assert (await store.vote(10002, 98, up=True, add=True, now=T0 + 700)).status == "closed"
    assert 0 < await store.redis.ttl(store._c(cid)) <= 90 * 86400  # kept a while, then gone
    # the channel is free again
    assert (await store.create(validate_request("next", 5), guild=1, channel=100, created_by=1, steps=50,
                               width=64, height=64, now=T0 + 700)).ok


async def test_a_restart_after_the_claim_but_before_posting_still_posts_once(store):
    cid = await contest_with_entries(store, 200)
    dying = ContestCloser(store, RecordingPoster(crash_on="ranking"), owner="bot", lease_s=LEASE, boot="first")
    assert await dying.close_due(now=T0 + 600) == []  # claimed, then the process died
    assert (await store.get(cid)).state == "closing"
    assert (await store.vote(20001, 98, up=True, add=True, now=T0 + 601)).status == "closed"  # votes stopped at the claim
    # another process must wait for the lease, the same bot restarted takes it back at once
    other = ContestCloser(store, RecordingPoster(), owner="bot-b", lease_s=LEASE)
    assert await other.close_due(now=T0 + 601) == [] and other.poster.rankings == []
    poster = RecordingPoster()
    restarted = ContestCloser(store, poster, owner="bot", lease_s=LEASE, boot="second")
    assert await restarted.close_due(now=T0 + 602) == [cid]
    assert poster.rankings == [(cid, [2, 1])] and poster.halls == [(cid, 2)]
    assert (await store.get(cid)).state == "closed"


async def test_a_restart_between_the_ranking_and_the_hall_of_fame_posts_only_what_is_missing(store):
    cid = await contest_with_entries(store, 300)
    first = RecordingPoster(crash_on="hall_of_fame")
    assert await ContestCloser(store, first, owner="bot", lease_s=LEASE, boot="a").close_due(now=T0 + 600) == []
    assert first.rankings == [(cid, [2, 1])] and first.halls == []
    second = RecordingPoster()
    assert await ContestCloser(store, second, owner="bot", lease_s=LEASE, boot="b").close_due(now=T0 + 600) == [cid]
    assert second.rankings == [] and second.halls == [(cid, 2)]  # the ranking was already out
    c = await store.get(cid)
    assert c.step(STEP_RANKING) == "9001" and c.step(STEP_HALL_OF_FAME) == "9001"


async def test_another_process_takes_over_after_the_lease(store):
    cid = await contest_with_entries(store, 400)
    await ContestCloser(store, RecordingPoster(crash_on="ranking"), owner="bot-a", lease_s=LEASE).close_due(now=T0 + 600)
    poster = RecordingPoster()
    b = ContestCloser(store, poster, owner="bot-b", lease_s=LEASE)
    assert await b.close_due(now=T0 + 600 + LEASE - 1) == []
    assert await b.close_due(now=T0 + 600 + LEASE) == [cid]
    assert len(poster.rankings) == 1 and len(poster.halls) == 1


async def test_a_process_that_lost_its_claim_stops(store):
    cid = await contest_with_entries(store, 500)
    slow = await store.claim_close(cid, "bot-a", "x", LEASE, now=T0 + 600)
    fast = await store.claim_close(cid, "bot-b", "y", LEASE, now=T0 + 600 + LEASE)
    assert slow.ok and fast.ok and slow.token != fast.token
    assert not await store.record_step(slow, STEP_RANKING, "1", LEASE, now=T0 + 600 + LEASE)
    assert not await store.finish_close(slow, now=T0 + 600 + LEASE)
    assert await store.record_step(fast, STEP_RANKING, "2", LEASE, now=T0 + 600 + LEASE)
    assert await store.finish_close(fast, now=T0 + 600 + LEASE)
    assert (await store.claim_close(cid, "bot-a", "x", LEASE, now=T0 + 10_000)).status == "done"


async def test_two_processes_closing_at_once_post_each_contest_once(store, redis_url):
    ids = [await contest_with_entries(store, 1000 + 10 * i) for i in range(6)]
    posters = [RecordingPoster(delay=0.01), RecordingPoster(delay=0.01)]
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]  # two bot processes' connections
    try:
        closers = [ContestCloser(ContestStore(c), p, owner=f"bot-{i}", lease_s=LEASE)
                   for i, (c, p) in enumerate(zip(clients, posters))]
        for _ in range(3):
            await asyncio.gather(*(c.close_due(now=T0 + 600) for c in closers))
    finally:
        for c in clients:
            await c.aclose()
    ranked = sorted(cid for p in posters for cid, _ in p.rankings)
    famous = sorted(cid for p in posters for cid, _ in p.halls)
    assert ranked == sorted(ids) and famous == sorted(ids)
    assert [(await store.get(cid)).state for cid in ids] == ["closed"] * len(ids)


async def test_end_now_closes_early_through_the_same_path(store):
    cid = await contest_with_entries(store, 600, minutes=600)
    closer = ContestCloser(store, RecordingPoster(), owner="bot", lease_s=LEASE)
    assert await closer.close_due(now=T0 + 60) == []
    assert await store.end_now(cid, now=T0 + 60) == "ending"
    assert (await store.get(cid)).ended_early
    assert await closer.close_due(now=T0 + 60) == [cid]
    assert await store.end_now(cid, now=T0 + 61) == "closed" and await store.end_now("nope") == "missing"


async def test_a_contest_without_entries_closes_without_a_winner(store):
    created = await store.create(validate_request("empty", 1), guild=1, channel=700, created_by=1, steps=50,
                                 width=64, height=64, now=T0)
    poster = RecordingPoster()
    assert await ContestCloser(store, poster, owner="bot", lease_s=LEASE).close_due(now=T0 + 60) == [created.contest_id]
    assert poster.rankings == [(created.contest_id, [])] and poster.halls == []
    assert (await store.get(created.contest_id)).step(STEP_HALL_OF_FAME) == "none"


async def test_the_schedule_survives_a_redis_restart(redis_server, redis_url):
    r = aioredis.from_url(redis_url)
    cid = await contest_with_entries(ContestStore(r), 800)
    await r.aclose()
    redis_server.restart()  # AOF: the schedule, entries and votes come back
    r = aioredis.from_url(redis_url)
    try:
        poster = RecordingPoster()
        assert await ContestCloser(ContestStore(r), poster, owner="bot", lease_s=LEASE).close_due(now=T0 + 600) == [cid]
        assert poster.rankings == [(cid, [2, 1])]
    finally:
        await r.aclose()


async def test_run_loop_closes_when_due_and_stops(store):
    import time

    created = await store.create(validate_request("soon", 1), guild=1, channel=900, created_by=1, steps=50,
                                 width=64, height=64, now=time.time() - 59.8)  # due in 0.2 s
    poster = RecordingPoster()
    stop = asyncio.Event()
    task = asyncio.create_task(ContestCloser(store, poster, owner="bot", lease_s=LEASE).run(stop, poll_s=5.0))
    for _ in range(100):
        if poster.rankings:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert poster.rankings == [(created.contest_id, [])]
