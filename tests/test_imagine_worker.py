"""The imagine engine inside the real queue worker, on a real Redis: batching, results, failures."""
import asyncio
import io

import pytest
from PIL import Image

from jobs.schemas import Cancelled, Failed, ImagineJob, Progress, Result
from tests.imagine_support import _one_thread, tiny_config, tiny_models  # noqa: F401
from worker.imagine.engine import ImagineEngine
from worker.setup import WorkerSetup


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("imagine-worker"))


async def _final(queue, job_id, timeout=120):
    events = []
    async for ev in queue.follow(job_id, block_ms=200, timeout_s=timeout):
        events.append(ev)
    return events


async def test_jobs_batch_in_the_worker_and_publish_results(queue, inproc_worker, models):
    engine = ImagineEngine(*models, tiny_config(steps=10, preview_every=2))
    batch_sizes = []
    step = engine.step

    def recording_step():
        step()
        batch_sizes.append(len(engine._running))

    engine.step = recording_step
    await inproc_worker(WorkerSetup(imagine_engine=engine))
    good = [ImagineJob(prompt="a red circle", seed=1, user=1), ImagineJob(prompt="a blue star:2", seed=2, user=2)]
    bad = ImagineJob(prompt="a:1 | b:-1", user=3)
    doomed = ImagineJob(prompt="a green square", seed=3, steps=200, user=4)
    for job in (*good, bad, doomed):
        await queue.submit(job)
    followers = {j.id: asyncio.create_task(_final(queue, j.id)) for j in (*good, bad, doomed)}
    for _ in range(600):  # cancel the long job once it runs
        st = await queue.status(doomed.id)
        if st is not None and st.state == "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await queue.cancel(doomed.id, by=4)
    results = {jid: await asyncio.wait_for(t, 120) for jid, t in followers.items()}

    assert max(batch_sizes) >= 2  # the jobs really ran together
    for job in good:
        events = results[job.id]
        final = events[-1]
        assert isinstance(final, Result), final
        assert final.data["seed"] == job.seed and final.data["prompt"] == job.prompt
        assert any(isinstance(e, Progress) and e.preview for e in events)
        png = await queue.get_blob(final.blobs["png"])
        assert Image.open(io.BytesIO(png)).text["seed"] == str(job.seed)
        assert Image.open(io.BytesIO(await queue.get_blob(final.blobs["gif"]))).is_animated
    failed = results[bad.id][-1]
    assert isinstance(failed, Failed) and "sum to zero" in failed.reason
    assert isinstance(results[doomed.id][-1], Cancelled)


async def test_variations_and_frames_through_the_queue_worker(queue, inproc_worker, models):
    from worker.imagine.variations import VariationsEngine

    engine = VariationsEngine(ImagineEngine(*models, tiny_config(steps=8, preview_every=4, frames=4)))
    await inproc_worker(WorkerSetup(imagine_engine=engine))
    job = ImagineJob(prompt="a red circle", seed=5, count=2, user=1)
    expired = ImagineJob(prompt="a red circle", count=2, init_image="f" * 32, user=2, parent="p" * 32, parent_index=1)
    for j in (job, expired):
        await queue.submit(j)
    events = await _final(queue, job.id)
    final = events[-1]
    assert isinstance(final, Result), final
    assert final.data["count"] == 2 and [p["seed"] for p in final.data["pictures"]] == [5, 6]
    previews = [e for e in events if isinstance(e, Progress) and e.preview]
    assert previews and Image.open(io.BytesIO(await queue.get_blob(previews[0].preview))).size == (2 * 128 + 4, 128)
    grid = Image.open(io.BytesIO(await queue.get_blob(final.blobs[final.data["grid"]])))
    assert grid.size == (2 * 32 + 4, 32)
    for p in final.data["pictures"]:
        png = Image.open(io.BytesIO(await queue.get_blob(final.blobs[p["png"]])))
        assert png.text["seed"] == str(p["seed"])
        assert [f["step"] for f in p["frames"]] == [2, 4, 6, 8]
        for f in p["frames"]:
            assert Image.open(io.BytesIO(await queue.get_blob(final.blobs[f["blob"]]))).size == (32, 32)
    failed = (await _final(queue, expired.id))[-1]
    assert isinstance(failed, Failed) and "init image cannot be used" in failed.reason and "expired" in failed.reason
