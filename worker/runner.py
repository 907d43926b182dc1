"""Runners: how the local CLI runs a job. Both implement `worker.api.Runner`.

* `LocalRunner`: in this process, handlers called directly (no Redis at all).
* `RedisRunner(url)`: submitted through the queue to whatever workers serve that Redis; the
  runner follows the job's events until the final one. Ctrl-C cancels the job.

Either way the caller sees the same events (Queued, Started, Progress..., final) and gets an
`Outcome` back, or `JobError` / `JobCancelled`.
"""
from __future__ import annotations

import asyncio
import secrets
import sys
import threading
from collections.abc import Callable

from jobs.queue import Queue, queue_from_url
from jobs.schemas import Cancelled, Event, Failed, Job, Progress, Queued, Result, Started
from worker.api import JobCancelled, JobError, Outcome

OnEvent = Callable[[Event], None] | None


class LocalContext:
    """JobContext for in-process runs: progress goes straight to a callback."""

    def __init__(self, job: Job, blobs: dict[str, bytes], emit: Callable[..., None], cancel: threading.Event):
        self.job = job
        self._blobs = blobs
        self._emit = emit
        self._cancel = cancel

    def progress(self, step: int, total: int, loss: float | None = None, preview_png: bytes | None = None) -> None:
        preview = None
        if preview_png is not None:
            preview = secrets.token_hex(16)
            self._blobs[preview] = preview_png
        self._emit(Progress, step=step, total=total, loss=loss, preview=preview)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def blob(self, key: str) -> bytes:
        try:
            return self._blobs[key]
        except KeyError:
            raise JobError(f"blob {key} is missing") from None


class LocalRunner:
    """Runs jobs in this process. `setup` is a WorkerSetup or a function building one; it is
    built on the first run, so `--help` and argument errors never load a model."""

    def __init__(self, setup):
        self._setup_or_factory = setup
        self._setup = None
        self.blobs: dict[str, bytes] = {}
        self.cancel_event = threading.Event()

    @property
    def setup(self):
        if self._setup is None:
            s = self._setup_or_factory
            self._setup = s() if callable(s) else s
        return self._setup

    def put_blob(self, data: bytes) -> str:
        key = secrets.token_hex(16)
        self.blobs[key] = data
        return key

    def run(self, job: Job, on_event: OnEvent = None) -> Outcome:
        seq = 0

        def emit(cls, **fields):
            nonlocal seq
            seq += 1
            if on_event is not None:
                on_event(cls(job_id=job.id, seq=seq, **fields))

        emit(Queued, position=0)
        setup = self.setup
        ctx = LocalContext(job, self.blobs, emit, self.cancel_event)
        emit(Started, worker="local")
        try:
            if job.kind == "imagine" and setup.imagine_engine is not None:
                outcome = _run_batched(setup.imagine_engine, job, ctx)
            else:
                handler = setup.handlers.get(job.kind)
                if handler is None:
                    raise JobError(f"no engine for {job.kind} jobs is installed")
                outcome = handler(job, ctx)
        except JobError as e:
            emit(Failed, reason=str(e))
            raise
        except JobCancelled:
            emit(Cancelled, by=None)
            raise
        keys = {name: self.put_blob(b) for name, b in outcome.blobs.items()}
        emit(Result, data=outcome.data, blobs=keys)
        return outcome


def _run_batched(engine, job: Job, ctx) -> Outcome:
    """Drive a batching engine for a single job."""
    engine.add(job, ctx)
    while True:
        engine.step()
        for done_job, result in engine.pop_finished():
            if done_job.id == job.id:
                if isinstance(result, BaseException):
                    raise result
                return result


class RedisRunner:
    """Runs jobs on the workers behind a Redis: submit, then follow the events stream."""

    def __init__(self, url: str, settings=None, *, timeout_s: float | None = None,
                 warn: Callable[[str], None] | None = None):
        self.url = url
        self.settings = settings
        self.timeout_s = timeout_s
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))

    def _queue(self) -> Queue:
        return queue_from_url(self.url, self.settings)

    def put_blob(self, data: bytes) -> str:
        async def go():
            q = self._queue()
            try:
                return await q.put_blob(data)
            finally:
                await q.redis.aclose()

        return asyncio.run(go())

    def run(self, job: Job, on_event: OnEvent = None) -> Outcome:
        try:
            return asyncio.run(self._run(job, on_event))
        except KeyboardInterrupt:
            asyncio.run(self.cancel(job.id))
            raise

    async def cancel(self, job_id: str) -> bool:
        q = self._queue()
        try:
            return await q.cancel(job_id)
        finally:
            await q.redis.aclose()

    async def _run(self, job: Job, on_event: OnEvent) -> Outcome:
        q = self._queue()
        try:
            res = await q.submit(job, user_limit=0)  # the local CLI is not rate-limited
            if not res.accepted:
                raise JobError(res.reason or "the queue refused the job")
            if not await q.workers():
                self.warn(f"warning: no live worker serves {self.url}; the job waits until one starts")
            if on_event is not None:
                on_event(Queued(job_id=job.id, seq=1, position=res.position))
            async for ev in q.follow(job.id, after=res.event_id or "0-0", timeout_s=self.timeout_s):
                if on_event is not None:
                    on_event(ev)
                if isinstance(ev, Result):
                    blobs = {}
                    for name, key in ev.blobs.items():
                        data = await q.get_blob(key)
                        if data is None:
                            raise JobError(f"result {name} expired before it could be fetched")
                        blobs[name] = data
                    await q.delete_blobs(*ev.blobs.values())  # fetched: this command was their only reader
                    return Outcome(data=ev.data, blobs=blobs)
                if isinstance(ev, Failed):
                    raise JobError(ev.reason)
                if isinstance(ev, Cancelled):
                    raise JobCancelled(f"job {job.id} was cancelled")
            raise JobError("the events stream ended without a result")
        finally:
            await q.redis.aclose()
