"""GPU memory for imagine batches: learn what a job of a given size takes, admit only batches
that fit, and split a batch that still runs out of memory so no job fails because of its neighbours.

`MemoryPlanner` measures each step: the peak allocated during the step minus what was allocated
before it (models, latents, optimiser states), divided by the batch's jobs, per picture size.
A batch is admitted when `base + jobs x per-job bytes <= CLIPBOT_GPU_MEMORY_FRACTION x total`.
Until a size has been measured, a batch of it starts with one job (measured on its first step);
a size never measured is estimated from the nearest measured one, scaled up by pixels (memory
grows about linearly with pixels: the decoder's activations; the cutouts are a fixed part).

`run_in_parts(step, runs, planner)` runs `step(runs)`; on out-of-memory it splits the batch in
halves and runs each half on its own (jobs share no parameter, so each half is a valid batch);
a single job that does not fit alone fails alone, and its size is refused from then on.
"""
from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from worker.api import JobError

log = logging.getLogger(__name__)

R = TypeVar("R")
GIB = 1024 ** 3


def is_oom(e: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


class TooBigForMemory(JobError):
    """One job alone does not fit in the memory this worker may use (the job's message)."""


class MemoryPlanner:
    """Per-size memory book-keeping for one device. `total_bytes`, `allocated` and `peak` are
    injectable so the policy can be tested without a GPU."""

    def __init__(self, total_bytes: int, fraction: float, *, allocated: Callable[[], int] | None = None,
                 peak: Callable[[], int] | None = None, reset_peak: Callable[[], None] | None = None) -> None:
        self.limit = int(total_bytes * fraction)
        self.fraction = fraction
        self._allocated = allocated or (lambda: 0)
        self._peak = peak
        self._reset_peak = reset_peak or (lambda: None)
        self._per_job: dict[int, int] = {}  # pixels -> largest measured bytes per job
        self._too_big = 1 << 62  # smallest pixel count known not to fit alone
        self._base = 0

    @classmethod
    def for_device(cls, device: torch.device | str, fraction: float) -> MemoryPlanner | None:
        """A planner measuring a CUDA device; None elsewhere (CPU memory is not planned)."""
        device = torch.device(device)
        if device.type != "cuda":
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return cls(total, fraction, allocated=lambda: torch.cuda.memory_allocated(index),
                   peak=lambda: torch.cuda.max_memory_allocated(index),
                   reset_peak=lambda: torch.cuda.reset_peak_memory_stats(index))

    # ------------------------------------------------------------------ estimates

    def per_job(self, pixels: int) -> int | None:
        """Bytes one job of this many pixels needs during a step (measured or scaled), None if unknown."""
        if pixels in self._per_job:
            return self._per_job[pixels]
        if not self._per_job:
            return None
        sizes = sorted(self._per_job)
        i = bisect.bisect_left(sizes, pixels)
        if i < len(sizes):  # a larger size was measured: it bounds this one
            return self._per_job[sizes[i]]
        below = sizes[-1]
        return int(self._per_job[below] * pixels / below)  # scaled up: the fixed part scales too (safe side)

    def admits(self, jobs: int, pixels: int) -> bool:
        """Whether a batch of `jobs` jobs of this size fits. One job is always tried (see refusal)."""
        if jobs <= 1:
            return True
        need = self.per_job(pixels)
        return need is not None and self._allocated() + jobs * need <= self.limit

    def refusal(self, width: int, height: int) -> str | None:
        """A message when one job of this size can never fit, else None."""
        pixels = width * height
        need = self.per_job(pixels)
        if pixels < self._too_big and (need is None or need <= self.limit - self._base_estimate()):
            return None
        return (f"The size {width}x{height} does not fit in this worker's GPU memory "
                f"({self.limit / GIB:.1f} GiB usable, CLIPBOT_GPU_MEMORY_FRACTION={self.fraction:g}). "
                "Ask for a smaller size.")

    def max_pixels(self) -> int | None:
        """The largest picture (pixels) one job may have here, as far as known: under the smallest
        size that failed alone, and within what the largest measured size scales to (as
        `refusal` judges). None: nothing measured or failed yet."""
        bound = self._too_big - 1 if self._too_big < 1 << 62 else None
        if self._per_job:
            below = max(self._per_job)
            need = self._per_job[below]
            if need > 0:
                fit = max(below, (self.limit - self._base_estimate()) * below // need)
                bound = fit if bound is None else min(bound, fit)
        return bound

    def _base_estimate(self) -> int:
        return max(self._base, self._allocated())

    # ------------------------------------------------------------------ learning

    def begin(self) -> None:
        self._base = self._allocated()
        self._reset_peak()

    def observe(self, jobs: int, pixels: int) -> None:
        if self._peak is None or jobs < 1:
            return
        per_job = max(0, self._peak() - self._base) // jobs
        if per_job > self._per_job.get(pixels, 0):
            self._per_job[pixels] = per_job

    def record(self, jobs: int, pixels: int, per_job: int) -> None:
        """Set a measurement directly (tests, or a calibration run)."""
        self._per_job[pixels] = max(per_job, self._per_job.get(pixels, 0))

    def out_of_memory(self, jobs: int, pixels: int) -> None:
        """`jobs` jobs of this size did not fit: never plan that many again (or this size at all)."""
        if jobs <= 1:
            self._too_big = min(self._too_big, pixels)
            return
        floor = (self.limit - self._base) // jobs + 1  # they needed more than this each
        self._per_job[pixels] = max(self._per_job.get(pixels, 0), floor)


def run_in_parts(step: Callable[[list[R]], Tensor], runs: Sequence[R], planner: MemoryPlanner | None = None,
                 pixels: int = 0) -> tuple[list[R], list[Tensor], list[tuple[R, BaseException]]]:
    """`step(runs) -> (len(runs), ...)` tensor, split in halves on out-of-memory until it fits.

    Returns (runs that stepped, their outputs in order as tensors of one or more rows, and
    (run, error) for each job that did not fit even alone). Other errors propagate."""
    done: list[R] = []
    outputs: list[Tensor] = []
    failed: list[tuple[R, BaseException]] = []
    pending: list[list[R]] = [list(runs)]
    while pending:
        part = pending.pop(0)
        try:
            if planner is not None:
                planner.begin()
            out = step(part)
        except Exception as e:
            if not is_oom(e):
                raise
            _free()
            if planner is not None:
                planner.out_of_memory(len(part), pixels)
            if len(part) == 1:
                failed.append((part[0], TooBigForMemory(
                    "The picture does not fit in this worker's GPU memory even on its own. Ask for a smaller size.")))
                continue
            half = len(part) // 2
            log.warning("out of memory with %d jobs of %d pixels: splitting the batch", len(part), pixels)
            pending[:0] = [part[:half], part[half:]]
            continue
        if planner is not None:
            planner.observe(len(part), pixels)
        done.extend(part)
        outputs.append(out)
    return done, outputs, failed


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(planner: MemoryPlanner | None) -> dict[str, Any]:
    if planner is None:
        return {}
    return {"limit_gib": round(planner.limit / GIB, 2), "measured": dict(planner._per_job)}
