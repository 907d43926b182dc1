"""Blobs are deleted once consumed, kept a bounded time when a button reuses them, counted exactly
against a byte budget that refuses new work before Redis is full (jobs/blobs.py)."""
from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from jobs.blobs import STORE_FULL
from jobs.queue import Queue
from jobs.schemas import ClassifyJob, FindJob, ImagineJob, Result
from tests import worker_fakes
from tests.bot_harness import harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL
from worker.api import JobCancelled, Outcome
from worker.loop import Worker
from worker.setup import WorkerSetup


async def _counted(q: Queue) -> tuple[int, int, int]:
    k = q.keys
    return (int(await q.redis.get(k.blob_bytes) or 0), await q.redis.hlen(k.blob_sizes),
            await q.redis.zcard(k.blob_expiry))


async def wait_until(pred, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_accounting_is_exact_through_puts_deletes_keeps_and_expiry(queue):
    a = await queue.put_blob(b"a" * 100)
    b = await queue.put_blob(b"b" * 200)
    c = await queue.put_blob(b"c" * 300, ttl=1)
    assert await queue.blob_bytes() == 600
    assert await queue.delete_blobs(a, "not-a-blob-name", None) == 100
    assert await queue.delete_blobs(a) == 0  # deleting twice frees once
    assert await queue.blob_bytes() == 500
    await queue.keep_blobs(b, keep_s=1)
    assert 0 < await queue.redis.ttl(queue.keys.blob(b)) <= 1
    await queue.keep_blobs(b, keep_s=1000)  # never lengthens
    assert await queue.redis.ttl(queue.keys.blob(b)) <= 1
    await wait_until(lambda: _gone(queue, b, c), 10, "blobs did not expire")
    assert await queue.blob_bytes() == 0  # expired blobs are swept from the total
    assert await _counted(queue) == (0, 0, 0)


async def _gone(q, *names):
    return all([await q.get_blob(n) is None for n in names])


async def test_budget_refuses_new_work_with_a_clear_message_until_space_is_freed(redis_client):
    q = Queue(redis_client, blob_budget_bytes=1000)
    key = await q.put_blob(b"x" * 1000)
    res = await q.submit(FindJob(query="a red star", user=1))
    assert not res.accepted and res.reason == STORE_FULL
    await q.delete_blobs(key)
    assert (await q.submit(FindJob(query="a red star", user=1))).accepted


async def test_a_job_ending_releases_its_inputs(queue, inproc_worker):
    await inproc_worker()
    upload = await queue.put_blob(png_bytes())
    job = ClassifyJob(image=upload, labels=["red", "blue"], user=1)
    assert (await queue.submit(job)).accepted
    events = [e async for e in queue.follow(job.id, timeout_s=20, block_ms=200)]
    assert isinstance(events[-1], Result)
    # a classify upload serves that one job: deleted right after the final event
    await wait_until(lambda: _gone(queue, upload), 10, "the upload outlived its job")
    assert await queue.get_blob(events[-1].blobs["echo"]) is not None  # the result is its reader's to delete
    init = await queue.put_blob(png_bytes())
    imagine = ImagineJob(prompt="a red circle", init_image=init, user=2)
    assert (await queue.submit(imagine)).accepted
    [e async for e in queue.follow(imagine.id, timeout_s=20, block_ms=200)]
    # Re-roll reuses an init image: kept, at most result_keep_s (the worker's setting)
    await wait_until(lambda: _ttl_at_most(queue, init, queue.result_keep_s), 10, "the init image was not capped")


async def _ttl_at_most(q, name, seconds) -> bool:
    return 0 < await q.redis.ttl(q.keys.blob(name)) <= seconds


# ----------------------------------------------------------------------------- a long run through the bot

PREVIEW, PICTURE, FRAME = png_bytes((32, 32), (9, 9, 9)), png_bytes((64, 64), (10, 200, 10)), png_bytes((64, 64), (1, 2, 3))
GIF = b"GIF89a" + bytes(range(256)) * 200  # the largest part of a result, as with real timelapses
STEPS, CAPACITY = 6, 3


class PreviewingEngine(worker_fakes.FakeBatchEngine):
    """The fake batch engine, with a preview at every step and a result shaped like the real one
    (picture, GIF, a pick-a-frame frame listed in data.frames)."""

    def __init__(self):
        super().__init__(capacity=CAPACITY, step_s=0.01)
        self.results: dict[str, Outcome] = {}

    def step(self) -> None:
        time.sleep(self.step_s)
        for jid, rec in list(self.jobs.items()):
            job, ctx, done, total = rec
            if ctx.cancelled():
                self.finished.append((job, JobCancelled()))
                del self.jobs[jid]
                continue
            rec[2] = done = done + 1
            ctx.progress(done, total, preview_png=PREVIEW)
            if done >= total:
                self.finished.append((job, Outcome(
                    data={"prompt": job.prompt, "seed": job.seed, "steps": total, "width": 64, "height": 64,
                          "frames": [{"step": total // 2, "blob": "frame_1"}, {"step": total, "blob": "png"}]},
                    blobs={"png": PICTURE, "gif": GIF, "frame_1": FRAME})))
                del self.jobs[jid]


async def _result_of(q: Queue, job_id: str) -> Result:
    async for ev in q.follow(job_id, timeout_s=30, block_ms=200):
        if isinstance(ev, Result):
            return ev
    raise AssertionError(f"{job_id} ended without a result")


async def test_twenty_generations_keep_blob_bytes_bounded_and_what_buttons_need(harness):
    jobs_total, keep_s = 20, 600
    worker_queue = Queue(aioredis.from_url(harness.redis_url), result_keep_s=keep_s)
    engine = PreviewingEngine()
    setup = WorkerSetup(handlers={"index": worker_fakes.index}, imagine_engine=engine, models=["fake"], device="cpu")
    worker = Worker(worker_queue, setup, heartbeat_s=0.3, progress_interval_s=0.0, block_ms=100)
    worker_task = asyncio.create_task(worker.run())
    await harness.start_bot(result_keep_s=keep_s)
    fake, q = harness.fake, harness.queue
    users = [fake.user(f"member{i}") for i in range(CAPACITY)]
    peak, sampling = 0, True

    async def sample():
        nonlocal peak
        while sampling:
            peak = max(peak, await q.blob_bytes())
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    results: list[Result] = []
    try:
        for wave in range(0, jobs_total, CAPACITY):  # a wave at a time: at most CAPACITY results in flight
            n = min(CAPACITY, jobs_total - wave)
            for i in range(n):
                await fake.slash("imagine", users[i], prompt=f"a red circle {wave + i}", steps=STEPS)
            await wait_until(lambda wave=wave, n=n: _submitted(q, wave + n), 30, "jobs were not queued")
            ids = await _job_ids(q, wave, n)
            for job_id in ids:
                result = await _result_of(q, job_id)
                results.append(result)
                # posted and released by the bot: its GIF is deleted only after posting
                await wait_until(lambda r=result: _gone(q, r.blobs["gif"]), 30, "the GIF was never deleted")
    finally:
        sampling = False
        await sampler
        worker.request_stop()
        worker.request_stop()
        await asyncio.wait_for(worker_task, 10)
        await worker_queue.redis.aclose()

    assert len({r.job_id for r in results}) == jobs_total
    kept = len(PICTURE) + len(FRAME)  # what Refine and pick-a-frame need, per generation
    # nothing a button needs is gone; everything else (GIF, previews) is
    for r in results:
        for name in ("png", "frame_1"):
            assert await q.get_blob(r.blobs[name]) is not None
            assert 0 < await q.redis.ttl(q.keys.blob(r.blobs[name])) <= keep_s
    assert await q.blob_bytes() == jobs_total * kept
    assert await q.redis.hlen(q.keys.blob_sizes) == 2 * jobs_total  # no preview left behind
    # in flight at once: the kept pictures of every earlier generation, plus for each of the wave's
    # CAPACITY jobs its whole result and at most two previews (a new one is stored before the old goes)
    bound = jobs_total * kept + CAPACITY * (len(PICTURE) + len(GIF) + len(FRAME) + 2 * len(PREVIEW))
    print(f"blob bytes: peak {peak}, bound {bound}, end {jobs_total * kept}")
    assert peak <= bound, (peak, bound)
    # without deleting, the store would hold every GIF and every preview: the bound is well below that
    assert bound < jobs_total * (len(PICTURE) + len(GIF) + len(FRAME) + STEPS * len(PREVIEW))


async def _submitted(q: Queue, n: int) -> bool:
    return len(await _job_ids(q, 0, n)) >= n


async def _job_ids(q: Queue, first: int, n: int) -> list[str]:
    """The imagine jobs submitted (by creation time) from the `first`-th on."""
    jobs = []
    for key in await q.redis.keys(q.keys.job("*")):
        raw = await q.redis.hmget(key, ["id", "kind", "created"])
        if raw[1] == b"imagine":
            jobs.append((float(raw[2]), raw[0].decode()))
    return [job_id for _, job_id in sorted(jobs)[first:first + n]]


async def test_a_full_store_refuses_imagine_privately_before_any_upload(harness):
    bot = await harness.start_bot()
    bot.queue.blob_budget_bytes = 1000
    await harness.queue.put_blob(b"x" * 1000)
    fake = harness.fake
    inter = await fake.slash("imagine", fake.user("ann"), prompt="a red circle")
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["content"] == STORE_FULL and cb.json["data"]["flags"] & EPHEMERAL
    assert len(await harness.queue.redis.keys(harness.queue.keys.job("*"))) == 0


async def test_cancelling_a_queued_job_releases_its_upload(queue):
    upload = await queue.put_blob(png_bytes())
    job = ClassifyJob(image=upload, labels=["red", "blue"], user=1)
    assert (await queue.submit(job)).accepted
    assert await queue.cancel(job.id, by=1)
    assert await queue.get_blob(upload) is None and await queue.blob_bytes() == 0


async def test_reroll_whose_start_image_is_gone_is_refused_clearly(harness):
    from tests.bot_harness import ScriptedWorker

    worker = ScriptedWorker(harness.queue, steps=2).start()
    try:
        await harness.start_bot()
        fake = harness.fake
        ann = fake.user("ann")
        att = fake.upload(png_bytes(), "start.png", "image/png", 64, 64)
        await fake.slash("imagine", ann, prompt="a red circle", init_image=att)
        job = await wait_until(lambda: _first_imagine(worker), 30, "the job never ran")
        msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(fake.channel_id, via="channel")
                                                if any(c.get("custom_id", "").startswith("clipbot:reroll:")
                                                       for row in m.get("components", [])
                                                       for c in row.get("components", []))), None), timeout=30)
        assert await harness.queue.blobs_exist(job.init_image)
        await harness.queue.delete_blobs(job.init_image)  # as after CLIPBOT_RESULT_KEEP_S
        inter = await fake.click(msg, f"clipbot:reroll:{job.id}", ann)
        cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
        assert "no longer stored" in cb.json["data"]["content"] and cb.json["data"]["flags"] & EPHEMERAL
        assert len(await _job_ids(harness.queue, 0, 10)) == 1  # refused before anything was queued
    finally:
        await worker.stop()


async def _first_imagine(worker):
    return next((j for j in worker.seen if j.kind == "imagine"), None)
