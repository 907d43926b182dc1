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
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from jobs.claims import Claim
from jobs.client import BlobTooLarge, cancel_by
from jobs.keys import IMAGINE
from jobs.queue import Queue
from jobs.registry import WorkerInfo
from jobs.retry import DEFAULT_RETRY, REDIS_DOWN, RetryPolicy
from jobs.schemas import Cancelled, Failed, Result
from worker.api import JobCancelled, JobError, Outcome
from worker.context import RedisJobContext
from worker.metrics import WorkerMetrics
from worker.setup import BatchEngine, WorkerSetup
from worker.step_rates import StepRates

log = logging.getLogger(__name__)


@dataclass
class _Running:
    claim: Claim
    ctx: RedisJobContext


class Worker:
    def __init__(
        self,
        queue: Queue,
        setup: WorkerSetup,
        *,
        worker_id: str | None = None,
        heartbeat_s: float = 5.0,
        dead_after_beats: int = 3,
        progress_interval_s: float = 1.0,
        cancel_check_s: float = 0.25,
        shutdown_grace_s: float = 20.0,
        block_ms: int = 1000,
        heartbeat_file: str | os.PathLike | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        metrics_port: int | None = None,
    ):
        self.queue = queue
        self.setup = setup
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat_s = heartbeat_s
        # registry TTL, and how long a worker's jobs sit unheartbeaten before a live worker takes
        # them over (floored: a loaded machine may delay one beat by a second)
        self.dead_after_s = max(dead_after_beats * heartbeat_s, 2.0)
        self.progress_interval_s = progress_interval_s
        self.cancel_check_s = cancel_check_s
        self.shutdown_grace_s = shutdown_grace_s
        self.block_ms = block_ms
        self.heartbeat_file = heartbeat_file
        self.retry = retry
        self.metrics = WorkerMetrics()
        self.metrics_port = metrics_port
        self.running: dict[str, _Running] = {}
        self.stopping = asyncio.Event()
        self.hard_stop = threading.Event()  # read by engine threads through ctx.cancelled()
        self.started = time.time()
        self.step_rates = StepRates()
        self.jobs_done = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reclaim_every = max(queue.visibility_timeout_s / 2, 0.2)
        # cheap (one XINFO CONSUMERS per lane), so often: a dead worker's jobs wait at most ~1 s more
        self._dead_check_every = max(min(heartbeat_s, 1.0, self.dead_after_s / 3), 0.2)
        # after a Redis outage every worker's registry entry may have lapsed: judge none dead until
        # ours beat again and the others had as long as death takes to beat too
        self._redis_back_at: float | None = float("-inf")

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
        if self.metrics_port:
            try:
                self.metrics.serve(self.metrics_port)
            except OSError as e:  # a port in use must not keep the jobs from being served
                log.error("metrics: cannot serve on port %d (%s); running without metrics", self.metrics_port, e)
        await self.retry.call(self._register)
        for lane in lanes:
            await self.retry.call(lambda lane=lane: self.queue.prune_consumers(lane))
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
            except REDIS_DOWN:
                pass
            self.metrics.close()
            log.info("worker %s stopped after %d job(s)", self.id, self.jobs_done)

    # ------------------------------------------------------------------ lanes

    async def _fetch(self, lane: str, count: int, block: bool, state: dict) -> list[Claim]:
        """Reclaimed jobs first (every half visibility timeout), then new ones."""
        out: list[Claim] = []
        now = time.monotonic()
        if not state.get("adopted"):  # once at start: what a previous process of this name left
            out = await self.queue.adopt_own(lane, self.id, count)
            state["adopted"] = len(out) < count
        back = self._redis_back_at
        settled = back is not None and now - back >= self.dead_after_s
        if settled and now - state.get("dead_checked", 0.0) >= self._dead_check_every:
            state["dead_checked"] = now
            out += await self.queue.reclaim_dead(lane, self.id, self.dead_after_s, count - len(out))
        if now - state.get("reclaimed", 0.0) >= self._reclaim_every and len(out) < count:
            state["reclaimed"] = now
            out += await self.queue.reclaim(lane, self.id, count - len(out))
        if len(out) < count:
            out += await self.queue.take(lane, self.id, count - len(out), self.block_ms if block else None)
        if self.stopping.is_set():  # arrived as we were told to stop: give them straight back
            for claim in out:
                await self.queue.release(claim, refund=True)
            return []
        for claim in out:
            self.metrics.started(claim)
        return out

    async def _serial_lane(self, lane: str) -> None:
        state: dict = {}
        backoff = self.retry.backoff()
        while not self.stopping.is_set():
            try:
                for claim in await self._fetch(lane, 1, True, state):
                    await self._run_serial(claim)
                backoff.reset()
            except REDIS_DOWN as e:
                await backoff.sleep(f"lane {lane}: redis unavailable ({e})")
            except Exception:  # noqa: BLE001 - a bug must not stop the other jobs; the job is reclaimed
                await backoff.sleep(f"lane {lane}: unexpected error", level=logging.ERROR, exc_info=True)

    async def _run_serial(self, claim: Claim) -> None:
        ctx = self._context(claim)
        handler = self.setup.handlers.get(claim.job.kind)
        self.running[claim.job.id] = _Running(claim, ctx)
        try:
            if claim.cancel_requested:
                result: Outcome | BaseException = JobCancelled()
            elif handler is None:
                result = JobError(f"This worker cannot run {claim.job.kind} jobs.")
            else:
                try:
                    result = await asyncio.to_thread(handler, claim.job, ctx)
                except Exception as e:  # noqa: BLE001 - every failure becomes an event
                    result = e
            await self._end_claim(claim, ctx, result)
        finally:
            self.running.pop(claim.job.id, None)

    async def _batch_lane(self, lane: str, engine: BatchEngine) -> None:
        state: dict = {}
        backoff = self.retry.backoff()
        while True:
            try:
                free = engine.capacity - engine.active
                if free > 0 and not self.stopping.is_set():
                    # block only when idle: a running batch must keep stepping
                    for claim in await self._fetch(lane, free, engine.active == 0, state):
                        await self._add_to_batch(engine, claim)
                if engine.active:
                    try:
                        t0 = time.monotonic()
                        await asyncio.to_thread(engine.step)
                        self.metrics.stepped(time.monotonic() - t0, engine.active)
                    except Exception as e:
                        log.exception("batch engine failed; giving its jobs back")
                        error = f"engine crashed: {e!r}"
                        for r in list(self.running.values()):
                            if r.claim.lane == lane:
                                await self.retry.call(lambda r=r, error=error: self.queue.release(r.claim, error=error))
                                self.running.pop(r.claim.job.id, None)
                                self.metrics.ended(r.claim, "crashed")
                        raise
                for job, result in engine.pop_finished():
                    r = self.running.pop(job.id, None)
                    if r is not None:
                        await self._end_claim(r.claim, r.ctx, result)
                if self.stopping.is_set() and engine.active == 0:
                    return
                backoff.reset()
            except REDIS_DOWN as e:
                await backoff.sleep(f"lane {lane}: redis unavailable ({e})")

    async def _add_to_batch(self, engine: BatchEngine, claim: Claim) -> None:
        ctx = self._context(claim)
        if claim.cancel_requested:
            return await self._end_claim(claim, ctx, JobCancelled())
        try:
            await asyncio.to_thread(engine.add, claim.job, ctx)
        except Exception as e:  # noqa: BLE001
            return await self._end_claim(claim, ctx, e)
        self.running[claim.job.id] = _Running(claim, ctx)

    def _context(self, claim: Claim) -> RedisJobContext:
        assert self._loop is not None
        return RedisJobContext(self.queue, claim, self._loop, progress_interval_s=self.progress_interval_s,
                               cancel_check_s=self.cancel_check_s, hard_stop=self.hard_stop)

    # ------------------------------------------------------------------ endings

    async def _end_claim(self, claim: Claim, ctx: RedisJobContext, result: Outcome | BaseException) -> None:
        """Turn what the engine produced into the job's final event (or give the job back)."""
        queue, job = self.queue, claim.job
        if ctx.lost:
            log.warning("job %s: claim lost to another worker; dropping our result", job.id)
            self.metrics.ended(claim, "lost")
            return
        if isinstance(result, JobCancelled):
            if ctx.user_cancelled:
                ev = Cancelled(job_id=job.id, seq=0, by=cancel_by(ctx.cancel_flag))
            else:  # shutting down: somebody else will run it; this attempt does not count
                await self.retry.call(lambda: queue.release(claim, refund=True))
                log.info("job %s released for another worker", job.id)
                self.metrics.ended(claim, "released")
                return
        elif isinstance(result, JobError):
            ev = Failed(job_id=job.id, seq=0, reason=str(result) or "The job failed.")
        elif isinstance(result, BaseException):
            log.error("job %s (attempt %d) crashed: %r", job.id, claim.attempt, result, exc_info=result)
            # unexpected: retried (maybe on another worker) until max deliveries, then dead-lettered
            await self.retry.call(lambda: queue.release(claim, error=f"{type(result).__name__}: {result}"[:300]))
            self.metrics.ended(claim, "crashed")
            return
        else:
            try:
                keys = {name: await self.retry.call(lambda b=b: queue.put_blob(b)) for name, b in result.blobs.items()}
                ev = Result(job_id=job.id, seq=0, data=result.data, blobs=keys)
            except BlobTooLarge as e:
                ev = Failed(job_id=job.id, seq=0, reason=f"The result was too large to deliver ({e}).")
        seq = await self.retry.call(lambda: queue.finish(claim, ev))
        if seq is None:
            log.warning("job %s: claim lost before finishing; the other worker's result stands", job.id)
            self.metrics.ended(claim, "lost")
        else:
            self.jobs_done += 1
            self.metrics.ended(claim, ev.type)
            await self._release_blobs(claim, ctx)

    async def _release_blobs(self, claim: Claim, ctx: RedisJobContext) -> None:
        """The job ended: its last preview is superseded by the result, its inputs are consumed."""
        try:
            await self.queue.delete_blobs(ctx.preview)
            await self.queue.release_inputs(claim.job)
        except REDIS_DOWN as e:  # they expire with their TTL anyway
            log.warning("job %s: blobs not released (%s)", claim.job.id, e)

    # ------------------------------------------------------------------ heartbeat

    async def _register(self) -> None:
        info = WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), models=list(self.setup.models),
            device=self.setup.device, lanes=self.setup.lanes(), current=list(self.running),
            started=self.started, max_pixels=int(getattr(self.setup.imagine_engine, "max_pixels", 0) or 0),
            step_s=self.step_rates.observe(r.ctx for r in self.running.values()),
        )
        await self.queue.register_worker(info, ttl_s=self.dead_after_s)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                running = list(self.running.values())
                if running:
                    states = await self.queue.heartbeat(self.id, [r.claim for r in running])
                    for r in running:
                        ours, flag = states.get(r.claim.job.id, (True, ""))
                        if not ours:
                            r.ctx.lost = True
                        if flag:
                            r.ctx.cancel_flag = flag
                await self._register()
                if self._redis_back_at is None:
                    self._redis_back_at = time.monotonic()
                if self.heartbeat_file:
                    with open(self.heartbeat_file, "a"):
                        os.utime(self.heartbeat_file)
            except REDIS_DOWN as e:
                log.warning("heartbeat failed: %s", e)
                self._redis_back_at = None
            except Exception:  # noqa: BLE001 - the heartbeat must never die
                log.exception("heartbeat error")
            await asyncio.sleep(self.heartbeat_s)


def worker_from_settings(queue: Queue, setup: WorkerSetup, settings) -> Worker:
    return Worker(
        queue, setup, worker_id=settings.worker_id, heartbeat_s=settings.heartbeat_s,
        dead_after_beats=settings.dead_after_beats, metrics_port=settings.metrics_port,
        progress_interval_s=settings.progress_interval_s, cancel_check_s=settings.cancel_check_s,
        shutdown_grace_s=settings.shutdown_grace_s, heartbeat_file=settings.heartbeat_file,
    )
