"""Variations (count = k pictures of one prompt), pick-a-frame frames and refine lineage, with tiny real models."""
import io

import numpy as np
import pytest
from PIL import Image

from jobs.schemas import ImagineJob
from tests.imagine_support import RecordingContext, _one_thread, png_bytes, png_pixels, tiny_config, tiny_models  # noqa: F401
from worker.api import JobCancelled, JobError
from worker.imagine.engine import ImagineEngine
from worker.imagine.frames import fit_budget, frame_steps
from worker.imagine.variations import VariationsEngine, grid_image, imagine


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("variations"))


def engine(models, **cfg) -> VariationsEngine:
    return VariationsEngine(ImagineEngine(*models, tiny_config(**cfg)))


def run(models, job, ctx=None, **cfg):
    ctx = ctx or RecordingContext(job)
    return imagine(*models, job, ctx, tiny_config(**cfg)), ctx


def drive(eng) -> dict:
    results = {}
    while eng.active:
        eng.step()
        results.update({j.id: r for j, r in eng.pop_finished()})
    results.update({j.id: r for j, r in eng.pop_finished()})
    return results


def test_count_makes_k_pictures_equal_to_count_1_jobs_of_the_next_seeds(models):
    job = ImagineJob(prompt="a red circle", seed=40, steps=8, count=3)
    out, _ = run(models, job)
    d = out.data
    assert d["count"] == 3 and d["grid"] == "grid" and [p["index"] for p in d["pictures"]] == [1, 2, 3]
    assert [p["seed"] for p in d["pictures"]] == [40, 41, 42] and d["seed"] == 40
    assert [p["png"] for p in d["pictures"]] == ["png", "png_2", "png_3"]
    assert [p["gif"] for p in d["pictures"]] == ["gif", "gif_2", "gif_3"]
    pngs = [out.blobs[p["png"]] for p in d["pictures"]]
    assert len({png_pixels(p).tobytes() for p in pngs}) == 3  # three different pictures
    for i, p in enumerate(d["pictures"]):
        solo, _ = run(models, ImagineJob(prompt="a red circle", seed=40 + i, steps=8))
        # exact on a CPU: each picture is the very job a count=1 request with that seed runs
        assert out.blobs[p["png"]] == solo.blobs["png"]
        assert p["clip_score"] == solo.data["clip_score"] and p["loss"] == solo.data["loss"]
        assert Image.open(io.BytesIO(out.blobs[p["gif"]])).is_animated
    grid = Image.open(io.BytesIO(out.blobs["grid"]))
    assert grid.size == (3 * 32 + 2 * 4, 32)  # three 32 px pictures side by side, 4 px apart
    assert np.array_equal(np.asarray(grid.convert("RGB"))[:, 36:68], png_pixels(pngs[1]).astype(np.uint8))


def test_progress_is_one_event_per_step_with_a_grid_preview(models):
    job = ImagineJob(prompt="a blue star", seed=1, steps=8, count=4)
    eng = engine(models, preview_every=4)
    ctx = RecordingContext(job)
    eng.add(job, ctx)
    sizes = []
    while eng.active:
        eng.step()
        sizes.append(len(eng.engine._running))
    [(done, out)] = eng.pop_finished()
    assert done is job and max(sizes) == 4  # the four pictures ran as one batch
    assert [e[0] for e in ctx.events] == [4, 8]  # the engine reports at previews and the end: once each, not four times
    previews = [e for e in ctx.events if e[3] is not None]
    assert [e[0] for e in previews] == [4]
    grid = Image.open(io.BytesIO(previews[0][3]))
    assert grid.size == (2 * 128 + 4, 2 * 128 + 4)  # 2 x 2 previews of 128 px
    assert Image.open(io.BytesIO(out.blobs["grid"])).size == (2 * 32 + 4, 2 * 32 + 4)
    assert sorted(out.blobs) == sorted(
        ["grid", "png", "gif", "png_2", "gif_2", "png_3", "gif_3", "png_4", "gif_4"]
        + [f"frame_{j}{s}" for j in range(1, 8) for s in ("", "_2", "_3", "_4")])


def test_a_group_waits_for_room_and_runs_together_first_come_first_served(models):
    eng = engine(models, batch_size=4)
    first = ImagineJob(prompt="a red circle", seed=1, steps=6)
    group = ImagineJob(prompt="a green square", seed=2, steps=6, count=4)
    after = ImagineJob(prompt="a blue star", seed=3, steps=6)
    eng.add(first, RecordingContext(first))
    eng.add(group, RecordingContext(group))
    eng.add(after, RecordingContext(after))
    assert eng.active == 6 and eng.engine.active == 1  # the group and the job after it wait here
    batches, results = [], {}
    while eng.active:
        eng.step()
        batches.append(sorted(r.job.id for r in eng.engine._running))  # empty once a batch has finished
        results.update({j.id: r for j, r in eng.pop_finished()})
    batches = [b for b in batches if b]
    assert batches[0] == [first.id]
    group_batches = [b for b in batches if any(x.startswith(group.id) for x in b)]
    assert all(len(b) == 4 and all(x.startswith(group.id + "/") for x in b) for b in group_batches)
    assert batches[-1] == [after.id]  # never overtook the group
    assert all(not isinstance(r, BaseException) for r in results.values()) and len(results) == 3


def test_a_group_larger_than_the_batch_still_finishes(models):
    out, _ = run(models, ImagineJob(prompt="a red circle", seed=7, steps=4, count=3), batch_size=2)
    assert [p["seed"] for p in out.data["pictures"]] == [7, 8, 9]


def test_random_and_wrapping_seeds():
    from worker.imagine.variations import variation_seeds

    assert variation_seeds(2**63 - 2, 4) == [2**63 - 2, 2**63 - 1, 0, 1]


def test_bad_input_is_refused_at_add(models):
    eng = engine(models)
    with pytest.raises(JobError, match="sum to zero"):
        eng.add(ImagineJob(prompt="a:1 | b:-1", count=2), RecordingContext())
    with pytest.raises(JobError, match="too many"):
        eng.add(ImagineJob(prompt="a", steps=5000, count=2), RecordingContext())
    with pytest.raises(JobError, match="count: Input should be less than or equal to 4"):
        eng.add({"prompt": "a", "count": 5}, RecordingContext())
    with pytest.raises(JobError, match="count: Input should be greater than or equal to 1"):
        eng.add({"prompt": "a", "count": 0}, RecordingContext())
    job = ImagineJob(prompt="a", count=2, init_image="gone")
    with pytest.raises(JobError, match="init image cannot be used.*expired"):
        eng.add(job, RecordingContext(job))
    assert eng.active == 0 and eng.pop_finished() == []


def test_cancel_stops_every_picture_and_reports_once(models):
    eng = engine(models)
    job = ImagineJob(prompt="a red circle", seed=1, steps=50, count=3)
    ctx = RecordingContext(job, cancel_after_step=3)
    eng.add(job, ctx)
    results = drive(eng)
    assert list(results) == [job.id] and isinstance(results[job.id], JobCancelled)
    assert eng.engine.active == 0 and not eng._groups


def test_frames_are_listed_decodable_and_at_the_picture_size(models):
    out, _ = run(models, ImagineJob(prompt="a red circle", seed=2, steps=16, width=40, height=24), frames=8)
    frames = out.data["frames"]
    assert [f["step"] for f in frames] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert frames[-1]["blob"] == "png" and [f["blob"] for f in frames[:-1]] == [f"frame_{i}" for i in range(1, 8)]
    pixels = []
    for f in frames:
        img = Image.open(io.BytesIO(out.blobs[f["blob"]]))
        assert img.format == "PNG" and img.size == (40, 24)
        if f["blob"] != "png":
            assert img.text["step"] == str(f["step"]) and img.text["seed"] == "2"
        pixels.append(png_pixels(out.blobs[f["blob"]]))
    assert any(not np.array_equal(a, b) for a, b in zip(pixels, pixels[1:]))  # the picture changes over time
    # the frame after k steps is the final picture of the same job run for k steps
    short, _ = run(models, ImagineJob(prompt="a red circle", seed=2, steps=16, width=40, height=24), frames=8)
    assert short.blobs["frame_3"] == out.blobs["frame_3"]


def test_frames_fit_their_byte_budget():
    assert frame_steps(100, 8) == [12, 25, 38, 50, 62, 75, 88, 100]
    assert frame_steps(3, 8) == [1, 2, 3] and frame_steps(10, 0) == []
    listing = [{"step": s, "blob": f"frame_{i}"} for i, s in enumerate(range(10, 80, 10), 1)]
    listing.append({"step": 80, "blob": "png"})
    blobs = {e["blob"]: b"x" * 100 for e in listing[:-1]}
    kept, kept_blobs = fit_budget(listing, blobs, 350)
    assert [e["step"] for e in kept] == [20, 40, 60, 80] and sorted(kept_blobs) == ["frame_2", "frame_4", "frame_6"]
    kept, kept_blobs = fit_budget(listing, blobs, 0)
    assert kept == [{"step": 80, "blob": "png"}] and kept_blobs == {}


def test_frames_budget_is_shared_by_the_pictures_of_a_group(models):
    one, _ = run(models, ImagineJob(prompt="a red circle", seed=1, steps=8), frames=4)
    per_picture = sum(len(b) for n, b in one.blobs.items() if n.startswith("frame_"))
    out, _ = run(models, ImagineJob(prompt="a red circle", seed=1, steps=8, count=2), frames=4,
                 frames_max_bytes=2 * per_picture - 1)
    frame_bytes = sum(len(b) for n, b in out.blobs.items() if n.startswith("frame_"))
    assert 0 < frame_bytes <= 2 * per_picture - 1
    for p in out.data["pictures"]:
        assert p["frames"][-1] == {"step": 8, "blob": p["png"]}
        assert all(f["blob"] in out.blobs for f in p["frames"])


def test_refine_from_a_result_picture_records_its_lineage(models):
    parent, _ = run(models, ImagineJob(prompt="a red circle", seed=3, steps=6, count=2))
    picture = parent.data["pictures"][1]
    refine = ImagineJob(prompt="a red circle", seed=picture["seed"], steps=6, init_image="pic",
                        parent="parent-job-id", parent_index=2)
    again = ImagineJob.model_validate_json(refine.model_dump_json())
    assert (again.parent, again.parent_index, again.count) == ("parent-job-id", 2, 1)
    ctx = RecordingContext(refine, blobs={"pic": parent.blobs[picture["png"]]})
    out, _ = run(models, refine, ctx)
    assert out.data["parent"] == "parent-job-id" and out.data["parent_index"] == 2
    # it starts from that picture: another start picture (or none) gives another result
    other = RecordingContext(refine, blobs={"pic": parent.blobs["png"]})
    from_other, _ = run(models, refine, other)
    fresh, _ = run(models, refine.model_copy(update={"init_image": None}))
    finals = {png_pixels(r.blobs["png"]).tobytes() for r in (out, from_other, fresh)}
    assert len(finals) == 3
    with pytest.raises(JobError, match="init image cannot be used.*expired"):  # the parent's blob is gone
        run(models, refine, RecordingContext(refine))
    assert "parent" not in parent.data  # only a refine records one


def test_grid_layouts():
    red, blue = Image.new("RGB", (10, 6), "red"), Image.new("RGB", (10, 6), "blue")
    assert grid_image([red, blue]).size == (24, 6)
    g = grid_image([red, None, blue, red])
    assert g.size == (24, 16) and g.getpixel((14, 0)) == (32, 32, 32) and g.getpixel((0, 10)) == (0, 0, 255)


def test_old_imagine_jobs_still_parse():
    old = '{"kind": "imagine", "prompt": "a red circle", "seed": 3}'
    job = ImagineJob.model_validate_json(old)
    assert (job.count, job.parent, job.parent_index) == (1, None, None)
    assert png_bytes()  # the helper module's fixtures stay importable here


def test_a_failing_picture_fails_its_group_once(models):
    eng = engine(models, time_budget_s=1e-6, batch_size=2)
    group = ImagineJob(prompt="a red circle", seed=1, steps=5, count=3)
    eng.add(group, RecordingContext(group))
    results = drive(eng)
    assert list(results) == [group.id] and isinstance(results[group.id], JobError)
    assert "time budget" in str(results[group.id])
    assert eng.active == 0 and not eng._groups and not eng._pending
