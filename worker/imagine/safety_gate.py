"""The safety check around the batched imagine engine, for jobs that carry a `SafetyPolicy`.

* `add`: a flagged init image fails the job at once with a clear JobError (the engine never sees it).
* finished generations are scored and marked: `Outcome.data["safety"]` holds the verdict, which the
  bot reads with `jobs.schemas.safety_of` (posted as a spoiler, kept out of /find and the hall of fame).

Scoring happens inside `step()`, which the worker runs in a thread, so the event loop never waits
on a CLIP forward; `pop_finished` only hands over what `step()` already scored.
"""
from __future__ import annotations

import io
import logging

from PIL import Image

from jobs.schemas import ImagineJob
from jobs.validation import JobError
from jobs.validation.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from worker.api import JobContext, Outcome
from worker.clip.model import Clip
from worker.clip.safety import check, refuse_if_flagged
from worker.imagine.engine import as_job

log = logging.getLogger(__name__)


class SafetyGate:
    """Wraps any batch engine (add / step / pop_finished / capacity / active); adds nothing for
    jobs without a policy."""

    def __init__(self, engine, clip: Clip):
        self.engine, self.clip = engine, clip
        self._done: list[tuple[ImagineJob, Outcome | BaseException]] = []

    def __getattr__(self, name):  # config, model_name, ...: whatever else the engine offers
        return getattr(self.engine, name)

    @property
    def capacity(self) -> int:
        return self.engine.capacity

    @property
    def active(self) -> int:
        return self.engine.active

    def add(self, job, ctx: JobContext) -> ImagineJob:
        job = as_job(job)
        if job.safety is not None and job.init_image:
            image = decode_image(ctx.blob(job.init_image), max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS,
                                 min_side=2 * self.clip.image_size)
            refuse_if_flagged(self.clip, image, job.safety, what=f"init image of {job.id}")
        return self.engine.add(job, ctx)

    def step(self) -> None:
        self.engine.step()
        self._done += [self._mark(job, result) for job, result in self.engine.pop_finished()]

    def pop_finished(self) -> list[tuple[ImagineJob, Outcome | BaseException]]:
        done, self._done = self._done, []
        return done + [self._mark(job, result) for job, result in self.engine.pop_finished()]

    def _mark(self, job: ImagineJob, result: Outcome | BaseException) -> tuple[ImagineJob, Outcome | BaseException]:
        if job.safety is None or not isinstance(result, Outcome) or "png" not in result.blobs:
            return job, result
        try:
            image = Image.open(io.BytesIO(result.blobs["png"]))
            image.load()
            verdict = check(self.clip, image, job.safety, what=f"generation {job.id}")
        except JobError as e:
            return job, e
        result.data["safety"] = verdict.model_dump()
        return job, result
