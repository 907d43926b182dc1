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
from worker.imagine.variations import VariationsEngine
from worker.imagine.vqgan import load_vqgan

log = logging.getLogger(__name__)

def build(settings, device: str | None = None) -> VariationsEngine:
    from worker.clip.model import get_clip

    clip = get_clip(settings.clip_model, device)
    vqgan = load_vqgan(settings.vqgan_config, settings.vqgan_checkpoint, device,
                       allow_pickle=settings.vqgan_allow_pickle)
    engine = ImagineEngine(clip, vqgan, settings.imagine)
    log.info("imagine engine: VQGAN %s, CLIP %r, %s", vqgan.info(), clip, engine.config)
    return VariationsEngine(engine)
