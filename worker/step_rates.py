"""Seconds per imagine step, per requested size, measured from the running jobs' progress and
published in the worker's registry entry (`WorkerInfo.step_s`), so the bot can estimate how long a
queued generation waits.

At each heartbeat, the steps every running imagine job advanced since the previous heartbeat are
summed per size; the time elapsed divided by that sum is one sample (jobs running together share
the time, so this is the worker's effective cost of a step at its current load), folded into an
exponential moving average.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from jobs.registry import size_key

ALPHA = 0.3  # weight of the newest sample


class StepRates:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._last_at: float | None = None
        self._last_step: dict[str, int] = {}  # job id -> step at the previous observation
        self.step_s: dict[str, float] = {}

    def observe(self, contexts: Iterable) -> dict[str, float]:
        """Fold in the progress since the last call; returns the averages (size key -> s/step)."""
        now = self._clock()
        advanced: dict[str, int] = {}
        steps: dict[str, int] = {}
        for ctx in contexts:
            job = ctx.job
            if job.kind != "imagine":
                continue
            step = getattr(ctx, "step", 0)
            steps[job.id] = step
            if job.id in self._last_step:  # a job seen for the first time has no known start step
                key = size_key(job.width, job.height)
                advanced[key] = advanced.get(key, 0) + max(0, step - self._last_step[job.id]) * job.count
        if self._last_at is not None:
            elapsed = now - self._last_at
            for key, n in advanced.items():
                if n > 0:
                    sample = elapsed / n
                    old = self.step_s.get(key)
                    self.step_s[key] = sample if old is None else (1 - ALPHA) * old + ALPHA * sample
        self._last_at, self._last_step = now, steps
        return dict(self.step_s)
