"""The learning-rate schedule both trainers use: warmup, then cosine decay over whichever runs
out first, the step count or the wall-clock budget (`make models` trains to a time budget)."""
from __future__ import annotations

import math
import time


def time_frac(t0: float, minutes: float | None) -> float:
    return 0.0 if minutes is None else (time.time() - t0) / (minutes * 60)


def lr_at(step: int, total: int, cfg, time_frac: float = 0.0) -> float:
    """`cfg` has `lr`, `warmup` (steps) and `min_lr_frac`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, max((step - cfg.warmup) / max(1, total - cfg.warmup), time_frac))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))
