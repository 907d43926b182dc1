"""The queue worker: takes jobs from Redis, runs the engines, publishes events.

One asyncio loop per process. Each lane (fast: classify/index/find; imagine) has its own task,
so a CLIP query never waits behind a generation. Engines are synchronous and run in threads.

* Serial lane: one job at a time, `handler(job, ctx) -> Outcome`.
* Batch lane (imagine, when the setup has a batching engine): up to `engine.capacity` jobs are
  optimised together; between two `engine.step()` calls the lane takes more jobs without
  blocking, so a new prompt joins the running batch instead of waiting for it to end.

A heartbeat task keeps every claim fresh (so a long job is never stolen), reads cancel flags,
and keeps this worker's registry entry alive. SIGTERM: stop taking jobs, let running ones finish
for `shutdown_grace_s`, then ask them to stop and give them back to the queue (not counted as a
failed delivery).
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.schemas import Cancelled, Failed, Job, Result
from jobs.transport import FAST, IMAGINE, BlobTooLarge, Delivery, Queue, WorkerInfo, cancel_by, lane_of
from worker.api import JobCancelled, JobContext, JobError, Outcome
from worker.context import RedisJobContext

log = logging.getLogger(__name__)
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

Handler = Callable[[Job, JobContext], Outcome]


class BatchEngine(Protocol):
    """An engine that optimises several jobs at once (VQGAN+CLIP). All methods are sync."""

    capacity: int  # most jobs at once

    @property
    def active(self) -> int: ...

    def add(self, job: Job, ctx: JobContext) -> None:
        """Start a job (may raise JobError for bad input: the job fails at once)."""

    def step(self) -> None:
        """One optimisation step for every active job. Per-job failures and cancellations are
        reported by pop_finished, not raised; raising here means the engine itself is broken."""

    def pop_finished(self) -> list[tuple[Job, Outcome | BaseException]]:
        """Jobs that ended since the last call, with their Outcome or exception
        (JobError, JobCancelled, or anything else = unexpected)."""


@dataclass
class WorkerSetup:
    """What a handlers factory (`CLIPBOT_HANDLERS=module:function`) returns."""

    handlers: dict[str, Handler] = field(default_factory=dict)  # kind -> handler
    imagine_engine: BatchEngine | None = None  # takes imagine jobs instead of handlers["imagine"]
    models: list[str] = field(default_factory=list)  # shown in the registry
    device: str = "cpu"
    close: Callable[[], None] | None = None

    def lanes(self) -> list[str]:
        kinds = set(self.handlers)
        out = [FAST] if kinds & {"classify", "index", "find"} else []
        if self.imagine_engine is not None or "imagine" in kinds:
            out.append(IMAGINE)
        return out


def load_setup(spec: str, settings) -> WorkerSetup:
    """Build the worker's handlers from 'module:function'; the function takes the Settings and
    returns a WorkerSetup (or a plain dict kind -> handler)."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise RuntimeError(f"CLIPBOT_HANDLERS={spec!r}: module {mod_name} not found") from e
        raise
    fn = getattr(mod, fn_name or "build", None)
    if fn is None:
        raise RuntimeError(f"CLIPBOT_HANDLERS={spec!r}: {mod_name} has no function {fn_name or 'build'}")
    setup = fn(settings)
    return setup if isinstance(setup, WorkerSetup) else WorkerSetup(handlers=dict(setup))


@dataclass
class _Running:
    delivery: Delivery
    ctx: RedisJobContext


class Worker:
    def __init__(
        self,
        queue: Queue,
        setup: WorkerSetup,
        *,
        worker_id: str | None = None,
        heartbeat_s: float = 5.0,
        progress_interval_s: float = 1.0,
        cancel_check_s: float = 0.25,
        shutdown_grace_s: float = 20.0,
        block_ms: int = 1000,
        heartbeat_file: str | os.PathLike | None = None,
    ):
        self.queue = queue
        self.setup = setup
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat_s = heartbeat_s
        self.progress_interval_s = progress_interval_s
        self.cancel_check_s = cancel_check_s
        self.shutdown_grace_s = shutdown_grace_s
        self.block_ms = block_ms
        self.heartbeat_file = heartbeat_file
        self.running: dict[str, _Running] = {}
        self.stopping = asyncio.Event()
        self.hard_stop = threading.Event()  # read by engine threads through ctx.cancelled()
        self.started = time.time()
        self.jobs_done = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reclaim_every = max(queue.visibility_timeout_s / 2, 0.2)

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Graceful stop (SIGTERM). A second call stops at once (running jobs are released)."""
        if self.stopping.is_set():
            self.hard_stop.set()
            return
        log.info("worker %s stopping: %d running job(s)", self.id, len(self.running))
        self.stopping.set()
        if self._loop is not None:
            self._loop.call_later(self.shutdown_grace_s, self.hard_stop.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        lanes = self.setup.lanes()
        if not lanes:
            raise RuntimeError("this worker has no handlers: nothing to serve")
        await self._retry(self._register)
        for lane in lanes:
            await self._retry(lambda lane=lane: self.queue.prune_consumers(lane))
        tasks = []
        for lane in lanes:
            if lane == IMAGINE and self.setup.imagine_engine is not None:
                tasks.append(asyncio.create_task(self._batch_lane(lane, self.setup.imagine_engine)))
            else:
                tasks.append(asyncio.create_task(self._serial_lane(lane)))
        beat = asyncio.create_task(self._heartbeat_loop())
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            try:
                await self.queue.unregister_worker(self.id)
            except _REDIS_DOWN:
                pass
            log.info("worker %s stopped after %d job(s)", self.id, self.jobs_done)

    # ------------------------------------------------------------------ lanes

    async def _fetch(self, lane: str, count: int, block: bool, state: dict) -> list[Delivery]:
        """Reclaimed jobs first (every half visibility timeout), then new ones."""
        out: list[Delivery] = []
        now = time.monotonic()
        if now - state.get("reclaimed", 0.0) >= self._reclaim_every:
            state["reclaimed"] = now
            out = await self.queue.reclaim(lane, self.id, count)
        if len(out) < count:
            out += await self.queue.take(lane, self.id, count - len(out), self.block_ms if block else None)
        if self.stopping.is_set():  # arrived as we were told to stop: give them straight back
            for d in out:
                await self.queue.release(d, refund=True)
            return []
        return out

    async def _serial_lane(self, lane: str) -> None:
        state: dict = {}
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                for d in await self._fetch(lane, 1, True, state):
                    await self._run_serial(d)
                backoff = 0.1
            except _REDIS_DOWN as e:
                log.warning("lane %s: redis unavailable (%s); retrying in %.1fs", lane, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # noqa: BLE001 - a bug must not stop the other jobs; the job is reclaimed
                log.exception("lane %s: unexpected error; retrying in %.1fs", lane, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _run_serial(self, d: Delivery) -> None:
        ctx = self._context(d)
        handler = self.setup.handlers.get(d.job.kind)
        self.running[d.job.id] = _Running(d, ctx)
        try:
            if d.cancel_requested:
                result: Outcome | BaseException = JobCancelled()
            elif handler is None:
                result = JobError(f"This worker cannot run {d.job.kind} jobs.")
            else:
                try:
                    result = await asyncio.to_thread(handler, d.job, ctx)
                except Exception as e:  # noqa: BLE001 - every failure becomes an event
                    result = e
            await self._complete(d, ctx, result)
        finally:
            self.running.pop(d.job.id, None)

    async def _batch_lane(self, lane: str, engine: BatchEngine) -> None:
        state: dict = {}
        backoff = 0.1
        while True:
            try:
                free = engine.capacity - engine.active
                if free > 0 and not self.stopping.is_set():
                    # block only when idle: a running batch must keep stepping
                    for d in await self._fetch(lane, free, engine.active == 0, state):
                        await self._add_to_batch(engine, d)
                if engine.active:
                    try:
                        await asyncio.to_thread(engine.step)
                    except Exception as e:
                        log.exception("batch engine failed; giving its jobs back")
                        error = f"engine crashed: {e!r}"
                        for r in list(self.running.values()):
                            if r.delivery.lane == lane:
                                await self._retry(lambda r=r: self.queue.release(r.delivery, error=error))
                                self.running.pop(r.delivery.job.id, None)
                        raise
                for job, result in engine.pop_finished():
                    r = self.running.pop(job.id, None)
                    if r is not None:
                        await self._complete(r.delivery, r.ctx, result)
                if self.stopping.is_set() and engine.active == 0:
                    return
                backoff = 0.1
            except _REDIS_DOWN as e:
                log.warning("lane %s: redis unavailable (%s); retrying in %.1fs", lane, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _add_to_batch(self, engine: BatchEngine, d: Delivery) -> None:
        ctx = self._context(d)
        if d.cancel_requested:
            return await self._complete(d, ctx, JobCancelled())
        try:
            await asyncio.to_thread(engine.add, d.job, ctx)
        except Exception as e:  # noqa: BLE001
            return await self._complete(d, ctx, e)
        self.running[d.job.id] = _Running(d, ctx)

    def _context(self, d: Delivery) -> RedisJobContext:
        assert self._loop is not None
        return RedisJobContext(self.queue, d, self._loop, progress_interval_s=self.progress_interval_s,
                               cancel_check_s=self.cancel_check_s, hard_stop=self.hard_stop)

    # ------------------------------------------------------------------ endings

    async def _complete(self, d: Delivery, ctx: RedisJobContext, result: Outcome | BaseException) -> None:
        """Turn what the engine produced into the job's final event (or give the job back)."""
        q, job = self.queue, d.job
        if ctx.lost:
            log.warning("job %s: claim lost to another worker; dropping our result", job.id)
            return
        if isinstance(result, JobCancelled):
            if ctx.user_cancelled:
                ev = Cancelled(job_id=job.id, seq=0, by=cancel_by(ctx.cancel_flag))
            else:  # shutting down: somebody else will run it; this attempt does not count
                await self._retry(lambda: q.release(d, refund=True))
                log.info("job %s released for another worker", job.id)
                return
        elif isinstance(result, JobError):
            ev = Failed(job_id=job.id, seq=0, reason=str(result) or "The job failed.")
        elif isinstance(result, BaseException):
            log.error("job %s (attempt %d) crashed: %r", job.id, d.attempt, result, exc_info=result)
            # unexpected: retried (maybe on another worker) until max deliveries, then dead-lettered
            await self._retry(lambda: q.release(d, error=f"{type(result).__name__}: {result}"[:300]))
            return
        else:
            try:
                keys = {name: await self._retry(lambda b=b: q.put_blob(b)) for name, b in result.blobs.items()}
                ev = Result(job_id=job.id, seq=0, data=result.data, blobs=keys)
            except BlobTooLarge as e:
                ev = Failed(job_id=job.id, seq=0, reason=f"The result was too large to deliver ({e}).")
        seq = await self._retry(lambda: q.finish(d, ev))
        if seq is None:
            log.warning("job %s: claim lost before finishing; the other worker's result stands", job.id)
        else:
            self.jobs_done += 1

    async def _retry(self, make_call, max_wait_s: float = 300.0):
        """Retry a Redis call through an outage (e.g. a Redis restart). If Redis stays away, the
        job stays unacked and another worker reclaims it later: nothing is lost."""
        delay, deadline = 0.1, time.monotonic() + max_wait_s
        while True:
            try:
                return await make_call()
            except _REDIS_DOWN as e:
                if time.monotonic() > deadline:
                    raise
                log.warning("redis unavailable (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ heartbeat

    async def _register(self) -> None:
        info = WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), models=list(self.setup.models),
            device=self.setup.device, lanes=self.setup.lanes(), current=list(self.running),
            started=self.started,
        )
        await self.queue.register_worker(info, ttl_s=max(3 * self.heartbeat_s, 2.0))

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                running = list(self.running.values())
                if running:
                    states = await self.queue.heartbeat(self.id, [r.delivery for r in running])
                    for r in running:
                        ours, flag = states.get(r.delivery.job.id, (True, ""))
                        if not ours:
                            r.ctx.lost = True
                        if flag:
                            r.ctx.cancel_flag = flag
                await self._register()
                if self.heartbeat_file:
                    with open(self.heartbeat_file, "a"):
                        os.utime(self.heartbeat_file)
            except _REDIS_DOWN as e:
                log.warning("heartbeat failed: %s", e)
            except Exception:  # noqa: BLE001 - the heartbeat must never die
                log.exception("heartbeat error")
            await asyncio.sleep(self.heartbeat_s)


def worker_from_settings(queue: Queue, setup: WorkerSetup, settings) -> Worker:
    return Worker(
        queue, setup, worker_id=settings.worker_id, heartbeat_s=settings.heartbeat_s,
        progress_interval_s=settings.progress_interval_s, cancel_check_s=settings.cancel_check_s,
        shutdown_grace_s=settings.shutdown_grace_s, heartbeat_file=settings.heartbeat_file,
    )


def spawn_worker(redis_url: str, env: dict[str, str] | None = None, **popen_kw) -> subprocess.Popen:
    """Start `python -m worker --redis URL` as a child process (the bot's local worker, tests)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "worker", "--redis", redis_url], env=full_env, **popen_kw)


__all__ = ["BatchEngine", "Handler", "Worker", "WorkerSetup", "load_setup", "spawn_worker",
           "worker_from_settings", "lane_of"]
