"""VQGAN+CLIP at real size, as one prepared script for a GPU machine.

CLIP ViT-B/32 (transformers' CLIPConfig defaults) and the taming VQGAN f16_16384 architecture,
with random weights: the same compute and memory as the released checkpoints, which we cannot
download here. For each size and batch K: seconds per step (CUDA synchronised), peak memory,
jobs per hour at the default 100 steps.

    python -m bench.gpu_imagine                      # CUDA, fp16 CLIP, 256 and 512, K = 1, 2, 4
    python -m bench.gpu_imagine --device cpu --sizes 256 --k 1 --warmup 0 --steps 1   # CPU smoke

Prints one JSON object (last line of stdout): {"device":..., "rows": [{size, k, s_per_step, ...}]}.
On a GPU, peak memory is torch.cuda.max_memory_allocated per (size, K); on the CPU it is the
process's resident-set high-water mark (ru_maxrss), which only grows, so run one size per process
for a clean CPU figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time

import torch


def vit_b_32_clip(device: torch.device, dtype: torch.dtype, tiny: bool = False):
    """A random CLIP ViT-B/32 wrapped like a loaded one (worker.clip.model.Clip), built in memory."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from tests.factories import _CORPUS
    from worker.clip.model import Clip
    from worker.training.tokenizer import train_tokenizer

    tok = train_tokenizer(_CORPUS, vocab_size=400)
    if tiny:  # smoke-test stand-in: the same code path, a few thousand parameters
        config = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2),
                            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=32, patch_size=8),
                            projection_dim=16)
    else:
        config = CLIPConfig()  # ViT-B/32: 224 px, patch 32, 12+12 layers, width 768/512, dim 512
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.eos_token_id = tok.eos_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    model = CLIPModel(config)
    s = config.vision_config.image_size
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}),
        tokenizer=tok,
    )
    return Clip(model, processor, device=device, dtype=dtype, name="random-clip-vit-b-32")


def f16_16384_vqgan(device: torch.device, tiny: bool = False):
    from bench.models import random_vqgan_files
    from worker.imagine.vqgan import load_vqgan

    with contextlib.redirect_stdout(sys.stderr):
        return load_vqgan(*random_vqgan_files("shapes" if tiny else "f16_16384"), device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def time_config(clip, vqgan, size: int, k: int, steps: int, warmup: int, cutouts: int) -> dict:
    from bench.imagine import jobs
    from worker.api import QuietContext
    from worker.imagine.engine import ImagineConfig, ImagineEngine

    device = vqgan.device
    cfg = ImagineConfig(width=size, height=size, max_pixels=size * size, batch_size=k, cutouts=cutouts,
                        max_steps=10_000, preview_every=0, min_side=8)
    engine = ImagineEngine(clip, vqgan, cfg)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for job in jobs(k, steps + warmup + 10):
        engine.add(job, QuietContext())
    for _ in range(warmup):
        engine.step()
    sync(device)
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    sync(device)
    s = (time.perf_counter() - t) / steps
    for _, r in engine.pop_finished():
        if isinstance(r, BaseException):
            raise r
    return {"size": size, "k": k, "s_per_step": round(s, 4), "per_job_s_per_step": round(s / k, 4),
            "jobs_per_hour_at_100_steps": round(3600 * k / (100 * s), 1),
            "peak_mem_mb": round(peak_mb(device), 1), "setup_s": round(setup_s, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--k", default="1,2,4", help="batch sizes (jobs optimised together)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per (size, K)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cutouts", type=int, default=32)
    p.add_argument("--clip-dtype", choices=["auto", "fp16", "fp32"], default="auto",
                   help="auto: fp16 on CUDA, fp32 on CPU (what the worker does)")
    p.add_argument("--tiny", action="store_true", help="tiny stand-in models (tests)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here: use --device cpu for a smoke run")
    dtype = {"fp16": torch.float16, "fp32": torch.float32}.get(
        a.clip_dtype, torch.float16 if device.type == "cuda" else torch.float32)
    t = time.perf_counter()
    clip = vit_b_32_clip(device, dtype, a.tiny)
    vqgan = f16_16384_vqgan(device, a.tiny)
    load_s = time.perf_counter() - t
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        for k in (int(k) for k in a.k.split(",")):
            try:
                row = time_config(clip, vqgan, size, k, a.steps, a.warmup, a.cutouts)
            except torch.cuda.OutOfMemoryError as e:
                row = {"size": size, "k": k, "error": f"out of memory: {str(e).splitlines()[0]}"}
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "clip": "ViT-B/32 (random)" if not a.tiny else "tiny", "clip_dtype": str(dtype).removeprefix("torch."),
        "vqgan": vqgan.info(), "cutouts": a.cutouts, "steps_timed": a.steps, "warmup": a.warmup,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "model_setup_s": round(load_s, 1),
        "rows": rows,
    }
    line = json.dumps(result)
    if a.out:
        with open(a.out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
