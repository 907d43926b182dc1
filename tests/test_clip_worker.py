"""The CLIP handlers inside the real queue worker (worker.loop.Worker) on a real redis-server:
jobs submitted through the transport, events followed on the events stream."""
from __future__ import annotations

import io
import math

import numpy as np
import redis
from PIL import Image

from jobs.schemas import ClassifyJob, Failed, FindJob, GalleryItem, IndexJob, Result
from tests.clip_support import tiny_clip
from worker.clip.handlers import ClipHandlers
from worker.setup import WorkerSetup


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


async def run(queue, job):
    res = await queue.submit(job)
    assert res.accepted, res.reason
    async for ev in queue.follow(job.id, after=res.event_id or "0-0", timeout_s=60):
        if isinstance(ev, (Result, Failed)):
            return ev


async def test_clip_jobs_through_the_queue_worker(queue, inproc_worker, redis_url):
    handlers = ClipHandlers(tiny_clip(), lambda: redis.Redis.from_url(redis_url), prefix=queue.keys.prefix)
    await inproc_worker(WorkerSetup(handlers=handlers.as_dict()))

    ev = await run(queue, ClassifyJob(user=1, image=await queue.put_blob(png(1)), labels=["red circle", "blue square"]))
    assert isinstance(ev, Result)
    assert math.isclose(sum(x["score"] for x in ev.data["labels"]), 1, abs_tol=1e-9)

    ev = await run(queue, ClassifyJob(user=1, image=await queue.put_blob(b"GIF89a\x01\x00"), labels=["a", "b"]))
    assert isinstance(ev, Failed) and "GIF image is corrupt or truncated" in ev.reason

    items = [GalleryItem(item_id=f"m{i}:0", image=await queue.put_blob(png(i)), caption=f"c{i}") for i in range(4)]
    ev = await run(queue, IndexJob(user=1, guild=5, add=items))
    assert isinstance(ev, Result) and ev.data["added"] == 4
    ev = await run(queue, FindJob(user=1, guild=5, image=await queue.put_blob(png(2)), top=2))
    assert isinstance(ev, Result) and ev.data["hits"][0]["item_id"] == "m2:0"
    # the gallery lives under the deployment's prefix
    assert redis.Redis.from_url(redis_url).exists(f"{queue.keys.prefix}gallery:{tiny_clip().fingerprint}:5:emb")
