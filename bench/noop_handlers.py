"""Job handlers for the queue benchmark: `CLIPBOT_HANDLERS=bench.noop_handlers:build`.

A find job with query "noop" returns at once, so the queue's own cost is what is measured;
"sleep:<seconds>" works that long in 50 ms steps (checking cancellation, as real engines do),
which the SIGKILL benchmark uses as a busy job. No model is loaded.
"""
from __future__ import annotations

import os
import time

from worker.api import JobCancelled, Outcome
from worker.setup import WorkerSetup


def find(job, ctx) -> Outcome:
    q = job.query or ""
    if q.startswith("sleep:"):
        end = time.monotonic() + float(q.split(":", 1)[1])
        while time.monotonic() < end:
            if ctx.cancelled():
                raise JobCancelled()
            time.sleep(0.05)
    return Outcome(data={"pid": os.getpid()})


def build(settings) -> WorkerSetup:
    return WorkerSetup(handlers={"find": find}, models=["noop"], device="cpu")
