"""EventDispatcher on a real Redis, without Discord: each job's events reach the renderer of its
kind in order, failures are settled, and every event is acked."""
from __future__ import annotations

import asyncio

import pytest

from bot.dispatcher import EventDispatcher, Renderer
from bot.jobstore import JobRecord, JobStore, record_for
from jobs.events import EventReader
from jobs.keys import FAST
from jobs.schemas import ClassifyJob, Event, FindJob, Progress, Result


class RecordingRenderer(Renderer):
    def __init__(self, fail_on: str | None = None):
        self.fail_on = fail_on
        self.seen: list[tuple[str, str]] = []
        self.forgotten: list[str] = []
        self.closed = False

    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        self.seen.append((job_id, event.type))
        if event.type == self.fail_on:
            raise RuntimeError("renderer bug")

    async def forget(self, job_id: str) -> None:
        self.forgotten.append(job_id)

    async def close(self) -> None:
        self.closed = True


async def run_job(queue, job) -> None:
    """What a worker does: take the job (which publishes `started`), report progress, finish it."""
    await queue.submit(job)
    (taken,) = await queue.take(FAST, "test-worker", count=1, block_ms=None)
    await queue.publish(taken, Progress(job_id=job.id, seq=0, step=1, total=2))
    await queue.finish(taken, Result(job_id=job.id, seq=0, data={}))


async def wait_until(predicate, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_each_kind_goes_to_its_renderer_in_order_and_every_event_is_acked(queue):
    records = JobStore(queue.redis, "test:", 3600)
    reader = EventReader(queue.redis, group="bot", consumer="test-bot")
    ready = asyncio.Event()
    ready.set()
    dispatcher = EventDispatcher(reader, records, ready.wait)
    classify = RecordingRenderer(fail_on="progress")  # a failing event must not stop the job's later events
    dispatcher.register("classify", classify)
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register("classify", RecordingRenderer())
    dispatcher.start()
    try:
        ours = ClassifyJob(image=await queue.put_blob(b"pixels"), labels=["a", "b"], user=1)
        unrendered = FindJob(query="no renderer for find", user=2)
        foreign = FindJob(query="no record: queued by the CLI", user=3)
        for job in (ours, unrendered):
            await records.put(record_for(job, job.kind), job.id)
        for job in (ours, unrendered, foreign):
            await run_job(queue, job)

        async def settled() -> bool:
            pending = await queue.redis.xpending(reader.events_key, "bot")
            return ("result" in [kind for _, kind in classify.seen] and pending["pending"] == 0
                    and ours.id in classify.forgotten)

        await wait_until(settled)
    finally:
        await dispatcher.stop()
    assert classify.seen == [(ours.id, "queued"), (ours.id, "started"), (ours.id, "progress"), (ours.id, "result")]
    assert classify.closed


async def test_a_kind_can_be_registered_again_after_unregister(queue):
    dispatcher = EventDispatcher(EventReader(queue.redis), JobStore(queue.redis, "test:", 60), asyncio.sleep)
    dispatcher.register("imagine", RecordingRenderer())
    dispatcher.unregister("imagine")
    dispatcher.register("imagine", RecordingRenderer())
