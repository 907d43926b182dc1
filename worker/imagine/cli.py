"""`python -m worker imagine "PROMPT" --out F.png [--gif F.gif] [--steps N] [--size WxH] [--seed S] [--count K] [--json]`.

With --count K > 1, picture i (seed S+i-1) goes to F-i.png (picture 1 to F.png), the grid of all K
to F-grid.png, and their timelapses likewise next to --gif.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from jobs.schemas import MAX_COUNT
from jobs.validation.prompts import parse_prompts
from worker.api import JobError
from worker.imagine.engine import as_job

_SIZE = re.compile(r"^\s*(\d{1,5})\s*(?:[x×X*,]\s*(\d{1,5}))?\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'128x96' -> (128, 96); '128' -> (128, 128)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write WIDTHxHEIGHT, e.g. 128x128")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def _weighted_path(text: str) -> tuple[str, float]:
    """'img.png:0.5' -> ('img.png', 0.5); a path without a numeric suffix has weight 1."""
    path, sep, weight = text.rpartition(":")
    if sep:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return text, 1.0


def add_imagine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help='what to draw; "a red circle | a blue star:0.5 | blurry:-1" weighs several')
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the picture")
    p.add_argument("--gif", metavar="FILE.gif", help="also write the timelapse GIF here")
    p.add_argument("--steps", type=int, default=0, help="optimisation steps (default: the worker's)")
    p.add_argument("--size", type=parse_size, default=(0, 0), metavar="WxH", help="picture size (default: the worker's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, always reported)")
    p.add_argument("--count", type=int, default=1, metavar="K",
                   help=f"make K pictures (1..{MAX_COUNT}), seeds S, S+1, ...: F.png, F-2.png, ... and F-grid.png")
    p.add_argument("--init-image", metavar="IMAGE", help="start from this picture instead of noise")
    p.add_argument("--init-weight", type=float, default=0.0, help="how strongly to stay near the init image")
    p.add_argument("--image-prompt", action="append", default=[], metavar="IMAGE[:WEIGHT]",
                   help="also aim at this picture (repeatable, up to 4)")
    p.add_argument("--vqgan-allow-pickle", action="store_true",
                   help="fully unpickle the VQGAN checkpoint: ONLY for a trusted local file")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise JobError(f"Cannot read the {what} {path}: {e.strerror or e}.") from None


def _named(path: Path, index: int) -> Path:
    """Where picture `index` of a variations job goes: FILE.png, FILE-2.png, ..."""
    return path if index == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


def imagine_main(args, runner) -> int:
    parse_prompts(args.prompt)  # fail fast, before any model loads or upload
    if args.init_weight and not args.init_image:
        raise JobError("--init-weight needs --init-image.")
    if not 1 <= args.count <= MAX_COUNT:
        raise JobError(f"--count must be between 1 and {MAX_COUNT}.")
    out, gif_out = Path(args.out), Path(args.gif) if args.gif else None
    for path in filter(None, (out, gif_out)):
        if not path.parent.is_dir():
            raise JobError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    fields = dict(prompt=args.prompt, width=args.size[0], height=args.size[1], steps=args.steps, seed=args.seed,
                  init_weight=args.init_weight, count=args.count)
    if args.init_image:
        fields["init_image"] = runner.put_blob(_read(args.init_image, "init image"))
    prompts = []
    for text in args.image_prompt:
        path, weight = _weighted_path(text)
        prompts.append({"image": runner.put_blob(_read(path, "image prompt")), "weight": weight})
    fields["image_prompts"] = prompts
    outcome = runner.run(as_job(fields))
    d = outcome.data
    pictures = d.get("pictures") or [{"index": 1, "seed": d["seed"], "clip_score": d["clip_score"],
                                      "png": "png", "gif": "gif"}]
    writes = []
    for p in pictures:
        writes.append((_named(out, p["index"]), outcome.blobs[p["png"]]))
        if gif_out is not None:
            writes.append((_named(gif_out, p["index"]), outcome.blobs[p["gif"]]))
    grid_out = out.with_name(f"{out.stem}-grid{out.suffix}") if "grid" in d else None
    if grid_out is not None:
        writes.append((grid_out, outcome.blobs[d["grid"]]))
    try:
        for path, data in writes:
            path.write_bytes(data)
    except OSError as e:
        raise JobError(f"Cannot write the picture: {e}.") from None
    report = {"out": str(out), "gif": str(gif_out) if gif_out else None, "steps": d["steps"],
              "seconds": d["seconds"], "clip_score": d["clip_score"], "seed": d["seed"],
              "width": d["width"], "height": d["height"], "prompt": d["prompt"], "model": d["model"],
              "note": d.get("note")}
    if grid_out is not None:
        report["grid"] = str(grid_out)
        report["pictures"] = [{"out": str(_named(out, p["index"])), "seed": p["seed"], "clip_score": p["clip_score"]}
                              for p in pictures]
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("out", "gif", "prompt", "seed", "steps", "width", "height", "seconds", "clip_score", "model",
                    "grid", "note"):
            if report.get(key) is not None:
                print(f"{key:<11} {report[key]}")
        for p in report.get("pictures", [])[1:]:
            print(f"{'out':<11} {p['out']}  (seed {p['seed']}, clip_score {p['clip_score']})")
    sys.stdout.flush()
    return 0
