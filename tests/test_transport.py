"""The transport's guarantees against a real redis-server, with an in-process worker."""
from __future__ import annotations

import asyncio

import pytest

from jobs.client import BlobTooLarge
from jobs.events import EventReader
from jobs.keys import FAST
from jobs.queue import Queue
from jobs.schemas import ClassifyJob, FindJob, ImagineJob


async def final_event(queue: Queue, job_id: str, timeout_s: float = 10.0):
    events = [e async for e in queue.follow(job_id, timeout_s=timeout_s, block_ms=200)]
    return events[-1], events


async def test_submit_worker_events_end_to_end(queue, inproc_worker):
    img = await queue.put_blob(b"pixels")
    job = ClassifyJob(image=img, labels=["red circle", "blue square"], user=1)
    res = await queue.submit(job)
    assert res.accepted and res.position == 0 and res.reason is None
    await inproc_worker()
    final, events = await final_event(queue, job.id)
    assert [e.type for e in events] == ["queued", "started", "progress", "result"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert final.data["labels"][0]["label"] == "red circle"
    assert await queue.get_blob(final.blobs["echo"]) == b"pixels"
    st = await queue.status(job.id)
    assert st.state == "done" and st.attempts == 1
    assert await queue.user_jobs(1) == []
    # the stream entry was acked and removed: nothing pending for anyone
    assert (await queue.redis.xpending(queue.keys.stream(FAST), "workers"))["pending"] == 0


async def test_job_error_fails_without_retry(queue, inproc_worker):
    job = FindJob(query="error", user=2)
    await queue.submit(job)
    await inproc_worker()
    final, events = await final_event(queue, job.id)
    assert final.type == "failed" and final.reason == "bad query: try another"
    assert [e.type for e in events].count("started") == 1


async def test_crashing_job_retried_then_dead_lettered(queue, inproc_worker):
    job = FindJob(query="boom", user=3)
    await queue.submit(job)
    await inproc_worker()
    final, events = await final_event(queue, job.id)
    assert final.type == "failed" and final.dead_lettered
    assert "failed 3 times" in final.reason and "RuntimeError: engine bug" in final.reason
    assert [e.type for e in events].count("started") == 3  # max_deliveries = 3
    dead = await queue.dead_letters()
    assert any(d.get("job") == job.id and "max deliveries" in d["reason"] for d in dead)
    assert (await queue.status(job.id)).state == "dead"


async def test_poison_entries_dead_lettered_worker_keeps_serving(queue, inproc_worker):
    stream = queue.keys.stream(FAST)
    await queue.ensure_groups()
    await queue.redis.xadd(stream, {"job": b"{not json"})
    await queue.redis.xadd(stream, {"job": b'{"kind": "classify", "labels": ["only one"]}'})
    await queue.redis.xadd(stream, {"something": b"else"})
    await queue.redis.xadd(stream, {"job": FindJob(query="x").model_dump_json()})  # never submitted
    await inproc_worker()
    job = FindJob(query="after poison", user=4)
    await queue.submit(job)
    final, _ = await final_event(queue, job.id)
    assert final.type == "result" and final.data["query"] == "after poison"
    reasons = [d["reason"] for d in await queue.dead_letters()]
    assert len(reasons) == 4
    assert sum(r.startswith("malformed job") for r in reasons) == 3
    assert any("unknown job" in r for r in reasons)
    assert (await queue.redis.xpending(stream, "workers"))["pending"] == 0


async def test_cancel_queued_job_never_runs(queue):
    job = FindJob(query="x", user=5)
    await queue.submit(job)
    moderator = 1_234_567_890_123_456_789  # a real Discord snowflake is above 2**53
    assert await queue.cancel(job.id, by=moderator) is True
    final, _ = await final_event(queue, job.id)
    assert final.type == "cancelled" and final.by == moderator
    assert (await queue.status(job.id)).state == "cancelled"
    assert await queue.take(FAST, "w", 10, None) == []  # the entry is gone
    assert await queue.cancel(job.id) is False  # already over
    assert await queue.cancel("no-such-job") is False


async def test_cancel_running_job_stops_between_steps(queue, inproc_worker):
    job = FindJob(query="sleep:30", user=6)
    await queue.submit(job)
    await inproc_worker()
    async for ev in queue.follow(job.id, timeout_s=10, block_ms=200):
        if ev.type == "progress":
            break
    t0 = asyncio.get_running_loop().time()
    assert await queue.cancel(job.id, by=6)
    final, _ = await final_event(queue, job.id)
    assert final.type == "cancelled" and final.by == 6
    assert asyncio.get_running_loop().time() - t0 < 3  # cooperative but fast
    assert (await queue.status(job.id)).state == "cancelled"


async def test_cancel_running_batched_job(queue, inproc_worker):
    keep = ImagineJob(prompt="keep", steps=40, user=7)
    stop = ImagineJob(prompt="stop", steps=400, user=7)
    await queue.submit(keep)
    await queue.submit(stop)
    await inproc_worker()
    async for ev in queue.follow(stop.id, timeout_s=10, block_ms=200):
        if ev.type == "progress":
            break
    assert await queue.cancel(stop.id, by=7)
    final_stop, _ = await final_event(queue, stop.id)
    final_keep, _ = await final_event(queue, keep.id)
    assert final_stop.type == "cancelled"
    assert final_keep.type == "result" and final_keep.data["steps"] == 40


async def test_fifty_concurrent_submits_limit_three(redis_url, fast_queue_params):
    import redis.asyncio as aioredis

    # separate connections, so the submits really race inside Redis
    clients = [aioredis.from_url(redis_url) for _ in range(10)]
    queues = [Queue(c, **fast_queue_params) for c in clients]
    jobs = [FindJob(query=f"q{i}", user=42) for i in range(50)]
    results = await asyncio.gather(*[queues[i % 10].submit(j) for i, j in enumerate(jobs)])
    accepted = [r for r in results if r.accepted]
    refused = [r for r in results if not r.accepted]
    assert len(accepted) == 3 and len(refused) == 47
    assert all("limit 3" in r.reason for r in refused)
    assert sorted(r.position for r in accepted) == [0, 1, 2]
    assert len(await queues[0].user_jobs(42)) == 3
    # another user is not affected; a finished job frees a slot
    assert (await queues[0].submit(FindJob(query="other", user=43))).accepted
    first = [j for j, r in zip(jobs, results) if r.accepted][0]
    assert await queues[0].cancel(first.id)
    assert (await queues[0].submit(FindJob(query="again", user=42))).accepted
    assert not (await queues[0].submit(FindJob(query="over", user=42))).accepted
    for c in clients:
        await c.aclose()


async def test_positions_and_duplicates(queue):
    jobs = [FindJob(query=f"q{i}", user=i) for i in range(3)]
    for j in jobs:
        await queue.submit(j)
    gen = ImagineJob(prompt="p", user=9)
    assert (await queue.submit(gen)).position == 0  # its own lane: not behind CLIP jobs
    assert [await queue.position(j.id) for j in jobs] == [0, 1, 2]
    assert await queue.cancel(jobs[0].id)
    assert await queue.position(jobs[2].id) == 1
    dup = await queue.submit(jobs[1])
    assert not dup.accepted and "already submitted" in dup.reason
    (d,) = await queue.take(FAST, "w", 1, None)
    assert d.job.id == jobs[1].id and await queue.position(jobs[1].id) is None
    assert await queue.position(jobs[2].id) == 0


async def test_blobs_ttl_cap_and_key_check(queue):
    q = Queue(queue.redis, blob_max_bytes=1024)
    key = await q.put_blob(b"x" * 1024, ttl=1)
    assert await q.get_blob(key) == b"x" * 1024
    assert 0 < await q.redis.ttl(q.keys.blob(key)) <= 1
    with pytest.raises(BlobTooLarge):
        await q.put_blob(b"x" * 1025)
    await q.redis.set(q.keys.job("secret"), b"no")
    assert await q.get_blob("../job:secret") is None  # keys are validated, never arbitrary
    await asyncio.sleep(1.2)
    assert await q.get_blob(key) is None


async def test_worker_registry(queue, inproc_worker):
    w = await inproc_worker(worker_id="reg-test", heartbeat_s=0.2)
    for _ in range(50):
        live = await queue.workers()
        if live:
            break
        await asyncio.sleep(0.05)
    (info,) = live
    assert info.id == "reg-test" and info.models == ["fake"] and set(info.lanes) == {"fast", "imagine"}
    job = FindJob(query="sleep:1", user=1)
    await queue.submit(job)
    for _ in range(60):
        if any(job.id in i.current for i in await queue.workers()):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("registry never showed the current job")
    w.request_stop()
    w.request_stop()
    for _ in range(100):
        if not await queue.workers():
            break
        await asyncio.sleep(0.05)
    assert await queue.workers() == []


async def test_batch_engine_takes_new_jobs_while_running(queue, inproc_worker):
    from tests.worker_fakes import FakeBatchEngine, build

    setup = build(None)
    engine: FakeBatchEngine = setup.imagine_engine
    first = ImagineJob(prompt="first", steps=60, user=1)
    await queue.submit(first)
    await inproc_worker(setup)
    async for ev in queue.follow(first.id, timeout_s=10, block_ms=200):
        if ev.type == "progress":
            break
    later = [ImagineJob(prompt=f"later {i}", steps=5, user=2 + i) for i in range(2)]
    for j in later:
        await queue.submit(j)
    finals = [(await final_event(queue, j.id))[0] for j in later]
    assert all(f.type == "result" for f in finals)
    assert (await queue.status(first.id)).state == "running"  # the later ones finished inside its run
    assert engine.max_active == 3
    final_first, events = await final_event(queue, first.id)
    assert final_first.type == "result"
    steps = [e.step for e in events if e.type == "progress"]
    assert steps == sorted(steps) and steps[-1] == 60
    bad = ImagineJob(prompt="invalid", user=9)
    await queue.submit(bad)
    f, _ = await final_event(queue, bad.id)
    assert f.type == "failed" and f.reason == "that prompt is not allowed"


async def test_bot_consumer_down_then_back_none_twice(queue, inproc_worker, redis_client):
    jobs = [FindJob(query=f"q{i}", user=i) for i in range(5)]
    for j in jobs:
        assert (await queue.submit(j)).accepted
    await inproc_worker()
    for j in jobs:  # all finish while no bot reads
        await final_event(queue, j.id)
    applied: list[tuple[str, int]] = []

    async def apply(ev):
        applied.append((ev.job_id, ev.seq))

    # the bot comes back, applies some events, dies before acking a few of them
    reader = EventReader(redis_client, consumer="bot-1")
    batch = await reader.read(count=7, block_ms=100)
    assert len(batch) == 7
    for d in batch[:4]:
        await reader.apply_once(d, apply)
    for d in batch[4:]:  # applied and recorded, but the ack never happened
        await apply(d.event)
        await reader.mark_applied(d.event)
    # restarted bot (same consumer name): gets its pending entries again, then the rest
    reader2 = EventReader(redis_client, consumer="bot-1")
    while True:
        got = await reader2.read(count=3, block_ms=100)
        if not got:
            break
        for d in got:
            await reader2.apply_once(d, apply)
    assert len(applied) == len(set(applied))
    all_events = []
    for j in jobs:
        all_events += [e async for e in queue.follow(j.id, timeout_s=5, block_ms=100)]
    assert sorted(applied) == sorted((e.job_id, e.seq) for e in all_events)
    assert sum(1 for e in all_events if e.type == "result") == 5
    pending = await redis_client.xpending(queue.keys.events, "bot")
    assert pending["pending"] == 0


async def test_reclaim_after_visibility_timeout_then_dead_letter(redis_client):
    from jobs.schemas import Result

    q = Queue(redis_client, visibility_timeout_s=0.05, max_deliveries=3)
    job = FindJob(query="x", user=1)
    await q.submit(job)
    (first,) = await q.take(FAST, "dies-1", 1, None)
    assert await q.reclaim(FAST, "w2", 5) == []  # not idle long enough yet
    await asyncio.sleep(0.1)
    (second,) = await q.reclaim(FAST, "dies-2", 5)
    assert (second.attempt, second.job.id) == (2, job.id)
    # the first worker, back from the dead, can no longer speak for the job
    assert await q.finish(first, Result(job_id=job.id, seq=0, data={})) is None
    assert (await q.heartbeat("dies-1", [first]))[job.id][0] is False
    await asyncio.sleep(0.1)
    (third,) = await q.reclaim(FAST, "dies-3", 5)
    assert third.attempt == 3
    await asyncio.sleep(0.1)
    assert await q.reclaim(FAST, "w4", 5) == []  # fourth delivery: dead-lettered instead
    final, events = await final_event(q, job.id)
    assert final.type == "failed" and final.dead_lettered and "failed 3 times" in final.reason
    assert [e.type for e in events] == ["queued", "started", "started", "started", "failed"]
    assert (await q.status(job.id)).state == "dead"
    assert await q.user_jobs(1) == []
    assert (await q.redis.xpending(q.keys.stream(FAST), "workers"))["pending"] == 0


async def test_prune_consumers_keeps_those_holding_jobs(queue):
    from jobs.schemas import Result

    for i in range(2):
        await queue.submit(FindJob(query=f"q{i}", user=i))
    (held,) = await queue.take(FAST, "alive", 1, None)
    (done,) = await queue.take(FAST, "gone", 1, None)
    assert await queue.finish(done, Result(job_id=done.job.id, seq=0, data={}))  # holds nothing now
    assert await queue.prune_consumers(FAST, min_idle_s=60) == []  # "gone" was active just now
    assert await queue.prune_consumers(FAST, min_idle_s=0) == ["gone"]
    names = [c["name"] for c in await queue.redis.xinfo_consumers(queue.keys.stream(FAST), "workers")]
    assert names == [b"alive"] and held.job.query == "q0"
