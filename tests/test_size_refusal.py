"""A picture size no live imagine worker admits is refused before it is queued: workers publish
their limit in the registry (config budget lowered by the GPU memory planner), the bot compares."""
from __future__ import annotations

from bot.capacity import check_size, size_refusal
from jobs.registry import WorkerInfo
from tests import worker_fakes
from tests.bot_harness import harness  # noqa: F401
from tests.test_bot_refusals import assert_nothing_queued, refusal
from tests.test_worker_death import wait_for
from worker.imagine.memory import GIB, MemoryPlanner

MiB = 1024 * 1024


def info(wid: str, max_pixels: int, lanes=("fast", "imagine")) -> WorkerInfo:
    return WorkerInfo(id=wid, host="h", pid=1, lanes=list(lanes), max_pixels=max_pixels)


def test_planner_max_pixels_agrees_with_its_refusal():
    p = MemoryPlanner(10 * GIB, 0.5, allocated=lambda: 1 * GIB)  # 5 GiB usable, 1 GiB held
    assert p.max_pixels() is None  # nothing known: no limit beyond the configured budget
    p.record(1, 256 * 256, 1 * GIB)  # 1 GiB per 256x256 job: 4 GiB free -> about 4x the pixels
    limit = p.max_pixels()
    assert limit == 4 * 256 * 256
    assert p.refusal(512, 512) is None  # exactly at the limit
    assert p.refusal(512, 520) is not None
    p.out_of_memory(1, 300 * 300)  # a 300x300 job did not fit alone: the learnt bound wins
    assert p.max_pixels() == 300 * 300 - 1
    assert p.refusal(300, 300) is not None and p.refusal(256, 256) is None


def test_size_refusal_over_registry_entries():
    workers = [info("a", 256 * 256), info("b", 512 * 512), info("clip-only", 64 * 64, lanes=("fast",))]
    assert size_refusal(workers, 512, 512) is None  # b admits it
    msg = size_refusal(workers, 600, 600)
    assert msg == "The workers online can paint at most 512x512 pixels (262,144 in all); ask for a smaller size."
    assert size_refusal(workers, 0, 0) is None  # the workers' default size
    assert size_refusal([info("a", 256 * 256), info("old", 0)], 600, 600) is None  # one declares no limit
    assert size_refusal([info("clip-only", 64 * 64, lanes=("fast",))], 600, 600) is None  # no imagine worker: it waits


async def test_check_size_reads_live_registry(queue):
    await queue.register_worker(info("small", 128 * 128), ttl_s=30)
    await queue.register_worker(info("big", 256 * 256), ttl_s=30)
    assert await check_size(queue, 256, 256) is None
    assert "at most 256x256" in await check_size(queue, 300, 300)
    await queue.unregister_worker("big")  # only the small one left online
    assert "at most 128x128" in await check_size(queue, 256, 256)


async def test_worker_publishes_its_engine_limit(queue, inproc_worker):
    setup = worker_fakes.build(None)
    setup.imagine_engine.max_pixels = 96 * 96
    await inproc_worker(setup, worker_id="w-limit")
    ws = await wait_for(lambda: queue.workers())
    assert [(w.id, w.max_pixels) for w in ws] == [("w-limit", 96 * 96)]
    assert "at most 96x96" in await check_size(queue, 128, 128)


async def test_imagine_too_large_for_every_worker_is_refused(harness):
    await harness.start_bot()
    await harness.queue.register_worker(info("gpu-1", 256 * 256), ttl_s=60)
    fake = harness.fake
    inter = await fake.slash("imagine", fake.user("ann"), prompt="a red circle", size="512x512")
    assert "The workers online can paint at most 256x256 pixels" in await refusal(harness, inter)
    await assert_nothing_queued(harness)
