"""The VQGAN+CLIP engine with tiny real models: loss, determinism, batching, cancellation, bounds."""
import io
import math

import pytest
import torch
from PIL import Image

from jobs.schemas import ImagePrompt, ImagineJob
from tests.imagine_support import (  # noqa: F401
    RecordingContext,
    _one_thread,
    png_bytes,
    png_pixels,
    psnr,
    tiny_config,
    tiny_models,
)
from worker.api import JobCancelled, JobError
from worker.imagine import media
from worker.imagine.engine import ImagineEngine, imagine
from worker.imagine.media import encode_gif


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("imagine"))


def run_solo(models, job, **cfg):
    ctx = RecordingContext(job)
    return imagine(*models, job, ctx, tiny_config(**cfg)), ctx


def test_loss_falls_and_progress_is_reported(models):
    job = ImagineJob(prompt="a red circle | a blue star:0.5", seed=3, steps=40)
    # A step's loss is measured on that step's random cutouts. With the default strong jitter the
    # tiny random models' loss moves less than its noise in 40 steps; mild jitter shows the trend.
    out, ctx = run_solo(models, job, preview_every=1, rotate_degrees=10.0, scale_jitter=0.1, translate=0.05)
    losses = [e[2] for e in ctx.events]
    assert len(losses) == 40 and [e[0] for e in ctx.events] == list(range(1, 41))
    assert sum(losses[:5]) / 5 > sum(losses[-10:]) / 10 + 0.01, losses
    assert ctx.events[-1][3] is None  # the final picture comes with the result
    preview = Image.open(io.BytesIO(ctx.events[0][3]))
    assert preview.format == "PNG" and preview.size == (128, 128)  # 32 px enlarged 4x
    assert out.data["loss"] == pytest.approx(losses[-1], abs=1e-4)


def test_outcome_png_gif_and_data(models):
    job = ImagineJob(prompt="portrait: oil | a blue star:-0.5", seed=11, steps=9, width=40, height=24)
    out, ctx = run_solo(models, job)
    assert {e[0] for e in ctx.events if e[3] is not None} == {4, 8}  # previews every 4 steps
    assert ctx.events[-1][:2] == (9, 9)
    d = out.data
    assert d["prompt"] == job.prompt and d["seed"] == 11 and d["steps"] == 9
    assert (d["width"], d["height"]) == (40, 24) and d["seconds"] > 0 and d["model"] == "vqgan+clip"
    assert -1 <= d["clip_score"] <= 1
    png = Image.open(io.BytesIO(out.blobs["png"]))
    assert png.size == (40, 24)
    assert png.text["prompt"] == job.prompt and png.text["seed"] == "11" and png.text["steps"] == "9"
    assert png.text["model"] == "vqgan+clip"
    gif = Image.open(io.BytesIO(out.blobs["gif"]))
    assert gif.format == "GIF" and gif.is_animated and gif.n_frames >= 3 and gif.info["loop"] == 0
    assert gif.size == (240, 144)  # enlarged 6x (nearest) to about gif_size
    gif.seek(gif.n_frames - 1)  # the last frame is the final picture
    assert psnr(out.blobs["png"], _gif_frame_png(gif, png.size)) > 25


def _gif_frame_png(gif, size):
    buf = io.BytesIO()
    gif.convert("RGB").resize(size, Image.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def test_same_seed_gives_bit_identical_png_and_absent_seed_is_reported(models):
    a, _ = run_solo(models, ImagineJob(prompt="a green square", seed=5, steps=6))
    b, _ = run_solo(models, ImagineJob(prompt="a green square", seed=5, steps=6))
    c, _ = run_solo(models, ImagineJob(prompt="a green square", seed=6, steps=6))
    assert a.blobs["png"] == b.blobs["png"]
    assert png_pixels(a.blobs["png"]).tobytes() != png_pixels(c.blobs["png"]).tobytes()
    r, _ = run_solo(models, ImagineJob(prompt="a green square", steps=6))
    assert isinstance(r.data["seed"], int) and 0 <= r.data["seed"] < 2**63
    again, _ = run_solo(models, ImagineJob(prompt="a green square", steps=6, seed=r.data["seed"]))
    assert again.blobs["png"] == r.blobs["png"]


def _drive(engine, schedule):
    """Step the engine; schedule maps a step index to jobs to add before it. Returns {job id: result}."""
    results, i = {}, 0
    while engine.active or any(k >= i for k in schedule):
        for job, ctx in schedule.get(i, []):
            engine.add(job, ctx)
        engine.step()
        results.update({j.id: r for j, r in engine.pop_finished()})
        i += 1
    return results


def test_batched_jobs_match_solo_runs_joining_and_leaving(models):
    jobs = [
        ImagineJob(prompt="a red circle", seed=1, steps=14),
        ImagineJob(prompt="a blue star:2 | a yellow square:-0.5", seed=2, steps=8),  # joins, leaves early
        ImagineJob(prompt="a purple triangle on a grey background", seed=3, steps=10),  # joins mid-way
        ImagineJob(prompt="a red circle", seed=4, steps=5, init_image="init", init_weight=1.0,
                   image_prompts=[ImagePrompt(image="ip", weight=0.5)]),
    ]
    blobs = {"init": png_bytes((250, 10, 10)), "ip": png_bytes((10, 10, 250), (20, 50))}
    solo = {j.id: run_solo(models, j)[0] for j in (jobs[0], jobs[1], jobs[2])}
    solo[jobs[3].id] = imagine(*models, jobs[3], RecordingContext(jobs[3], blobs), tiny_config())
    engine = ImagineEngine(*models, tiny_config(batch_size=3))
    ctxs = [RecordingContext(j, blobs) for j in jobs]
    sizes = []
    orig_step = engine.step

    def step():
        orig_step()
        sizes.append(len(engine._running))

    engine.step = step
    results = _drive(engine, {0: [(jobs[0], ctxs[0])], 2: [(jobs[1], ctxs[1])], 5: [(jobs[2], ctxs[2])],
                              10: [(jobs[3], ctxs[3])]})
    assert max(sizes) == 3  # really batched
    for j in jobs:
        out = results[j.id]
        assert not isinstance(out, BaseException), out
        assert out.data["seed"] == j.seed and out.data["steps"] == j.steps
        assert psnr(out.blobs["png"], solo[j.id].blobs["png"]) >= 40, j.prompt
        assert out.data["clip_score"] == pytest.approx(solo[j.id].data["clip_score"], abs=1e-3)
    pngs = {results[j.id].blobs["png"] for j in jobs}
    assert len(pngs) == 4


def test_jobs_of_another_size_wait_for_the_batch_to_drain(models):
    a = ImagineJob(prompt="a red circle", seed=1, steps=6)
    b = ImagineJob(prompt="a blue star", seed=2, steps=4, width=48, height=32)
    c = ImagineJob(prompt="a green star", seed=3, steps=3)  # same size as a, but came after b
    engine = ImagineEngine(*models, tiny_config())
    for j in (a, b, c):
        engine.add(j, RecordingContext(j))
    engine.step()
    assert engine.size == (32, 32) and len(engine._running) == 1  # b blocks c: first come, first served
    order = []
    while engine.active:
        engine.step()
        order += [j.id for j, _ in engine.pop_finished()]
        if b.id in order and engine._running:
            assert engine.size == (32, 32)
    assert order == [a.id, b.id, c.id]
    assert psnr(imagine(*models, b, RecordingContext(b), tiny_config()).blobs["png"],
                imagine(*models, b, RecordingContext(b), tiny_config()).blobs["png"]) == math.inf


def test_cancellation_between_steps_leaves_other_jobs_running(models):
    a = ImagineJob(prompt="a red circle", seed=1, steps=10)
    b = ImagineJob(prompt="a blue star", seed=2, steps=10)
    waiting = ImagineJob(prompt="a star", seed=2, steps=10, width=48)
    engine = ImagineEngine(*models, tiny_config(preview_every=1))
    ca, cb, cw = RecordingContext(a, cancel_after_step=3), RecordingContext(b), RecordingContext(waiting)
    for j, c in ((a, ca), (b, cb), (waiting, cw)):
        engine.add(j, c)
    results = {}
    for _ in range(4):
        engine.step()
        results.update({j.id: r for j, r in engine.pop_finished()})
    assert isinstance(results.get(a.id), JobCancelled)
    assert max(e[0] for e in ca.events) == 3
    cw.cancel_flag.set()  # cancelled while waiting for its turn
    engine.step()
    results.update({j.id: r for j, r in engine.pop_finished()})
    assert isinstance(results.get(waiting.id), JobCancelled)
    while engine.active:
        engine.step()
        results.update({j.id: r for j, r in engine.pop_finished()})
    assert not isinstance(results[b.id], BaseException) and results[b.id].data["steps"] == 10
    with pytest.raises(JobCancelled):
        imagine(*models, a, RecordingContext(a, cancel_after_step=2), tiny_config(preview_every=1))


def test_time_budget_fails_cleanly(models):
    job = ImagineJob(prompt="a red circle", seed=1, steps=200)
    with pytest.raises(JobError, match=r"Stopped after \d+ of 200 steps: .* time budget of 0.3 s"):
        imagine(*models, job, RecordingContext(job), tiny_config(time_budget_s=0.3))


@pytest.mark.parametrize("fields, cfg, message", [
    (dict(prompt="a | "), {}, "Prompt 2 of 2 is empty"),
    (dict(prompt="a:1 | b:-1"), {}, "sum to zero"),
    (dict(prompt="a:nan"), {}, "finite"),
    (dict(prompt="a", width=128, height=64), {}, r"128x64 is 8,192 pixels; this worker's limit is 4,096 \(e.g. 64x64\)"),
    (dict(prompt="a", width=4, height=32), {}, "too small: each side must be at least 8"),
    (dict(prompt="a", steps=201), {}, "201 steps is too many: the limit is 200"),
    (dict(prompt="a", init_image="missing"), {}, "init image cannot be used: .*expired"),
    (dict(prompt="a", init_image="text"), {}, "init image cannot be used: .*not a supported image"),
    (dict(prompt="a", image_prompts=[dict(image="red", weight=float("inf"))]), {},
     "image_prompts.0.weight: an image prompt's weight must be a number between -100 and 100, not inf"),
    (dict(prompt="a", image_prompts=[dict(image="red", weight=-101)]), {}, "between -100 and 100, not -101"),
    (dict(prompt="a:1", image_prompts=[ImagePrompt(image="red", weight=-1)]), {}, "sum to zero"),
    (dict(prompt="x" * 301), {}, "Invalid imagine request: prompt: .* at most 300 characters"),
])
def test_every_bound_is_enforced_with_a_clear_message(models, fields, cfg, message):
    engine = ImagineEngine(*models, tiny_config(**cfg))
    blobs = {"text": b"hello, this is not an image", "red": png_bytes()}
    raw = "x" * 301 == fields["prompt"] or any(isinstance(p, dict) for p in fields.get("image_prompts", []))
    job = fields if raw else ImagineJob(**fields)
    with pytest.raises(JobError, match=message):
        engine.add(job, RecordingContext(None, blobs))
    assert engine.active == 0


def test_sizes_round_to_the_vqgan_factor(models):
    engine = ImagineEngine(*models, tiny_config())
    assert engine.resolve_size(33, 47) == (34, 48)
    assert engine.resolve_size(0, 0) == (32, 32)  # the configured default
    assert engine.resolve_steps(0) == 12


def test_gif_is_kept_under_the_cap():
    frames = [torch.rand(3, 64, 64).mul(255).byte().permute(1, 2, 0).numpy() for _ in range(40)]
    free = encode_gif(frames, max_bytes=10 * 1024 * 1024)
    assert Image.open(io.BytesIO(free)).n_frames == 40
    capped = encode_gif(frames, max_bytes=len(free) // 5)
    gif = Image.open(io.BytesIO(capped))
    assert len(capped) <= len(free) // 5 and gif.is_animated and 2 <= gif.n_frames < 40
    small = encode_gif(frames[:8], max_bytes=20_000)
    assert len(small) <= 20_000 and Image.open(io.BytesIO(small)).size[0] < 64


def test_canvas_start_and_its_weight(models):
    """The picture starts as the plain canvas (one frame of the timelapse per step here) and
    canvas_weight holds the latent near it; with no canvas the start is random codes per seed."""
    clip, vqgan = models
    job = ImagineJob(prompt="a red circle", seed=4, steps=30)

    def latent_after(**cfg):
        engine = ImagineEngine(clip, vqgan, tiny_config(**cfg))
        engine.add(job, RecordingContext(job))
        run = engine._waiting[0]
        start = run.z.detach().clone()
        while engine.active:
            engine.step()
        return start, run.z.detach(), engine.pop_finished()[0][1]

    plain = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32).contiguous()
    start, free_end, free = latent_after(canvas="#ff8000", canvas_weight=0.0, gif_frames=31)
    assert torch.equal(start, vqgan.encode(plain))  # the encoded orange canvas
    first = Image.open(io.BytesIO(free.blobs["gif"]))
    assert first.n_frames == 31  # the first frame is the start picture: orange-ish, decoded canvas
    with torch.no_grad():
        decoded = ImagineEngine(clip, vqgan, tiny_config()).synth(vqgan.encode(plain))[0]
    buf = io.BytesIO()
    Image.fromarray(media.to_uint8(decoded)).save(buf, "PNG")
    assert psnr(_gif_frame_png(first, (32, 32)), buf.getvalue()) > 25
    _, held_end, _ = latent_after(canvas="#ff8000", canvas_weight=1e4)
    moved_free, moved_held = (free_end - start).pow(2).mean(), (held_end - start).pow(2).mean()
    assert moved_free > 0 and moved_held < 0.5 * moved_free, (moved_held, moved_free)
    a, _, _ = latent_after(canvas="")
    job = ImagineJob(prompt="a red circle", seed=5, steps=30)
    b, _, _ = latent_after(canvas="")
    assert not torch.equal(a, b) and not torch.equal(a, start)  # random codes, per seed


def test_a_named_background_is_the_start_canvas(models):
    """"... on a blue background" starts from a blue canvas instead of the configured grey; with
    canvas_from_prompt off, or with random codes configured (canvas empty), the prompt changes nothing."""
    clip, vqgan = models

    def start(prompt, **cfg):
        engine = ImagineEngine(clip, vqgan, tiny_config(**cfg))
        engine.add(ImagineJob(prompt=prompt, seed=3, steps=2), RecordingContext())
        return engine._waiting[0].z.detach()

    def plain(rgb):
        return vqgan.encode(torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 32, 32).contiguous())

    blue, grey = plain([0.0, 0.0, 1.0]), plain([128 / 255] * 3)
    assert torch.equal(start("a red circle on a blue background"), blue)
    assert torch.equal(start("a red circle | a cat on a blue background:-0.5"), grey)  # negative prompts name nothing
    assert torch.equal(start("a red circle on a blue background", canvas_from_prompt=False), grey)
    assert torch.equal(start("a red circle on a bleu background"), grey)  # not a colour name
    assert not torch.equal(start("a red circle on a blue background", canvas=""), blue)


def test_decoder_only_checkpoint_starts_from_random_codes(models, tmp_path, caplog):
    """Generation needs only the decoder: without the encoder the canvas gives way to random codes."""
    from worker.imagine.vqgan import load_vqgan

    clip, vqgan = models
    state = torch.load(vqgan.checkpoint_path, weights_only=True)["state_dict"]
    decoder_only = {k: v for k, v in state.items() if not k.startswith(("encoder.", "quant_conv."))}
    torch.save({"state_dict": decoder_only}, tmp_path / "dec.ckpt")
    dec = load_vqgan(vqgan.config_path, tmp_path / "dec.ckpt", "cpu")
    assert vqgan.has_encoder and not dec.has_encoder
    job = ImagineJob(prompt="a red circle", seed=4, steps=3)
    with caplog.at_level("WARNING"):
        out = imagine(clip, dec, job, RecordingContext(job), tiny_config(canvas="grey"))
    assert out.blobs["png"] and "has no encoder" in caplog.text
    full = imagine(clip, vqgan, job, RecordingContext(job), tiny_config(canvas="grey"))
    assert psnr(out.blobs["png"], full.blobs["png"]) < 40  # a different start than the grey canvas
