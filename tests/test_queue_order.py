"""Queue order on a real redis-server: arrival order, fair share between members, and the checks
the submit script takes in one step (per-user limit, cooldown, daily quota)."""
from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from jobs.client import arrival_stamp
from jobs.keys import FAST, IMAGINE
from jobs.queue import Queue
from jobs.quota import DailyQuota
from jobs.schemas import FindJob, ImagineJob


async def served_order(queue: Queue, lane: str, n: int) -> list[str]:
    """Take n jobs one at a time, as one serial worker would."""
    out = []
    for _ in range(n):
        (claim,) = await queue.take(lane, "w", 1, None)
        out.append(claim.job.id)
        await queue.finish(claim, _result(claim.job.id))
    return out


def _result(job_id):
    from jobs.schemas import Result
    return Result(job_id=job_id, seq=0, data={})


async def test_member_with_three_jobs_does_not_hold_up_the_others(queue):
    a = [FindJob(query=f"a{i}", user=1) for i in range(3)]
    b, c = FindJob(query="b", user=2), FindJob(query="c", user=3)
    reported = {}
    for job in [*a, b, c]:
        res = await queue.submit(job, user_limit=3)
        assert res.accepted
        reported[job.id] = res.position
    # as submitted: A1 first; B1 and C1 go ahead of A2 (a member's next job waits behind others' first)
    assert [reported[j.id] for j in (*a, b, c)] == [0, 1, 2, 1, 2]
    expected = [a[0].id, b.id, c.id, a[1].id, a[2].id]
    positions = [await queue.position(j) for j in expected]
    assert positions == [0, 1, 2, 3, 4]  # positions now tell the serving order
    assert [s.position for s in await queue.user_jobs(1)] == [0, 3, 4]
    assert await served_order(queue, FAST, 5) == expected


async def test_a_member_who_was_served_waits_behind_an_earlier_second_job(queue):
    a1, a2 = FindJob(query="a1", user=1), FindJob(query="a2", user=1)
    b1 = FindJob(query="b1", user=2)
    for job in (a1, a2, b1):
        assert (await queue.submit(job)).accepted
    assert await served_order(queue, FAST, 2) == [a1.id, b1.id]
    # B comes back with one job: B's turn this round is used, so it goes after A's waiting second job
    b2 = FindJob(query="b2", user=2)
    assert (await queue.submit(b2)).position == 1
    d1 = FindJob(query="d1", user=4)  # a member new this round goes ahead of both
    assert (await queue.submit(d1)).position == 0
    assert await served_order(queue, FAST, 3) == [d1.id, a2.id, b2.id]


async def test_order_is_arrival_stamp_not_submit_order(redis_url, fast_queue_params):
    # 30 members' commands arrive in stamp order, but their submits reach Redis shuffled and at once
    clients = [aioredis.from_url(redis_url) for _ in range(6)]
    queues = [Queue(c, **fast_queue_params) for c in clients]
    jobs = [ImagineJob(prompt=f"p{i}", user=100 + i) for i in range(30)]
    stamps = [arrival_stamp() for _ in jobs]
    calls = list(range(30))
    random.Random(5).shuffle(calls)
    results = await asyncio.gather(*[queues[k % 6].submit(jobs[i], arrival=stamps[i]) for k, i in enumerate(calls)])
    assert all(r.accepted for r in results)
    assert [await queues[0].position(j.id) for j in jobs] == list(range(30))
    assert await served_order(queues[0], IMAGINE, 30) == [j.id for j in jobs]
    for c in clients:
        await c.aclose()


async def test_cooldown_is_taken_with_the_limit(redis_url, fast_queue_params):
    clients = [aioredis.from_url(redis_url) for _ in range(5)]
    queues = [Queue(c, **fast_queue_params) for c in clients]
    jobs = [ImagineJob(prompt=f"p{i}", user=7, guild=9) for i in range(5)]
    results = await asyncio.gather(*[q.submit(j, user_limit=3, cooldown_s=30) for q, j in zip(queues, jobs)])
    accepted = [r for r in results if r.accepted]
    refused = [r for r in results if not r.accepted]
    assert len(accepted) == 1 and len(refused) == 4
    assert all(r.refusal == "cooldown" and r.reason.startswith("Slow down: you can start another job in")
               and 0 < r.cooldown_left_s <= 30 for r in refused)
    assert await queues[0].queue_length(IMAGINE) == 1
    # per server: the same member elsewhere is not cooling down; no cooldown asked, none checked
    assert (await queues[0].submit(ImagineJob(prompt="x", user=7, guild=10), cooldown_s=30)).accepted
    assert (await queues[0].submit(ImagineJob(prompt="y", user=7, guild=9))).accepted
    for c in clients:
        await c.aclose()


async def test_daily_quota_fifty_concurrent_submits_exactly_three(redis_url, fast_queue_params):
    clients = [aioredis.from_url(redis_url) for _ in range(10)]
    queues = [Queue(c, **fast_queue_params) for c in clients]
    jobs = [ImagineJob(prompt=f"p{i}", user=8, guild=5) for i in range(50)]
    results = await asyncio.gather(*[queues[i % 10].submit(j, user_limit=0, daily_quota=3)
                                     for i, j in enumerate(jobs)])
    accepted = {j.id for j, r in zip(jobs, results) if r.accepted}
    assert len(accepted) == 3
    assert all(r.refusal == "quota" for r in results if not r.accepted)
    q = queues[0]
    assert await DailyQuota(q.redis).used(5, 8) == 3
    # a refused submit leaves nothing behind: no job, no queue entry, no event, no quota count
    assert await q.queue_length(IMAGINE) == 3
    for j in jobs:
        assert (await q.redis.exists(q.keys.job(j.id)) == 1) == (j.id in accepted)
    assert await q.redis.xlen(q.keys.events) == 3
    # only generations count
    assert (await q.submit(FindJob(query="x", user=8, guild=5), user_limit=0, daily_quota=3)).accepted
    for c in clients:
        await c.aclose()


async def test_cancel_release_and_wake_up(queue):
    a, b = FindJob(query="a", user=1), FindJob(query="b", user=2)
    await queue.submit(a)
    await queue.submit(b)
    assert await queue.cancel(a.id)
    assert await queue.position(b.id) == 0 and await queue.queue_length(FAST) == 1
    (claim,) = await queue.take(FAST, "w", 1, None)
    c = FindJob(query="c", user=3)
    await queue.submit(c)
    assert await queue.release(claim, refund=True)  # given back: first again, where it was
    assert [await queue.position(j.id) for j in (b, c)] == [0, 1]
    assert await served_order(queue, FAST, 2) == [b.id, c.id]
    assert await queue.redis.llen(queue.keys.wake(FAST)) == 0  # nothing waits: no stale wake-ups left
    # an idle worker waiting on the lane gets a job submitted while it waits
    waiting = asyncio.create_task(queue.take(FAST, "w2", 1, block_ms=20_000))
    await asyncio.sleep(0.2)
    d = FindJob(query="d", user=4)
    await queue.submit(d)
    (got,) = await asyncio.wait_for(waiting, 20)
    assert got.job.id == d.id and (await queue.status(d.id)).state == "running"


async def test_a_worker_serves_members_round_robin(queue, inproc_worker):
    a = [FindJob(query=f"a{i}", user=1) for i in range(3)]
    b, c = FindJob(query="b", user=2), FindJob(query="c", user=3)
    for job in [*a, b, c]:
        assert (await queue.submit(job)).accepted
    told = {j.id: await queue.position(j.id) for j in (*a, b, c)}
    await inproc_worker()
    started = {}
    for job in (*a, b, c):
        events = [ev async for ev in queue.follow(job.id, timeout_s=20, block_ms=200)]
        assert events[-1].type == "result"
        started[job.id] = (await queue.status(job.id)).started  # when the worker claimed it
    served = sorted(started, key=started.get)
    assert served == [a[0].id, b.id, c.id, a[1].id, a[2].id]
    assert sorted(told, key=told.get) == served  # the positions members were told are the serving order
