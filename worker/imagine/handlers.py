"""What the queue worker needs from the imagine engine: `build(settings, device) -> VariationsEngine`
(an ImagineEngine that also runs count > 1 jobs as one batch of seeds).

Models load once here, when the worker starts. The CLIP is shared with the CLIP engine
(`get_clip`). Engine knobs are `settings.imagine` (CLIPBOT_IMAGINE_<FIELD>, e.g.
CLIPBOT_IMAGINE_BATCH_SIZE=8, validated with every other knob in jobs/settings.py).
Settings.vqgan_allow_pickle (CLIPBOT_VQGAN_ALLOW_PICKLE=1) lets a trusted local VQGAN checkpoint be
fully unpickled (see vqgan.py).
"""
from __future__ import annotations

import logging

from worker.imagine.engine import ImagineEngine
from worker.imagine.memory import MemoryPlanner, describe
from worker.imagine.safety_gate import SafetyGate
from worker.imagine.variations import VariationsEngine
from worker.imagine.vqgan import load_vqgan

log = logging.getLogger(__name__)



def build(settings, device: str | None = None) -> SafetyGate:
    from worker.clip.model import get_clip

    clip = get_clip(settings.clip_model, device)
    vqgan = load_vqgan(settings.vqgan_config, settings.vqgan_checkpoint, device,
                       allow_pickle=settings.vqgan_allow_pickle)
    engine = ImagineEngine(clip, vqgan, settings.imagine)
    if vqgan.device.type == "cuda":
        use_gpu_speedups(engine, settings.gpu_memory_fraction)
    log.info("imagine engine: VQGAN %s, CLIP %r, %s, memory %s", vqgan.info(), clip, engine.config,
             describe(engine.memory))
    # a count-k job runs as k pictures in one batch; a job with a SafetyPolicy has its init image
    # checked and its result marked
    return SafetyGate(VariationsEngine(engine), clip)


def use_gpu_speedups(engine: ImagineEngine, memory_fraction: float) -> None:
    """On a GPU: cuDNN picks the fastest conv kernels per shape (a batch keeps its shape for many
    steps), the VQGAN decodes under autocast (CLIP already runs in float16; the latents and Adam
    stay float32), and batches are planned to stay within `memory_fraction` of the device, which
    is also set as this process's hard cap, so going over it is an out-of-memory the engine splits."""
    import torch

    torch.backends.cudnn.benchmark = True
    engine.vqgan.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    device = engine.vqgan.device
    torch.cuda.set_per_process_memory_fraction(memory_fraction, device)
    engine.memory = MemoryPlanner.for_device(device, memory_fraction)
