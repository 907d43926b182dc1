"""Production wiring: which engine runs which job kind (the default `CLIPBOT_HANDLERS`).

Each engine package plugs in through one function, imported only here:

* `worker.clip.handlers.build(settings, device) -> dict[kind, handler]` for classify/index/find;
* `worker.imagine.handlers.build(settings, device) -> BatchEngine | handler` for imagine.

An engine whose module is missing is left out (its lane is not served) with a warning, so a
CPU box can run only the fast CLIP jobs, say. Models load once, here, when the worker starts.
"""
from __future__ import annotations

import importlib
import logging

from worker.loop import WorkerSetup

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            log.warning("%s is not available: its jobs will not be served by this worker", module)
            return None
        raise


def build(settings) -> WorkerSetup:
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    setup = WorkerSetup(device=device)
    clip = _optional("worker.clip.handlers")
    if clip is not None:
        setup.handlers.update(clip.build(settings, device))
        setup.models.append(str(settings.clip_model))
    imagine = _optional("worker.imagine.handlers")
    if imagine is not None:
        engine = imagine.build(settings, device)
        if callable(engine) and not hasattr(engine, "step"):
            setup.handlers["imagine"] = engine
        else:
            setup.imagine_engine = engine
        setup.models.append(str(settings.vqgan_checkpoint))
    if not setup.handlers and setup.imagine_engine is None:
        raise RuntimeError("no engine is available (worker.clip.handlers, worker.imagine.handlers missing)")
    return setup
