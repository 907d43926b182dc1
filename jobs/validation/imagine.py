"""Bounds of an imagine request that depend on the worker's configuration: size and steps.
(The prompt's own checks are in jobs.validation.prompts; fixed bounds are in the schema.)"""
from __future__ import annotations

import math

from jobs.settings import ImagineConfig
from jobs.validation import JobError


def resolve_size(width: int, height: int, cfg: ImagineConfig, tile: int) -> tuple[int, int]:
    """The size a job runs at: 0 means the configured default; each side is rounded to the
    nearest multiple of `tile` (the VQGAN's downsampling factor), then bounded."""
    w, h = width or cfg.width, height or cfg.height
    w, h = (max(tile, int(v / tile + 0.5) * tile) for v in (w, h))
    if min(w, h) < cfg.min_side:
        raise JobError(f"The size {w}x{h} is too small: each side must be at least {cfg.min_side} pixels.")
    if w * h > cfg.max_pixels:
        side = int(math.isqrt(cfg.max_pixels)) // tile * tile
        raise JobError(
            f"The size {w}x{h} is {w * h:,} pixels; this worker's limit is {cfg.max_pixels:,} "
            f"(e.g. {side}x{side}). Ask for a smaller size."
        )
    return w, h


def resolve_steps(steps: int, cfg: ImagineConfig) -> int:
    """The steps a job runs for: 0 means the configured default, at most cfg.max_steps."""
    steps = steps or cfg.steps
    if not 1 <= steps <= cfg.max_steps:
        raise JobError(f"{steps} steps is too many: the limit is {cfg.max_steps}.")
    return steps
