"""The queue worker's JobContext: what an engine sees of Redis while it runs a job.

Engines are synchronous and run in a thread (`asyncio.to_thread`); the queue is asyncio and
lives on the worker's event loop. So every Redis call here is handed to that loop with
`run_coroutine_threadsafe` and waited for: progress events are few (rate-limited), and waiting
keeps their order and makes sure they are all published before the job's final event.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from jobs.claims import Claim
from jobs.client import BlobTooLarge
from jobs.queue import Queue
from jobs.retry import REDIS_DOWN
from jobs.schemas import Progress
from worker.api import JobError

log = logging.getLogger(__name__)


class RedisJobContext:
    def __init__(
        self,
        queue: Queue,
        claim: Claim,
        loop: asyncio.AbstractEventLoop,
        *,
        progress_interval_s: float = 1.0,
        cancel_check_s: float = 0.25,
        hard_stop: threading.Event | None = None,
        call_timeout_s: float = 30.0,
    ):
        self.queue = queue
        self.claim = claim
        self.job = claim.job
        self.loop = loop
        self.progress_interval_s = progress_interval_s
        self.cancel_check_s = cancel_check_s
        self.hard_stop = hard_stop or threading.Event()  # worker shutting down: give the job back
        self.call_timeout_s = call_timeout_s
        self.cancel_flag = claim.cancel  # set = a user asked to cancel
        self.lost = False  # another worker took the job over: stop, publish nothing
        self._last_progress = float("-inf")
        self._last_cancel_check = float("-inf")
        self.preview: str | None = None  # the newest preview's blob: the one before it is deleted

    def _call(self, coro):
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError("JobContext methods must be called from the engine thread, not the event loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.call_timeout_s)

    # --- JobContext protocol
    def progress(self, step: int, total: int, loss: float | None = None, preview_png: bytes | None = None) -> None:
        now = time.monotonic()
        self.step = step  # read by the worker's step-rate measurement (worker.step_rates)
        if step < total and now - self._last_progress < self.progress_interval_s:
            return  # cheap to call every step: most calls send nothing
        self._last_progress = now
        try:
            # a preview lives until it is shown or superseded (deleted below), at most result_keep_s
            preview = self._call(self.queue.put_blob(preview_png, self.queue.result_keep_s)) if preview_png else None
            ev = Progress(job_id=self.job.id, seq=0, step=step, total=total, loss=loss, preview=preview)
            if self._call(self.queue.publish(self.claim, ev)) is None:
                self.lost = True
            if preview is not None:
                if self.lost:
                    stale = preview  # published for nobody
                else:
                    stale, self.preview = self.preview, preview
                self._call(self.queue.delete_blobs(stale))
        except BlobTooLarge as e:
            log.warning("job %s: preview dropped: %s", self.job.id, e)
        except REDIS_DOWN as e:  # progress is best effort; the final event is retried
            log.warning("job %s: progress not sent (%s)", self.job.id, e)

    def cancelled(self) -> bool:
        if self.cancel_flag or self.lost or self.hard_stop.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= self.cancel_check_s:
            self._last_cancel_check = now
            try:
                self.cancel_flag = self._call(self.queue.cancel_flag(self.job.id))
            except REDIS_DOWN:
                pass
        return bool(self.cancel_flag)

    def blob(self, key: str) -> bytes:
        try:
            data = self._call(self.queue.get_blob(key))
        except REDIS_DOWN as e:
            raise ConnectionError(f"could not read blob {key}: {e}") from e  # retried elsewhere
        if data is None:
            raise JobError("An image this job needs has expired or is missing; please upload it again.")
        return data

    # --- for the worker
    @property
    def user_cancelled(self) -> bool:
        return bool(self.cancel_flag)
