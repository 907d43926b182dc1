"""What the queue worker needs from the imagine engine: `build(settings, device) -> ImagineEngine`.

Models load once here, when the worker starts. The CLIP is shared with the CLIP engine
(`get_clip`). Engine knobs come from `CLIPBOT_IMAGINE_<FIELD>` environment variables, one per
`ImagineConfig` field (e.g. CLIPBOT_IMAGINE_BATCH_SIZE=8, CLIPBOT_IMAGINE_MAX_PIXELS=262144).
Settings.vqgan_allow_pickle (CLIPBOT_VQGAN_ALLOW_PICKLE=1) lets a trusted local VQGAN checkpoint be
fully unpickled (see vqgan.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from worker.imagine.engine import ImagineConfig, ImagineEngine
from worker.imagine.vqgan import load_vqgan

log = logging.getLogger(__name__)

ENV_PREFIX = "CLIPBOT_IMAGINE_"
_TRUE = ("1", "true", "yes", "on")


def config_from_env(environ: Mapping[str, str] = os.environ) -> ImagineConfig:
    """ImagineConfig defaults, overridden by CLIPBOT_IMAGINE_<FIELD> variables (clear errors)."""
    values = {}
    for f in dataclasses.fields(ImagineConfig):
        name = ENV_PREFIX + f.name.upper()
        if name not in environ:
            continue
        raw = environ[name].strip()
        if f.name == "decode_per_image":  # the one tri-state knob
            choices = {"auto": None, **{t: True for t in _TRUE}, **{t: False for t in ("0", "false", "no", "off")}}
            if raw.lower() not in choices:
                raise ValueError(f"{name}={raw!r}: use auto, true or false")
            values[f.name] = choices[raw.lower()]
            continue
        kind = type(f.default)
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
        if value < 0 or (value == 0 and f.name in ("batch_size", "steps", "max_steps", "cutouts", "max_pixels")):
            raise ValueError(f"{name}={raw!r} must be positive")
        values[f.name] = value
    return ImagineConfig(**values)


def build(settings, device: str | None = None) -> ImagineEngine:
    from worker.clip.model import get_clip

    clip = get_clip(settings.clip_model, device)
    vqgan = load_vqgan(settings.vqgan_config, settings.vqgan_checkpoint, device,
                       allow_pickle=settings.vqgan_allow_pickle)
    engine = ImagineEngine(clip, vqgan, config_from_env())
    log.info("imagine engine: VQGAN %s, CLIP %r, %s", vqgan.info(), clip, engine.config)
    return engine
