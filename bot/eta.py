"""How long a queued generation will wait: from the imagine queue and the step times the workers
measure (`WorkerInfo.step_s`, seconds per step of one picture, per requested size).

The estimate: the picture-steps still ahead of the job (the queued jobs before it, half of each
running job, and its own) divided by the workers' combined rate for that size. Workers that have not
measured the size yet count with their average over sizes they have; with no measurement at all
there is no estimate (None), and nothing is shown.
"""
from __future__ import annotations

from jobs.keys import IMAGINE
from jobs.registry import WorkerInfo, size_key
from jobs.schemas import ImagineJob


def steps_of(job: ImagineJob, default_steps: int) -> int:
    """Picture-steps of a job: its steps (0: the default) times its pictures."""
    return (job.steps or default_steps) * job.count


def rate(workers: list[WorkerInfo], key: str) -> float:
    """Picture-steps per second all imagine workers together manage for this size."""
    total = 0.0
    for w in workers:
        if IMAGINE not in w.lanes or not w.step_s:
            continue
        s = w.step_s.get(key) or sum(w.step_s.values()) / len(w.step_s)
        if s > 0:
            total += 1.0 / s
    return total


async def queue_etas(queue, default_steps: int, workers: list[WorkerInfo] | None = None) -> dict[str, float | None]:
    """Every queued imagine job's estimated seconds until done (None: unknown), in queue order."""
    workers = await queue.workers() if workers is None else workers
    steps = 0.0
    for w in workers:
        for running_id in w.current:
            other = await queue.job(running_id)
            if isinstance(other, ImagineJob):
                steps += steps_of(other, default_steps) / 2  # progress is not stored: assume half done
    out: dict[str, float | None] = {}
    for job_id, _ in await queue.waiting(IMAGINE):
        job = await queue.job(job_id)
        if not isinstance(job, ImagineJob):
            continue
        steps += steps_of(job, default_steps)
        per_s = rate(workers, size_key(job.width, job.height))
        out[job_id] = steps / per_s if per_s > 0 else None
    return out


def describe(seconds: float | None) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 20 min'; '' when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"
