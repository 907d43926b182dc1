"""Seconds per optimisation step, solo and batched: `python -m worker.imagine.bench [--tiny] [--k 1,2,4]`.

Prints one JSON object. Models default to the shipped ones (the worker's settings); `--tiny`
uses the random test models from tests/factories.py. A step of a batch of K serves K jobs, so
`per_job_s` = `s_per_step / K` is the throughput figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from jobs.schemas import ImagineJob
from worker.imagine.engine import ImagineConfig, ImagineEngine


class _Quiet:
    job = None

    def progress(self, *args, **kwargs) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def blob(self, key: str) -> bytes:
        raise KeyError(key)


def load_models(args):
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    if args.tiny:
        from tests.factories import make_clip_dir, make_vqgan_files

        root = Path(tempfile.mkdtemp(prefix="imagine-bench-"))
        return load_clip(make_clip_dir(root / "clip"), args.device), load_vqgan(*make_vqgan_files(root / "vq"), args.device)
    from jobs.settings import load_settings

    s = load_settings()
    return (load_clip(args.clip_model or s.clip_model, args.device),
            load_vqgan(args.vqgan_config or s.vqgan_config, args.vqgan_checkpoint or s.vqgan_checkpoint, args.device))


def time_batch(clip, vqgan, cfg: ImagineConfig, k: int, steps: int, warmup: int = 2) -> float:
    engine = ImagineEngine(clip, vqgan, cfg)
    for i in range(k):
        engine.add(ImagineJob(prompt=f"a red circle | a blue star:{0.5 + i}", seed=i, steps=steps + warmup + 5), _Quiet())
    for _ in range(warmup):
        engine.step()
    if vqgan.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    if vqgan.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="random tiny test models instead of the shipped ones")
    p.add_argument("--clip-model")
    p.add_argument("--vqgan-config")
    p.add_argument("--vqgan-checkpoint")
    p.add_argument("--device", default=None)
    p.add_argument("--k", default="1,2,4", help="batch sizes to time")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", default=None, help="WxH (default: the config's)")
    p.add_argument("--cutouts", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip, vqgan = load_models(args)
    cfg = ImagineConfig(batch_size=max(int(k) for k in args.k.split(",")), max_steps=10_000)
    if args.tiny:
        cfg.width = cfg.height = 32
        cfg.min_side = 8
    if args.size:
        w, _, h = args.size.partition("x")
        cfg.width, cfg.height = int(w), int(h or w)
    if args.cutouts:
        cfg.cutouts = args.cutouts
    solo = time_batch(clip, vqgan, cfg, 1, args.steps)
    batched = {}
    for k in (int(k) for k in args.k.split(",")):
        s = time_batch(clip, vqgan, cfg, k, args.steps)
        batched[str(k)] = {"s_per_step": round(s, 4), "per_job_s": round(s / k, 4)}
    print(json.dumps({
        "bench": "imagine_step", "device": str(vqgan.device), "threads": torch.get_num_threads(),
        "vqgan": vqgan.info(), "clip": getattr(clip, "name", "?"), "clip_image_size": clip.image_size,
        "size": f"{cfg.width}x{cfg.height}", "cutouts": cfg.cutouts, "steps_timed": args.steps,
        "decode_per_image": ImagineEngine(clip, vqgan, cfg)._decode_per_image,
        "solo_s_per_step": round(solo, 4), "batched": batched, "config": asdict(cfg),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
