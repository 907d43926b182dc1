"""Does /imagine draw what it is asked? `python -m worker.imagine.quality [--steps N] [--size WxH]`.

For prompts "a {colour} {shape} on a {background} background" of the shapes world it generates
a picture and measures, without CLIP (which the picture was optimised against and could be
fooling), how many pixels are nearest to the asked shape colour and to the asked background
colour among the shapes world's reference shades. A hit: background colour covers >= 25% of the
picture and the shape colour >= 3%. Prints one JSON object; used to choose ImagineConfig defaults.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
from PIL import Image

from jobs.schemas import ImagineJob
from worker.api import QuietContext
from worker.imagine.engine import ImagineConfig, imagine

CASES = [
    ("red", "circle", "blue"), ("yellow", "star", "black"), ("green", "square", "white"),
    ("blue", "triangle", "yellow"), ("purple", "circle", "grey"), ("orange", "square", "green"),
]


def load_models(args):
    """The shipped models (the worker's settings), the ones named on the command line, or with
    --tiny the random test models of tests/factories.py."""
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    if args.tiny:
        import tempfile
        from pathlib import Path

        from tests.factories import make_clip_dir, make_vqgan_files

        root = Path(tempfile.mkdtemp(prefix="imagine-quality-"))
        return load_clip(make_clip_dir(root / "clip"), args.device), load_vqgan(*make_vqgan_files(root / "vq"), args.device)
    from jobs.settings import load_settings

    s = load_settings()
    return (load_clip(args.clip_model or s.clip_model, args.device),
            load_vqgan(args.vqgan_config or s.vqgan_config, args.vqgan_checkpoint or s.vqgan_checkpoint, args.device))


def _palette():
    from worker.training.shapes import SHADES

    names, refs = [], []
    for name, shades in SHADES.items():
        for rgb in shades:
            names.append(name)
            refs.append(rgb)
    return np.array(names), np.array(refs, float)


def colour_fractions(png: bytes) -> dict[str, float]:
    names, refs = _palette()
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float).reshape(-1, 3)
    nearest = names[((px[:, None, :] - refs[None]) ** 2).sum(-1).argmin(1)]
    return {n: float((nearest == n).mean()) for n in dict.fromkeys(names)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--clip-model")
    p.add_argument("--vqgan-config")
    p.add_argument("--vqgan-checkpoint")
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--size", default=None)
    p.add_argument("--cases", type=int, default=len(CASES))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override an ImagineConfig field")
    p.add_argument("--save", metavar="DIR", help="also write the pictures here")
    args = p.parse_args(argv)
    clip, vqgan = load_models(args)
    cfg = ImagineConfig()
    for item in args.set:
        key, _, value = item.partition("=")
        setattr(cfg, key, type(getattr(cfg, key))(value))
    if args.size:
        w, _, h = args.size.partition("x")
        cfg.width, cfg.height = int(w), int(h or w)
    rows, t0 = [], time.perf_counter()
    for i, (c, s, b) in enumerate(CASES[: args.cases]):
        prompt = f"a {c} {s} on a {b} background"
        out = imagine(clip, vqgan, ImagineJob(prompt=prompt, seed=i, steps=args.steps), QuietContext(), cfg)
        frac = colour_fractions(out.blobs["png"])
        hit = frac[b] >= 0.25 and frac[c] >= 0.03
        rows.append({"prompt": prompt, "shape_colour": round(frac[c], 3), "background": round(frac[b], 3),
                     "hit": hit, "clip_score": out.data["clip_score"], "seconds": out.data["seconds"]})
        if args.save:
            with open(f"{args.save}/{i}_{c}_{s}_{b}.png", "wb") as f:
                f.write(out.blobs["png"])
    print(json.dumps({
        "bench": "imagine_quality", "hits": sum(r["hit"] for r in rows), "cases": len(rows),
        "mean_clip_score": round(float(np.mean([r["clip_score"] for r in rows])), 4),
        "seconds": round(time.perf_counter() - t0, 1), "size": f"{cfg.width}x{cfg.height}",
        "steps": args.steps or cfg.steps, "config": {k: getattr(cfg, k) for k in ("cutouts", "cut_min_size", "cut_pow", "lr", "noise")},
        "rows": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
