"""Variations: an imagine job with `count` = k makes k pictures of one prompt, seeds seed, seed+1, ...

`VariationsEngine` wraps an `ImagineEngine` and is what the worker drives (same add / step /
pop_finished API). A count-k job becomes k ordinary sub-jobs (count 1, seed + i) that enter the
engine together, so they share one batch and finish at the same step: the group waits, first
come first served, until the engine has k free slots (a group larger than the engine's batch
starts when the engine is empty and runs in as many batches as it needs). Each sub-job is
exactly the job a count=1 request with that seed would be, so picture i equals that job's picture
(bit for bit on a CPU, where batched runs equal solo runs; see engine.py).

Progress of a group is one event per step: the slowest picture's step, the mean loss, and as
preview ONE grid image of the k latest previews. A count=1 job passes straight through: its
events and Result are the engine's own.

Result of a count-k job (k > 1): `data` holds picture 1's fields as a count=1 job would (prompt,
seed, steps, width, height, clip_score, model, loss, frames; `seconds` is the group's) plus
`count`, `grid` (a blob name) and `pictures`: [{"index": i, "seed", "clip_score", "loss", "png",
"gif", "frames"}], i = 1..k; "png", "gif", "grid" and frames' "blob" are names in the Result's
`blobs`. Picture 1's blobs keep their count=1 names ("png", "gif", "frame_<j>"); picture i > 1's
carry the suffix "_<i>" ("png_2", "frame_3_2"...). The frames of all pictures share one byte budget.
"""
from __future__ import annotations

import io
import math
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from jobs.schemas import ImagineJob
from jobs.validation.images import encode_png
from jobs.validation.prompts import parse_prompts
from worker.api import JobCancelled, JobContext, Outcome
from worker.imagine.engine import ImagineEngine, as_job, run_alone
from worker.imagine.frames import fit_budget

SEED_MODULUS = 2**63  # ImagineJob.seed's range: every picture's seed can be asked for again
GRID_GAP = 4  # pixels between pictures in a grid
GRID_BACKGROUND = (32, 32, 32)


def variation_seeds(seed: int, count: int) -> list[int]:
    return [(seed + i) % SEED_MODULUS for i in range(count)]


def grid_image(pictures: list[Image.Image | None]) -> Image.Image:
    """The pictures side by side (2 x 2 for four), cells the size of the largest; None leaves a cell blank."""
    present = [p for p in pictures if p is not None]
    w = max((p.width for p in present), default=16)
    h = max((p.height for p in present), default=16)
    cols = 2 if len(pictures) == 4 else len(pictures)
    rows = math.ceil(len(pictures) / cols)
    out = Image.new("RGB", (cols * w + (cols - 1) * GRID_GAP, rows * h + (rows - 1) * GRID_GAP), GRID_BACKGROUND)
    for i, p in enumerate(pictures):
        if p is not None:
            out.paste(p.convert("RGB"), ((i % cols) * (w + GRID_GAP), (i // cols) * (h + GRID_GAP)))
    return out


def _png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


@dataclass
class _Group:
    """A count-k job in flight: its sub-jobs, what they reported, how they ended."""

    job: ImagineJob
    ctx: JobContext
    subs: list[ImagineJob]
    to_feed: deque[int]
    results: dict[int, Outcome | BaseException] = field(default_factory=dict)
    steps: dict[int, tuple[int, int, float | None]] = field(default_factory=dict)  # i -> (step, total, loss)
    previews: dict[int, bytes] = field(default_factory=dict)
    fresh_preview: bool = False
    reported: bool = False
    error: BaseException | None = None
    done: bool = False  # its final result went out

    def record(self, i: int, step: int, total: int, loss: float | None, preview: bytes | None) -> None:
        self.steps[i] = (step, total, loss)
        if preview is not None:
            self.previews[i] = preview
            self.fresh_preview = True
        self.reported = True

    def flush(self) -> None:
        """After an engine step: one progress event for the whole group, if any picture moved."""
        if not self.reported or self.done:
            return
        self.reported = False
        step = min(self.steps.get(i, (0, 0, None))[0] for i in range(len(self.subs)))
        total = max(t for _, t, _ in self.steps.values())
        losses = [x for _, _, x in self.steps.values() if x is not None and math.isfinite(x)]
        preview = None
        if self.fresh_preview:
            self.fresh_preview = False
            cells = [_png(self.previews[i]) if i in self.previews else None for i in range(len(self.subs))]
            preview = encode_png(grid_image(cells), compress_level=1)
        self.ctx.progress(step, total, sum(losses) / len(losses) if losses else None, preview)


class _SubContext:
    """The context of one picture of a group: blobs and cancellation from the job's own context."""

    def __init__(self, group: _Group, index: int):
        self.group, self.index = group, index
        self.job = group.subs[index]

    def progress(self, step: int, total: int, loss: float | None = None, preview_png: bytes | None = None) -> None:
        self.group.record(self.index, step, total, loss, preview_png)

    def cancelled(self) -> bool:
        return self.group.error is not None or self.group.ctx.cancelled()

    def blob(self, key: str) -> bytes:
        return self.group.ctx.blob(key)


class VariationsEngine:
    """An ImagineEngine that also takes count > 1 jobs. Not thread-safe: one loop drives it."""

    def __init__(self, engine: ImagineEngine):
        self.engine = engine
        self._pending: deque[_Group | tuple[ImagineJob, JobContext]] = deque()
        self._groups: dict[str, tuple[_Group, int]] = {}  # sub-job id -> (group, index)
        self._finished: list[tuple[ImagineJob, Outcome | BaseException]] = []

    def __getattr__(self, name: str):  # config, size, clip, resolve_size...: the engine's
        return getattr(self.engine, name)

    @property
    def capacity(self) -> int:
        return self.engine.capacity

    @property
    def active(self) -> int:
        """Pictures held: in the engine, and waiting here for room."""
        waiting = sum(len(p.to_feed) if isinstance(p, _Group) else 1 for p in self._pending)
        return self.engine.active + waiting

    def add(self, job: ImagineJob | Mapping[str, Any], ctx: JobContext) -> ImagineJob:
        """Queue a job; bad input (prompt, size, steps) raises JobError at once."""
        job = as_job(job)
        parse_prompts(job.prompt)
        self.engine.resolve_size(job.width, job.height)
        self.engine.resolve_steps(job.steps)
        if job.count == 1:
            item: _Group | tuple[ImagineJob, JobContext] = (job, ctx)
        else:
            seed = job.seed if job.seed is not None else secrets.randbelow(SEED_MODULUS)
            subs = [job.model_copy(update={"id": f"{job.id}/{i + 1}", "seed": s, "count": 1})
                    for i, s in enumerate(variation_seeds(seed, job.count))]
            item = _Group(job, ctx, subs, deque(range(job.count)))
        self._pending.append(item)
        if len(self._pending) == 1:  # nothing waits ahead of it: it enters now, and bad input raises here
            self._feed(raising=item)
        return job

    def step(self) -> None:
        self._drop_cancelled_pending()
        self._feed()
        if self.engine.active:
            self.engine.step()
        for group in {id(g): g for g, _ in self._groups.values()}.values():
            group.flush()
        for sub, result in self.engine.pop_finished():
            self._collect(sub, result)
        self._feed()  # the next batch's jobs are prepared now, not one step later

    def pop_finished(self) -> list[tuple[ImagineJob, Outcome | BaseException]]:
        out, self._finished = self._finished, []
        return out

    # ------------------------------------------------------------------ scheduling

    def _drop_cancelled_pending(self) -> None:
        for p in list(self._pending):
            job, ctx = (p.job, p.ctx) if isinstance(p, _Group) else p
            if isinstance(p, _Group) and len(p.to_feed) < len(p.subs):
                continue  # partly in the engine: its sub-contexts see the cancel there
            if ctx.cancelled():
                self._pending.remove(p)
                self._finished.append((job, JobCancelled()))

    def _feed(self, raising: object = None) -> None:
        """Move waiting jobs into the engine, in order, a group only when all of it fits (or when
        the engine is empty and the group is larger than its batch). An error of `raising` (the
        job being added) is raised; any other job's error becomes its result."""
        while self._pending:
            head = self._pending[0]
            free = self.engine.capacity - self.engine.active
            if not isinstance(head, _Group):
                if free < 1:
                    return
                self._pending.popleft()
                job, ctx = head
                try:
                    self.engine.add(job, ctx)
                except Exception as e:  # reported as this job's end, like the engine's own
                    if head is raising:
                        raise
                    self._finished.append((job, e))
                continue
            if len(head.to_feed) > free and self.engine.active > 0:
                return  # wait for room, so the pictures start (and finish) together
            while head.to_feed and head.error is None and self.engine.active < self.engine.capacity:
                i = head.to_feed.popleft()
                self._groups[head.subs[i].id] = (head, i)
                try:
                    self.engine.add(head.subs[i], _SubContext(head, i))
                except Exception as e:  # becomes the group's error
                    if head is raising:
                        head.error, head.done = e, True  # pictures already in stop as cancelled, unreported
                        self._groups.pop(head.subs[i].id, None)
                        self._pending.popleft()
                        raise
                    self._collect(head.subs[i], e)
            if head.to_feed and head.error is None:
                return
            self._pending.popleft()
            if head.error is not None:
                for i in head.to_feed:  # never started: nothing to wait for
                    head.results[i] = JobCancelled()
                head.to_feed.clear()
                self._settle(head)

    # ------------------------------------------------------------------ endings

    def _collect(self, sub: ImagineJob, result: Outcome | BaseException) -> None:
        entry = self._groups.pop(sub.id, None)
        if entry is None:  # a count=1 job: the engine's result is the job's
            self._finished.append((sub, result))
            return
        group, i = entry
        group.results[i] = result
        if isinstance(result, BaseException) and group.error is None:
            group.error = result  # the other pictures see it through cancelled() and stop
        self._settle(group)

    def _settle(self, group: _Group) -> None:
        if group.done:
            return
        if group.error is not None:
            group.done = True
            self._finished.append((group.job, group.error))
        elif len(group.results) == len(group.subs):
            group.done = True
            try:
                outcome = self._merge(group)
            except Exception as e:  # the job's end, as an engine error would be
                outcome = e
            self._finished.append((group.job, outcome))

    def _merge(self, group: _Group) -> Outcome:
        outcomes = [group.results[i] for i in range(len(group.subs))]
        budget = self.engine.config.frames_max_bytes // len(outcomes)
        blobs: dict[str, bytes] = {}
        pictures = []
        for i, out in enumerate(outcomes, 1):
            suffix = "" if i == 1 else f"_{i}"
            frame_blobs = {n: b for n, b in out.blobs.items() if n not in ("png", "gif")}
            frames, frame_blobs = fit_budget(out.data.get("frames", []), frame_blobs, budget)
            blobs.update({n + suffix: b for n, b in [*frame_blobs.items(), ("png", out.blobs["png"]),
                                                      ("gif", out.blobs["gif"])]})
            d = out.data
            pictures.append({"index": i, "seed": d["seed"], "clip_score": d["clip_score"], "loss": d["loss"],
                             "png": "png" + suffix, "gif": "gif" + suffix,
                             "frames": [{"step": f["step"], "blob": f["blob"] + suffix} for f in frames]})
        blobs["grid"] = encode_png(grid_image([_png(out.blobs["png"]) for out in outcomes]))
        data = dict(outcomes[0].data)
        data.update(seconds=max(out.data["seconds"] for out in outcomes), frames=pictures[0]["frames"],
                    count=len(outcomes), grid="grid", pictures=pictures)
        return Outcome(data=data, blobs=blobs)


def imagine(clip, vqgan, job: ImagineJob | Mapping[str, Any], ctx: JobContext, config=None) -> Outcome:
    """Run one job (any count) alone: the CLI's and the benchmarks' path."""
    return run_alone(VariationsEngine(ImagineEngine(clip, vqgan, config)), job, ctx)
