"""Real `python -m worker` processes (test-only fake engines) dying, stopping and outliving Redis."""
from __future__ import annotations

import asyncio
import signal
import time

import redis.asyncio as aioredis

from jobs.events import EventReader, decode_event
from jobs.keys import FAST
from jobs.queue import Queue
from jobs.schemas import FindJob, ImagineJob


async def wait_for(cond, timeout_s: float = 20.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await cond()
        if got:
            return got
        await asyncio.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


async def job_events(queue: Queue, job_id: str, timeout_s: float = 20.0):
    return [e async for e in queue.follow(job_id, timeout_s=timeout_s, block_ms=200)]


async def started_by(queue: Queue, job_id: str) -> str:
    async for ev in queue.follow(job_id, timeout_s=20, block_ms=200):
        if ev.type == "started":
            return ev.worker
    raise AssertionError("job ended before it started")


async def live_workers(queue, n):
    return await wait_for(lambda: _count(queue, n))


async def _count(queue, n):
    ws = await queue.workers()
    return ws if len(ws) >= n else None


async def test_sigkill_mid_job_another_worker_completes_once(queue, worker_procs, worker_env, redis_url, redis_client):
    a = worker_procs(redis_url, worker_env, "worker-a")
    await live_workers(queue, 1)
    job = FindJob(query="sleep:1.5", user=1)
    await queue.submit(job)
    assert await started_by(queue, job.id) == "worker-a"
    b = worker_procs(redis_url, worker_env, "worker-b")
    await live_workers(queue, 2)
    async for ev in queue.follow(job.id, timeout_s=10, block_ms=200):
        if ev.type == "progress":
            break
    a.send_signal(signal.SIGKILL)
    a.wait()
    events = await job_events(queue, job.id, timeout_s=30)
    assert events[-1].type == "result" and events[-1].data["pid"] == b.pid
    assert [(e.worker, e.attempt) for e in events if e.type == "started"] == [("worker-a", 1), ("worker-b", 2)]
    # the bot applies each (job, seq) once: exactly one Result
    applied = []

    async def apply(ev):
        applied.append(ev)

    reader = EventReader(redis_client)
    while batch := await reader.read(block_ms=100):
        for d in batch:
            if d.event.job_id == job.id:
                await reader.apply_once(d, apply)
            else:
                await reader.ack(d)
    assert sum(e.type == "result" for e in applied) == 1
    assert (await queue.status(job.id)).state == "done"
    assert (await queue.redis.xpending(queue.keys.stream(FAST), "workers"))["pending"] == 0


async def test_heartbeat_keeps_long_job_from_being_stolen(queue, worker_procs, worker_env, redis_url):
    # the job runs ~4 s, well past the 1.5 s visibility timeout, while a second worker waits
    a = worker_procs(redis_url, worker_env, "worker-a")
    await live_workers(queue, 1)
    job = FindJob(query="sleep:4", user=1)
    await queue.submit(job)
    assert await started_by(queue, job.id) == "worker-a"
    worker_procs(redis_url, worker_env, "worker-b")
    await live_workers(queue, 2)
    events = await job_events(queue, job.id, timeout_s=30)
    assert events[-1].type == "result" and events[-1].data["pid"] == a.pid
    assert [e.type for e in events].count("started") == 1
    assert (await queue.status(job.id)).attempts == 1


async def test_poison_entry_worker_process_keeps_serving(queue, worker_procs, worker_env, redis_url):
    p = worker_procs(redis_url, worker_env)
    await live_workers(queue, 1)
    await queue.ensure_groups()
    await queue.redis.xadd(queue.keys.stream(FAST), {"job": b"\xff\xfe not json"})
    await queue.redis.xadd(queue.keys.stream("imagine"), {"job": b'{"kind": "imagine", "prompt": ""}'})
    job = FindJob(query="fine", user=1)
    await queue.submit(job)
    events = await job_events(queue, job.id)
    assert events[-1].type == "result"
    await wait_for(lambda: _dead(queue, 2))
    assert p.poll() is None  # still alive


async def _dead(queue, n):
    d = await queue.dead_letters()
    return d if len(d) >= n else None


async def test_redis_restart_with_aof_loses_nothing(redis_server, worker_procs, worker_env, fast_queue_params):
    url = redis_server.url
    r = aioredis.from_url(url)
    q = Queue(r, **fast_queue_params)
    w = worker_procs(url, worker_env, "worker-a")
    await live_workers(q, 1)
    # long enough (3 s, 200 x 0.02 s) that the in-flight jobs are still running when Redis goes away
    fast = [FindJob(query="sleep:3", user=i) for i in range(3)]
    slow = [ImagineJob(prompt=f"p{i}", steps=200, user=10 + i) for i in range(2)]
    for j in fast + slow:
        assert (await q.submit(j)).accepted
    await started_by(q, fast[0].id)
    await started_by(q, slow[0].id)
    await started_by(q, slow[1].id)
    # in flight: one CLIP job and two generations; queued: two CLIP jobs
    assert [(await q.status(j.id)).state for j in fast + slow] == ["running", "queued", "queued", "running", "running"]
    await r.aclose()
    redis_server.restart()  # SIGTERM (AOF flushed), then the same port and data dir
    r = aioredis.from_url(url)
    q = Queue(r, **fast_queue_params)
    secs, micros = await r.time()  # the clock that stamps stream ids
    back_ms = secs * 1000 + micros // 1000

    async def all_final():
        sts = [await q.status(j.id) for j in fast + slow]
        return sts if all(s and s.state in ("done", "failed", "cancelled", "dead") for s in sts) else None

    statuses = await wait_for(all_final, timeout_s=60, every_s=0.2)
    assert [s.state for s in statuses] == ["done"] * 5
    assert [s.attempts for s in statuses] == [1] * 5  # the in-flight ones were not re-run
    # the same worker process crossed the outage: every result, the in-flight jobs' included, was
    # written to the restarted server (its stream id is later than the restart), none before it
    assert w.poll() is None
    results = {}
    for entry_id, fields in await r.xrange(q.keys.events):
        ev = decode_event(fields)
        if ev.type == "result":
            results.setdefault(ev.job_id, []).append(int(entry_id.split(b"-")[0]))
    assert sorted(results) == sorted(j.id for j in fast + slow)
    assert all(len(ms) == 1 and ms[0] >= back_ms for ms in results.values()), (back_ms, results)
    await r.aclose()


async def test_sigterm_finishes_short_job(queue, worker_procs, worker_env, redis_url):
    p = worker_procs(redis_url, worker_env, "worker-a")
    await live_workers(queue, 1)
    job = FindJob(query="sleep:0.6", user=1)
    await queue.submit(job)
    await started_by(queue, job.id)
    p.send_signal(signal.SIGTERM)
    events = await job_events(queue, job.id)
    assert events[-1].type == "result" and events[-1].data["pid"] == p.pid
    assert await asyncio.to_thread(p.wait, 15) == 0
    assert await queue.workers() == []  # unregistered on the way out


async def test_sigterm_releases_long_job_to_next_worker(queue, worker_procs, worker_env, redis_url):
    a = worker_procs(redis_url, worker_env, "worker-a")  # grace: 2 s
    await live_workers(queue, 1)
    job = FindJob(query="sleep:20", user=1)
    await queue.submit(job)
    await started_by(queue, job.id)
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(a.wait, 15) == 0
    assert time.monotonic() - t0 < 8
    st = await queue.status(job.id)
    assert st.state == "queued" and st.attempts == 0  # released, and the attempt not counted
    assert await queue.position(job.id) == 0
    b = worker_procs(redis_url, worker_env, "worker-b")
    assert await wait_for(lambda: _worker_of(queue, job.id)) == "worker-b"
    await queue.cancel(job.id)  # no need to wait 20 s: cancel it on b
    events = await job_events(queue, job.id)
    assert events[-1].type == "cancelled"
    assert b.poll() is None


async def _worker_of(queue, job_id):
    st = await queue.status(job_id)
    return st.worker if st and st.state == "running" else None
