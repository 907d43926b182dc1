"""imagine: VQGAN+CLIP on this CPU with the shipped models (or random ones of their architecture).

* seconds per step of one job at the default size and cutouts;
* jobs per hour with K = 1, 2, 4, 8 jobs batched in the engine, against the same K jobs run one
  after another (batch of one), measured end to end (prompt embedding, steps, PNG and GIF);
* the engine's single-job step against bench/reference_imagine.py (the plain loop), timed
  interleaved so load drift hits both alike, and their output quality after the same steps
  (final loss and CLIP score, averaged over seeds);
* real size (CLIP ViT-B/32, VQGAN f16_16384, random weights): bench/gpu_imagine.py in a
  subprocess (its own memory high-water mark) on this CPU, a one-step smoke run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench.common import median
from bench.models import ROOT, shapes_models, tiny_models
from jobs.schemas import ImagineJob
from worker.api import QuietContext
from worker.imagine.engine import ImagineConfig, ImagineEngine, _center_crop

PROMPTS = ["a red circle", "a blue star on a yellow background", "a green square | a white triangle:0.5",
           "a purple star", "an orange circle on a black background", "a yellow triangle",
           "a white square on a grey background", "a black star on a white background"]


def jobs(n: int, steps: int) -> list[ImagineJob]:
    return [ImagineJob(prompt=PROMPTS[i % len(PROMPTS)], seed=1000 + i, steps=steps) for i in range(n)]


def run_engine(clip, vqgan, cfg: ImagineConfig, batch: list[ImagineJob]) -> tuple[float, list]:
    """Run the jobs together in one engine (capacity len(batch)); seconds and outcomes."""
    cfg = ImagineConfig(**{**cfg.__dict__, "batch_size": len(batch)})
    t = time.perf_counter()
    engine = ImagineEngine(clip, vqgan, cfg)
    for job in batch:
        engine.add(job, QuietContext())
    results = []
    while engine.active:
        engine.step()
        results += engine.pop_finished()
    seconds = time.perf_counter() - t
    for _, r in results:
        if isinstance(r, BaseException):
            raise r
    return seconds, results


def throughput(clip, vqgan, cfg: ImagineConfig, ks: list[int], steps: int) -> dict:
    """Jobs per hour batched (K at once) vs the same K jobs one after another. For each K the two
    runs are adjacent (sequential, then batched), so a change in machine load hits both alike."""
    out: dict[str, float] = {}
    all_jobs = jobs(max(ks), steps)
    run_engine(clip, vqgan, cfg, all_jobs[:1])  # warm-up (allocator, oneDNN kernels)
    for k in ks:
        seq_s = sum(run_engine(clip, vqgan, cfg, [job])[0] for job in all_jobs[:k])
        batched_s, _ = run_engine(clip, vqgan, cfg, all_jobs[:k])
        out[f"k{k}_batched_jobs_per_hour"] = round(3600 * k / batched_s, 1)
        out[f"k{k}_sequential_jobs_per_hour"] = round(3600 * k / seq_s, 1)
        out[f"k{k}_speedup"] = round(seq_s / batched_s, 3)
        out[f"k{k}_batched_s_per_step"] = round(batched_s / steps, 4)
    out["throughput_steps_per_job"] = steps
    return out


@torch.no_grad()
def clip_score(clip, image: torch.Tensor, prompt: str) -> float:
    """What the engine reports: CLIP similarity of the centre square to the prompt."""
    from jobs.validation.prompts import parse_prompts

    s = clip.image_size
    square = _center_crop(image, min(image.shape[-2:]))
    emb = clip.embed_pixels(F.interpolate(square, size=(s, s), mode="bilinear", antialias=True)).float()[0]
    prompts = [p for p in parse_prompts(prompt) if p.weight > 0]
    t = clip.embed_texts([p.text for p in prompts]).float()
    w = torch.tensor([p.weight for p in prompts])
    return float(((t @ emb) * w).sum() / w.sum())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def versus_reference(clip, vqgan, cfg: ImagineConfig, timed_steps: int, quality_steps: int,
                     seeds: list[int]) -> dict:
    from bench.reference_imagine import ReferenceImagine

    prompt = "a red circle on a blue background"
    # speed: one engine job and one reference job, stepped alternately
    engine = ImagineEngine(clip, vqgan, ImagineConfig(**{**cfg.__dict__, "batch_size": 1}))
    engine.add(ImagineJob(prompt=prompt, seed=seeds[0], steps=timed_steps + 2), QuietContext())
    ref = ReferenceImagine(clip, vqgan, prompt, seeds[0], cfg.width, cfg.height, cfg)
    engine.step()
    ref.step()  # warm-up
    te, tr = [], []
    for _ in range(timed_steps):
        t = time.perf_counter()
        engine.step()
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref.step()
        tr.append(time.perf_counter() - t)
    out = {"engine_s_per_step": round(median(te), 4), "reference_s_per_step": round(median(tr), 4),
           "engine_vs_reference_speedup": round(median(tr) / median(te), 3)}
    # quality: the same prompt, seeds and steps through both
    e_loss, r_loss, e_score, r_score = [], [], [], []
    for seed in seeds:
        _, [(_, outcome)] = run_engine(clip, vqgan, cfg, [ImagineJob(prompt=prompt, seed=seed, steps=quality_steps)])
        e_loss.append(outcome.data["loss"])
        e_score.append(outcome.data["clip_score"])
        ref = ReferenceImagine(clip, vqgan, prompt, seed, cfg.width, cfg.height, cfg)
        for _ in range(quality_steps):
            ref.step()
        r_loss.append(ref.loss)
        r_score.append(clip_score(clip, ref.final_image(), prompt))
    out.update({
        "quality_steps": quality_steps, "quality_seeds": len(seeds),
        "engine_final_loss": round(sum(e_loss) / len(e_loss), 4),
        "reference_final_loss": round(sum(r_loss) / len(r_loss), 4),
        "engine_clip_score": round(sum(e_score) / len(e_score), 4),
        "reference_clip_score": round(sum(r_score) / len(r_score), 4),
    })
    return out


def step_phases(clip, vqgan, cfg: ImagineConfig, n: int) -> dict:
    """Where one job's step goes (the profile behind the numbers): the engine's own pieces,
    timed one by one, median of n steps, in milliseconds."""
    from worker.imagine.maths import spherical_distance

    engine = ImagineEngine(clip, vqgan, ImagineConfig(**{**cfg.__dict__, "batch_size": 1}))
    engine.add(jobs(1, 10_000)[0], QuietContext())
    engine.step()
    r = engine._running[0]
    t = {k: [] for k in ("decode", "cutouts", "clip", "backward", "adam")}
    for _ in range(n):
        t0 = time.perf_counter()
        image = engine.synth(r.z)
        t1 = time.perf_counter()
        cut = engine.cutouts(image, [r.gen])
        t2 = time.perf_counter()
        emb = clip.embed_pixels(cut).float().view(1, cfg.cutouts, 1, -1)
        loss = (spherical_distance(emb, r.targets[None, None]).mean(1) * r.weights).sum()
        t3 = time.perf_counter()
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        r.opt.step()
        vqgan.clamp_(r.z)
        t5 = time.perf_counter()
        for k, a, b in zip(t, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            t[k].append(b - a)
    return {f"phase_{k}_ms": round(1000 * median(v), 1) for k, v in t.items()}


def _mem_available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def real_size(quick: bool, tiny: bool) -> dict:
    """bench/gpu_imagine.py on this CPU, in a subprocess: a one-step smoke run per size."""
    if tiny:
        sizes = "64"
    else:
        # one step at 256 px peaks near 4 GB on the CPU; activations grow with the pixels
        want = [256] if quick else [256, 512]
        sizes = ",".join(str(s) for s in want if _mem_available_gb() >= 5 * (s / 256) ** 2) or "256"
    cmd = [sys.executable, "-m", "bench.gpu_imagine", "--device", "cpu", "--sizes", sizes, "--k", "1",
           "--warmup", "0", "--steps", "1"]
    if tiny:
        cmd.append("--tiny")
    if os.environ.get("CLIPBOT_BENCH_THREADS"):
        cmd += ["--threads", os.environ["CLIPBOT_BENCH_THREADS"]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"gpu_imagine failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {}
    for row in res["rows"]:
        tag = f"real_{row['size']}_k{row['k']}"
        for key in ("s_per_step", "peak_mem_mb", "setup_s"):
            if key in row:
                out[f"{tag}_{key}"] = row[key]
    return out


def run(quick: bool = False, tiny: bool = False) -> dict:
    """tiny: the test factories' models at 32 px (the smoke test's mode)."""
    clip, vqgan, note = tiny_models() if tiny else shapes_models()
    cfg = ImagineConfig(max_steps=10_000, preview_every=10)
    if tiny:
        cfg.width = cfg.height = 32
        cfg.cutouts = 8
    out: dict[str, float] = {"width": cfg.width, "height": cfg.height, "cutouts": cfg.cutouts,
                             "torch_threads": torch.get_num_threads()}
    ks = [1, 2] if tiny else ([1, 4] if quick else [1, 2, 4, 8])
    steps = 2 if tiny else (3 if quick else 10)
    out.update(throughput(clip, vqgan, cfg, ks, steps))
    timed, qsteps, seeds = (2, 3, [1]) if tiny else ((3, 6, [1]) if quick else (10, 50, [1, 2, 3]))
    out.update(versus_reference(clip, vqgan, cfg, timed, qsteps, seeds))
    out.update(step_phases(clip, vqgan, cfg, 2 if (tiny or quick) else 5))
    # seconds per step at the default size and cutouts: the interleaved engine figure
    out["s_per_step"] = out["engine_s_per_step"]
    out["projected_jobs_per_hour_k1_at_100_steps"] = round(3600 / (100 * out["engine_s_per_step"]), 1)
    out.update(real_size(quick, tiny))
    return {"metrics": out, "notes": note}


if __name__ == "__main__":
    from bench.common import main

    main(run)
