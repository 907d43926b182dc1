"""`python -m worker doctor [--json]`: what works and what does not for a worker, with fixes.

Redis (and AOF) and the workers already online come from `jobs.checks`; then this machine: the
GPU torch sees and its memory, and each configured engine's models, loaded exactly as the
worker loads them (so a missing or broken checkpoint shows here, named). Exit status 1 when
something is broken.
"""
from __future__ import annotations

import asyncio
import time

from jobs.checks import Report, check_redis, check_workers
from worker.setup import load_setup

DEFAULT_HANDLERS = "worker.handlers:build"
MODEL_FIX = {
    "clip": "CLIP_MODEL must name a folder saved with save_pretrained (config.json + weights), or a hub id "
            "where a hub is reachable; the shipped one is models/clip-shapes (paths are relative to the "
            "working directory)",
    "imagine": "VQGAN_CONFIG / VQGAN_CHECKPOINT must name taming's model.yaml and its checkpoint (the shipped "
               "ones: models/vqgan-shapes/model.yaml, last.ckpt); imagine also needs the CLIP model",
}


def check_gpu(report: Report, settings) -> None:
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            report.add(f"GPU {i}", "ok", f"{torch.cuda.get_device_name(i)}: {total / 2**30:.1f} GiB, "
                       f"{free / 2**30:.1f} GiB free (torch {torch.__version__}, CUDA {torch.version.cuda})")
        return
    why = ("this torch is a CPU build" if torch.version.cuda is None
           else f"torch (CUDA {torch.version.cuda}) sees no device")
    fix = ("check `nvidia-smi`, the container's GPU reservation (docker-compose.yml), and install the CUDA "
           "build of torch (`make install` picks it when nvidia-smi finds a GPU)")
    if settings.device == "cuda":
        report.add("GPU", "fail", f"CLIPBOT_DEVICE=cuda but no GPU is visible: {why}", fix)
    else:
        report.add("GPU", "warn", f"none visible ({why}): the engines run on the CPU, fine for the shipped "
                   "small models, slow for real ones", fix)


def check_models(report: Report, settings) -> None:
    """Load each engine's models as the worker does; one broken engine does not hide the other."""
    if settings.handlers != DEFAULT_HANDLERS:
        plan = [(f"models ({settings.handlers})", settings)]
    else:
        plan = [(f"models: {engine}", settings.model_copy(update={"engines": engine}))
                for engine in settings.engines.split(",")]
    for name, s in plan:
        t0 = time.monotonic()
        try:
            setup = load_setup(s.handlers, s)
        except Exception as e:  # noqa: BLE001 - any loading error is the finding
            engine = s.engines if "," not in s.engines else ""
            report.add(name, "fail", f"{type(e).__name__}: {e}", MODEL_FIX.get(engine, "see the message"))
            continue
        try:
            served = ", ".join(sorted(setup.handlers) + (["imagine"] if setup.imagine_engine is not None else []))
            report.add(name, "ok", f"{', '.join(setup.models) or 'no models'} on {setup.device}, loaded in "
                       f"{time.monotonic() - t0:.1f} s; serves {served or 'nothing'}")
        finally:
            if setup.close is not None:
                setup.close()


def diagnose(settings) -> Report:
    report = Report("clipbot doctor: the worker")

    async def shared() -> None:
        url = await check_redis(report, settings)
        await check_workers(report, url, settings)

    asyncio.run(shared())
    check_gpu(report, settings)
    check_models(report, settings)
    return report


def add_doctor_arguments(parser) -> None:
    """No options of its own: --redis, --json and the model options are the common ones."""


def doctor_main(args, settings) -> int:
    """`settings` already carries the command line's model options (--clip-model, ...)."""
    if args.redis:
        settings = settings.model_copy(update={"redis_url": args.redis})
    return diagnose(settings).print(args.json)
