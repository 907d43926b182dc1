"""python -m worker.training clip|vqgan|all|eval|fidelity|judge [--json] [--out DIR] [--minutes M] [--steps N] [--threads T]

clip / vqgan / all train from scratch (deterministic seeds; with --minutes the schedule also follows
the clock, so the step count can differ between machines) and write the shipped-model folders.
all (= make models) runs `clip` and `vqgan --staged` side by side, one thread each, in one budget.
eval measures the shipped (or --clip-dir / --vqgan-dir) models on freshly drawn held-out data.
fidelity paints and judges only the shape-fidelity panels, with the worker's imagine settings
(CLIPBOT_IMAGINE_* apply): `CLIPBOT_IMAGINE_STEPS=200 python -m worker.training fidelity --panels singles`.
judge retrains the independent judge of generated pictures (judge.py; never part of `all`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


def _log(quiet: bool):
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if quiet else (lambda msg: print(msg, flush=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m worker.training", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["clip", "vqgan", "all", "eval", "fidelity", "judge"])
    ap.add_argument("--staged", action="store_true", help="vqgan: the two-stage recipe of `all` (crops, then whole images)")
    ap.add_argument("--out", type=Path, default=MODELS, help="folder that receives clip-shapes/ and vqgan-shapes/")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget per model (all: in total, default 40)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (overrides the default)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", action="store_true", help="JSON on stdout and nothing else")
    ap.add_argument("--resume", action="store_true", help="continue from the models already in --out (fresh schedule)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch size (overrides the default)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (overrides the default)")
    ap.add_argument("--crop", type=int, default=None, help="vqgan: training crop side (64 = whole images)")
    ap.add_argument("--clip-dir", type=Path, default=None, help="eval, fidelity: CLIP folder (default OUT/clip-shapes)")
    ap.add_argument("--vqgan-dir", type=Path, default=None, help="eval, fidelity: VQGAN folder (default OUT/vqgan-shapes)")
    ap.add_argument("--n", type=int, default=500, help="eval: images per measurement")
    ap.add_argument("--seed", type=int, default=12345, help="eval: seed of the freshly drawn data; fidelity: the first of its two seeds")
    ap.add_argument("--panels", default="singles,backgrounds,pairs", help="fidelity: comma list of panels")
    ap.add_argument("--per-panel", type=int, default=None, help="fidelity: only the first N prompts of each panel")
    ap.add_argument("--save-dir", type=Path, default=None, help="fidelity: write every picture here as PNG")
    ap.add_argument("--no-imagine", action="store_true", help="eval: skip the (slow) VQGAN+CLIP panels and the judge's measurements (fidelity, round trip)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = _log(args.json)
    result: dict = {}
    if args.json:  # taming prints "Working with z of shape ..." to stdout: keep stdout for the JSON
        with contextlib.redirect_stdout(sys.stderr):
            result = _run(args, log)
    else:
        result = _run(args, log)

    for part in result.values():
        if isinstance(part, dict):
            for key in ("train_config", "model_config", "losses"):
                part.pop(key, None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in flatten(result):
            print(f"{key:<58} {value}")
    return 0


def _run(args, log) -> dict:
    result: dict = {}
    clip_dir = args.clip_dir or args.out / "clip-shapes"  # what eval and fidelity measure
    vqgan_dir = args.vqgan_dir or args.out / "vqgan-shapes"
    if args.command == "all":
        result = train_all(args.out, args.minutes or 40.0, log)
    if args.command == "clip":
        from worker.training.clip_train import ClipTrainConfig, train_clip

        cfg = ClipTrainConfig()
        _override(cfg, args)
        out = args.out / "clip-shapes"
        result["clip"] = train_clip(out, cfg, log=log, resume=out if args.resume else None)
    if args.command == "vqgan":
        from worker.training.vqgan_train import VqganTrainConfig, train_vqgan

        out = args.out / "vqgan-shapes"
        if args.staged:
            result = train_vqgan_staged(out, args.minutes or 40.0, log)
        else:
            cfg = VqganTrainConfig()
            _override(cfg, args)
            result["vqgan"] = train_vqgan(out, cfg, log=log, resume=out if args.resume else None)
    if args.command == "judge":
        from worker.training.judge import train_judge

        result["judge"] = train_judge(log=log)[1]
    if args.command == "eval":
        from worker.training.evaluate import evaluate_all

        result = evaluate_all(
            clip_dir=clip_dir, vqgan_dir=vqgan_dir,
            n=args.n, seed=args.seed, log=log, imagine=not args.no_imagine,
        )
    if args.command == "fidelity":
        from jobs.settings import ImagineConfig, Settings
        from worker.training.fidelity import PANELS, fidelity_report

        panels = tuple(p.strip() for p in args.panels.split(",") if p.strip())
        unknown = sorted(set(panels) - set(PANELS))
        if unknown or not panels:
            raise SystemExit(f"--panels: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(PANELS)}")
        config = Settings().imagine  # as the worker reads it: CLIPBOT_IMAGINE_* apply
        result["fidelity"] = fidelity_report(
            clip_dir, vqgan_dir, args.seed,
            panels=panels, config=config, log=log, save_dir=args.save_dir, per_panel=args.per_panel,
        )
        default = ImagineConfig().model_dump()
        result["fidelity"]["settings_changed"] = {k: v for k, v in config.model_dump().items() if v != default[k]}
    return result


def train_all(out: Path, minutes: float, log) -> dict:
    """Both models from scratch in `minutes` of wall clock (what `make models` runs).

    The two trainings run side by side, one process and one torch thread each: these models are
    small enough that a second thread buys little (on 2 cores, two 1-thread runs finish together
    in the time one 2-thread run takes for either). Each process gets the whole budget.
    """
    out.mkdir(parents=True, exist_ok=True)
    budget = f"{minutes - 1.5:g}"  # loading, pool rendering and the final save fit in the rest
    cmds = {
        "clip": ["clip", "--out", str(out), "--minutes", budget, "--threads", "1", "--json"],
        "vqgan": ["vqgan", "--staged", "--out", str(out), "--minutes", budget, "--threads", "1", "--json"],
    }
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "worker.training", *argv], stdout=subprocess.PIPE, text=True)
        for name, argv in cmds.items()
    }
    result: dict = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate()  # each child logs to stderr, which we share
        if proc.returncode != 0:
            raise SystemExit(f"training {name} failed (exit {proc.returncode})")
        result.update(json.loads(stdout))
    log(f"all: both models written to {out}")
    return result


def train_vqgan_staged(out: Path, minutes: float, log) -> dict:
    """VQGAN from scratch: 32x32 crops first (40% of the time; a quarter of the compute per image),
    then whole 64x64 images, which the decoder's GroupNorm statistics need (60%)."""
    from worker.training.vqgan_train import VqganTrainConfig, train_vqgan

    result = {"vqgan_crops": train_vqgan(out, VqganTrainConfig(steps=10**6, minutes=0.4 * minutes), log=log)}
    result["vqgan"] = train_vqgan(
        out, VqganTrainConfig(steps=10**6, batch_size=8, crop=64, lr=5e-4, warmup=50, minutes=0.6 * minutes), log=log, resume=out
    )
    return result


def _override(cfg, args) -> None:
    if args.minutes:  # a time budget alone: the clock ends the run, not the default step count
        cfg.minutes, cfg.steps = args.minutes, 10**6
    if args.steps:
        cfg.steps = args.steps
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.lr:
        cfg.lr = args.lr
    if args.crop and hasattr(cfg, "crop"):
        cfg.crop = args.crop
    if args.resume:
        cfg.warmup = min(cfg.warmup, 50)


def flatten(d: dict, prefix: str = ""):
    """(dotted key, value) rows for the readable table; lists of rows are summarised by length."""
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, name + ".")
        elif isinstance(value, list):
            yield name, f"[{len(value)} items]"
        elif isinstance(value, float):
            yield name, f"{value:.4f}"
        else:
            yield name, value


if __name__ == "__main__":
    raise SystemExit(main())
