"""The safety check with the shipped CLIP: a server that marks "a red star" unsafe.

The shipped model knows only colours and shapes, so "a red star" stands in for a real server's
labels: red stars must be flagged, blue squares (and other shapes) must not.
"""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import redis
import torch
from PIL import Image

from jobs.schemas import ClassifyJob, GalleryItem, ImagineJob, IndexJob, SafetyPolicy, safety_of
from jobs.settings import ImagineConfig
from tests.clip_support import SHIPPED_CLIP, shipped_clip_available
from tests.imagine_support import RecordingContext, _one_thread  # noqa: F401 (autouse: one torch thread)
from tests.test_clip_shipped import draw
from worker.api import JobError, Outcome
from worker.clip.handlers import ClipHandlers
from worker.clip.safety import NEUTRAL_LABELS, check, refuse_if_flagged
from worker.loop import WorkerSetup
from worker.runner import LocalRunner

pytestmark = pytest.mark.skipif(not shipped_clip_available(), reason="models/clip-shapes is not trained/committed yet")

RED_STAR = SafetyPolicy(labels=["a red star"], threshold=0.5)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shipped():
    from worker.clip.model import get_clip

    return get_clip(SHIPPED_CLIP)


@pytest.mark.parametrize("colour,shape,bg", [("red", "star", "grey"), ("red", "star", "white"), ("red", "star", "blue")])
def test_red_stars_are_flagged(shipped, colour, shape, bg, caplog):
    with caplog.at_level(logging.INFO, logger="worker.clip.safety"):
        v = check(shipped, draw(colour, shape, bg), RED_STAR, what="test upload")
    assert v.flagged and v.top_label == "a red star" and v.top_score >= 0.5, v
    assert set(v.scores) == {"a red star", *NEUTRAL_LABELS}
    assert sum(v.scores.values()) == pytest.approx(1.0, abs=1e-4)
    [rec] = [r for r in caplog.records if "test upload" in r.getMessage()]
    assert rec.levelno == logging.WARNING and "FLAGGED" in rec.getMessage() and "'a red star'" in rec.getMessage()


@pytest.mark.parametrize("colour,shape,bg", [("blue", "square", "white"), ("blue", "square", "grey"),
                                             ("red", "circle", "grey"), ("green", "triangle", "grey"),
                                             ("red", "square", "grey")])
def test_other_shapes_pass(shipped, colour, shape, bg, caplog):
    with caplog.at_level(logging.INFO, logger="worker.clip.safety"):
        v = check(shipped, draw(colour, shape, bg), RED_STAR, what="test upload")
    assert not v.flagged and v.top_score < 0.2, v
    assert any("test upload: ok" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_threshold_decides_and_tensors_score_like_pil(shipped):
    img = draw("red", "star", "grey")
    v = check(shipped, img, RED_STAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    vt = check(shipped, x[None], RED_STAR)
    assert vt.top_score == pytest.approx(v.top_score, abs=1e-4)
    strict = check(shipped, img, SafetyPolicy(labels=["a red star"], threshold=1.0))
    assert not strict.flagged and strict.top_score == pytest.approx(v.top_score, abs=1e-6)


def test_a_neutral_label_named_as_unsafe_is_scored_once_as_unsafe(shipped):
    v = check(shipped, draw("blue", "square", "white"), SafetyPolicy(labels=["A Drawing", "a red star"]))
    assert "A Drawing" in v.scores and "a drawing" not in v.scores
    assert len(v.scores) == len(NEUTRAL_LABELS) + 1


def test_refuse_if_flagged(shipped):
    assert refuse_if_flagged(shipped, draw("red", "star", "grey"), None) is None
    with pytest.raises(JobError, match="safety check.*'a red star'"):
        refuse_if_flagged(shipped, draw("red", "star", "grey"), RED_STAR)
    assert not refuse_if_flagged(shipped, draw("blue", "square", "grey"), RED_STAR).flagged


# ------------------------------------------------------------------ the CLIP engine's jobs

@pytest.fixture
def runner(shipped, redis_url):
    return LocalRunner(WorkerSetup(handlers=ClipHandlers(shipped, lambda: redis.Redis.from_url(redis_url)).as_dict()))


def test_classify_refuses_a_flagged_upload_and_reports_the_verdict_otherwise(runner):
    with pytest.raises(JobError, match="refused by this server's safety check"):
        runner.run(ClassifyJob(image=runner.put_blob(png(draw("red", "star", "grey"))), labels=["star", "square"],
                               safety=RED_STAR))
    out = runner.run(ClassifyJob(image=runner.put_blob(png(draw("blue", "square", "grey"))), labels=["star", "square"],
                                 safety=RED_STAR))
    assert safety_of(out.data) is not None and not safety_of(out.data).flagged
    plain = runner.run(ClassifyJob(image=runner.put_blob(png(draw("red", "star", "grey"))), labels=["star", "square"]))
    assert "safety" not in plain.data and safety_of(plain.data) is None


def test_gallery_rejects_flagged_images_and_indexes_the_rest(runner):
    items = [GalleryItem(item_id="m1:0", image=runner.put_blob(png(draw("red", "star", "white")))),
             GalleryItem(item_id="m2:0", image=runner.put_blob(png(draw("blue", "square", "white"))))]
    out = runner.run(IndexJob(guild=7, add=items, safety=RED_STAR))
    assert out.data["added"] == 1 and out.data["total"] == 1
    [rej] = out.data["rejected"]
    assert rej["item_id"] == "m1:0" and "safety check" in rej["reason"]
    # one image alone: the member is told why
    with pytest.raises(JobError, match="safety check"):
        runner.run(IndexJob(guild=7, add=[GalleryItem(item_id="m3:0", image=runner.put_blob(png(draw("red", "star", "grey"))))],
                            safety=RED_STAR))


# ------------------------------------------------------------------ the imagine engine, gated

@pytest.fixture(scope="module")
def gate(shipped):
    from worker.imagine.engine import ImagineEngine
    from worker.imagine.safety_gate import SafetyGate
    from worker.imagine.vqgan import load_vqgan

    root = SHIPPED_CLIP.parent / "vqgan-shapes"
    vqgan = load_vqgan(root / "model.yaml", root / "last.ckpt", "cpu")
    return SafetyGate(ImagineEngine(shipped, vqgan, ImagineConfig(cutouts=16, gif_frames=2, preview_every=0)), shipped)


def test_gate_refuses_a_flagged_init_image_before_the_engine_sees_it(gate):
    job = ImagineJob(prompt="a blue square", steps=5, init_image="init", safety=RED_STAR)
    with pytest.raises(JobError, match="safety check"):
        gate.add(job, RecordingContext(job, {"init": png(draw("red", "star", "grey"))}))
    assert gate.active == 0


def test_gate_marks_finished_generations(gate):
    """One batch: a red star and a blue square drawn from a grey canvas, both checked; a job
    without a policy is left as the engine made it."""
    jobs = [ImagineJob(prompt="a red star", seed=2, steps=15, safety=RED_STAR),
            ImagineJob(prompt="a blue square", seed=2, steps=15, safety=RED_STAR),
            ImagineJob(prompt="a red star", seed=3, steps=2)]
    for job in jobs:
        gate.add(job, RecordingContext(job))
    done: dict[str, Outcome] = {}
    while gate.active:
        gate.step()
        done.update((job.id, res) for job, res in gate.pop_finished())
    red, blue, unchecked = (done[j.id] for j in jobs)
    assert safety_of(red.data).flagged and safety_of(red.data).top_label == "a red star", red.data["safety"]
    assert not safety_of(blue.data).flagged, blue.data["safety"]
    assert "safety" not in unchecked.data


async def test_gate_in_the_queue_worker_fails_flagged_uploads_and_marks_results(queue, inproc_worker, gate):
    """Through the real worker loop and Redis: what the bot will read from the events stream."""
    from jobs.schemas import Failed, Result

    await inproc_worker(WorkerSetup(imagine_engine=gate))
    red = await queue.put_blob(png(draw("red", "star", "grey", size=64)))
    blue = await queue.put_blob(png(draw("blue", "square", "grey", size=64)))
    refused = ImagineJob(prompt="a red star", steps=2, init_image=red, init_weight=1.0, user=1, safety=RED_STAR)
    kept = ImagineJob(prompt="a blue square", steps=2, init_image=blue, init_weight=1.0, user=2, safety=RED_STAR)
    for job in (refused, kept):
        assert (await queue.submit(job)).accepted
    finals = {}
    for job in (refused, kept):
        async for ev in queue.follow(job.id, block_ms=200, timeout_s=120):
            finals[job.id] = ev
    assert isinstance(finals[refused.id], Failed) and "safety check" in finals[refused.id].reason
    res = finals[kept.id]
    assert isinstance(res, Result) and not safety_of(res.data).flagged and "png" in res.blobs
