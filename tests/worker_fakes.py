"""TEST ONLY: cheap fake engines for the queue worker, selected with
CLIPBOT_HANDLERS=tests.worker_fakes:build. Never used by production code.

What the fake jobs do is driven by the job itself so one worker serves every scenario:

* classify: reads its image blob and echoes it back as a result blob (proves blobs round-trip);
* find: query "sleep:<seconds>" sleeps in 0.05 s steps with progress and cancel checks;
  "error" raises JobError; "boom" raises RuntimeError (a crash: retried); anything else is quick;
* imagine: a batching engine (capacity 3), `steps` steps (default 5) of `CLIPBOT_FAKE_STEP_S`.

Every result carries the worker's pid so tests can tell who ran a job.
"""
from __future__ import annotations

import os
import time

from worker.api import JobCancelled, JobError, Outcome
from worker.setup import WorkerSetup


def classify(job, ctx):
    data = ctx.blob(job.image)
    ctx.progress(1, 1)
    return Outcome(data={"labels": [{"label": label, "score": 1 / len(job.labels)} for label in job.labels],
                         "pid": os.getpid()}, blobs={"echo": data})


def find(job, ctx):
    q = job.query or ""
    if q == "error":
        raise JobError("bad query: try another")
    if q == "boom":
        raise RuntimeError("engine bug")
    if q.startswith("sleep:"):
        total_s = float(q.split(":", 1)[1])
        steps = max(1, int(total_s / 0.05))
        for i in range(steps):
            if ctx.cancelled():
                raise JobCancelled()
            time.sleep(0.05)
            ctx.progress(i + 1, steps)
    return Outcome(data={"hits": [], "query": q, "pid": os.getpid()})


def index(job, ctx):
    return Outcome(data={"added": len(job.add), "pid": os.getpid()})


class FakeBatchEngine:
    """Steps every active job once per step(), like the VQGAN+CLIP batch optimiser."""

    def __init__(self, capacity: int = 3, step_s: float = 0.02):
        self.capacity = capacity
        self.step_s = step_s
        self.jobs: dict[str, list] = {}  # id -> [job, ctx, done steps, total]
        self.finished: list = []
        self.max_active = 0
        self.steps_run = 0

    @property
    def active(self) -> int:
        return len(self.jobs)

    def add(self, job, ctx) -> None:
        if job.prompt == "invalid":
            raise JobError("that prompt is not allowed")
        self.jobs[job.id] = [job, ctx, 0, job.steps or 5]
        self.max_active = max(self.max_active, len(self.jobs))

    def step(self) -> None:
        time.sleep(self.step_s)
        self.steps_run += 1
        for jid, rec in list(self.jobs.items()):
            job, ctx, done, total = rec
            if ctx.cancelled():
                self.finished.append((job, JobCancelled()))
                del self.jobs[jid]
                continue
            rec[2] = done = done + 1
            ctx.progress(done, total, loss=1.0 / done)
            if done >= total:
                self.finished.append((job, Outcome(data={"steps": total, "batch_peak": self.max_active,
                                                         "pid": os.getpid()}, blobs={"png": b"\x89PNG fake"})))
                del self.jobs[jid]

    def pop_finished(self):
        out, self.finished = self.finished, []
        return out


def build(settings) -> WorkerSetup:
    step_s = float(os.environ.get("CLIPBOT_FAKE_STEP_S", "0.02"))
    return WorkerSetup(handlers={"classify": classify, "find": find, "index": index},
                       imagine_engine=FakeBatchEngine(step_s=step_s), models=["fake"], device="cpu")


def build_serial(settings) -> WorkerSetup:
    """The same fakes, imagine included as a plain handler (no batching)."""
    def imagine(job, ctx):
        eng = FakeBatchEngine(capacity=1)
        eng.add(job, ctx)
        while eng.active:
            eng.step()
        (_, res), = eng.pop_finished()
        if isinstance(res, BaseException):
            raise res
        return res

    return WorkerSetup(handlers={"classify": classify, "find": find, "index": index, "imagine": imagine})


# --- a fake CLI subcommand, to test worker.cli's plumbing without the real engines
def add_echo_arguments(parser) -> None:
    parser.add_argument("query")


def echo_main(args, runner) -> int:
    import json

    from jobs.schemas import FindJob

    events = []
    out = runner.run(FindJob(query=args.query), events.append)
    if args.json:
        print(json.dumps({"data": out.data, "events": [e.type for e in events]}))
    else:
        print(f"query {out.data['query']}: {len(events)} events")
    return 0
