"""jobs.remix: follow-up jobs (refine, similar, pick a frame) built from imagine Results of both shapes."""
import pytest

from jobs.remix import frame_key, pictures, refine_job, similar_job
from jobs.schemas import ImagineJob, Result, parse_job
from jobs.validation import JobError

SINGLE = Result(job_id="j1", seq=3, data={
    "prompt": "a red circle", "seed": 9, "steps": 50, "width": 64, "height": 48, "clip_score": 0.3,
    "frames": [{"step": 25, "blob": "frame_1"}, {"step": 50, "blob": "png"}]},
    blobs={"png": "k-png", "gif": "k-gif", "frame_1": "k-f1"})

GROUP = Result(job_id="j2", seq=5, data={
    "prompt": "a blue star", "seed": 4, "steps": 20, "width": 32, "height": 32, "count": 2, "grid": "grid",
    "frames": [{"step": 20, "blob": "png"}],
    "pictures": [
        {"index": 1, "seed": 4, "clip_score": 0.1, "loss": 1.0, "png": "png", "gif": "gif",
         "frames": [{"step": 20, "blob": "png"}]},
        {"index": 2, "seed": 5, "clip_score": 0.2, "loss": 1.0, "png": "png_2", "gif": "gif_2",
         "frames": [{"step": 10, "blob": "frame_1_2"}, {"step": 20, "blob": "png_2"}]}]},
    blobs={"png": "a", "gif": "b", "png_2": "c", "gif_2": "d", "frame_1_2": "e", "grid": "g"})


def test_pictures_of_both_result_shapes():
    assert pictures(SINGLE) == [{"index": 1, "seed": 9, "clip_score": 0.3, "png": "k-png",
                                 "frames": [{"step": 25, "key": "k-f1"}, {"step": 50, "key": "k-png"}]}]
    assert [(p["index"], p["seed"], p["png"]) for p in pictures(GROUP)] == [(1, 4, "a"), (2, 5, "c")]
    assert frame_key(GROUP, 2, 10) == "e" and frame_key(GROUP, 2) == "c"
    with pytest.raises(JobError, match="no frame at step 11 \\(kept: 10, 20\\)"):
        frame_key(GROUP, 2, 11)
    with pytest.raises(JobError, match="no picture 3; it made 2"):
        frame_key(GROUP, 3)


def test_refine_keeps_prompt_size_seed_and_records_lineage():
    job = refine_job(GROUP, 2, user=7, guild=1)
    assert (job.prompt, job.width, job.height, job.steps, job.seed) == ("a blue star", 32, 32, 20, 5)
    assert (job.init_image, job.parent, job.parent_index, job.user) == ("c", "j2", 2, 7)
    assert parse_job(job.model_dump_json()) == job  # the lineage survives the queue's JSON
    single = refine_job(SINGLE, steps=80, step=25)
    assert (single.steps, single.init_image, single.parent, single.parent_index) == (80, "k-f1", "j1", None)
    with pytest.raises(JobError, match="Only a generated picture"):
        refine_job(Result(job_id="x", seq=1, data={"hits": []}))


def test_similar_searches_with_the_pictures_blob():
    job = similar_job(GROUP, 2, top=3, guild=5)
    assert (job.image, job.query, job.top, job.guild) == ("c", None, 3, 5)


def test_refine_steps_setting(monkeypatch):
    from jobs.settings import load_settings

    assert load_settings().refine_steps is None
    monkeypatch.setenv("CLIPBOT_REFINE_STEPS", "150")
    steps = load_settings().refine_steps
    assert steps == 150 and refine_job(SINGLE, steps=steps).steps == 150
    assert isinstance(refine_job(SINGLE), ImagineJob)
