"""Production wiring: which engine runs which job kind (the default `CLIPBOT_HANDLERS`).

Each engine package plugs in through one function, imported only here:

* `worker.clip.handlers.build(settings, device) -> dict[kind, handler]` for classify/index/find;
* `worker.imagine.handlers.build(settings, device) -> ImagineEngine` for imagine (batched).

`CLIPBOT_ENGINES` picks which of the two a worker serves (default both): a CPU box can serve only
the fast CLIP lane while GPU workers take the generations. Models load once, here, at start.
"""
from __future__ import annotations

import logging

from worker.setup import WorkerSetup

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build(settings) -> WorkerSetup:
    from worker.models.resolve import resolve_models

    settings = resolve_models(settings)  # catalogue names -> verified folders, imagine profiles
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    setup = WorkerSetup(device=device)
    engines = settings.engines.split(",")
    if "clip" in engines:
        from worker.clip import handlers as clip

        setup.handlers.update(clip.build(settings, device))
        setup.models.append(str(settings.clip_model))
    if "imagine" in engines:
        from worker.imagine import handlers as imagine

        setup.imagine_engine = imagine.build(settings, device)
        setup.models.append(str(settings.vqgan_checkpoint))
    return setup
