"""Events -> renderers: reads the events stream and hands each event to the renderer of its job's kind.

One consumer loop reads the events stream through the bot's consumer group (`EventReader`), so
results produced while the bot was down are rendered when it comes back, and each (job, seq) is
applied once. Events are handed to one small task per job: a job's events stay in order while a
slow Discord call for one job (a 429 sleep, a 5xx retry) never holds up the others. A Discord 5xx
is retried a few times; any other failure is logged and the event acked, so one bad event never
blocks the stream. While Redis is unreachable the loop and the job tasks wait with backoff
(`jobs.retry`) and log one line for the outage and one when Redis is back.

What an event *looks like* in Discord is not decided here: each cog registers a `Renderer` for
the job kind it queues (`dispatcher.register("classify", ...)` in its `cog_load`). This module
knows no cog, no message layout and not the bot class.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

import discord

from bot.jobstore import JobRecord, JobStore
from bot.outage import REDIS_UNAVAILABLE, OutageLog
from jobs.events import EventEntry, EventReader
from jobs.retry import DEFAULT_RETRY
from jobs.schemas import FINAL_EVENTS, Event

log = logging.getLogger(__name__)

ATTEMPTS = 5  # tries per event when Discord answers 5xx (after discord.py's own retries)
IDLE_LIMIT_S = 600  # a job quiet this long loses its task; its next event starts a new one


class Renderer(ABC):
    """How one job kind's events become Discord messages. Subclasses implement `render`; the
    other two hooks are for renderers that keep per-job state (a throttled editor, a lock)."""

    @abstractmethod
    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        """Show one event of the job; raising discord.DiscordServerError makes the dispatcher retry it."""

    async def forget(self, job_id: str) -> None:  # noqa: B027 - optional hook: by default nothing is kept
        """The job's task ended (final event or long silence): drop what is kept for it."""

    async def close(self) -> None:  # noqa: B027 - optional hook: by default nothing is in flight
        """The bot is stopping: finish or drop whatever is in flight."""


class _JobQueue:
    """One job's pending events and the task that renders them in order."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[EventEntry] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.owned: bool | None = None  # decided at the job's first event


class EventDispatcher:
    """`owns(record)` says whether this process shows a job's events (bot/shards.py: the job's guild
    is on one of its shards); the events of other jobs are acked unseen, for their owner to show."""

    def __init__(self, reader: EventReader, records: JobStore, wait_until_ready: Callable[[], Awaitable[None]],
                 owns: Callable[[JobRecord], bool] = lambda record: True):
        self.reader = reader
        self.records = records
        self._owns = owns
        self._wait_until_ready = wait_until_ready
        self._renderers: dict[str, Renderer] = {}
        self._jobs: dict[str, _JobQueue] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.redis_outage = OutageLog(log, "Redis (events)")

    # ------------------------------------------------------------------ registry

    def register(self, kind: str, renderer: Renderer) -> None:
        """Route the events of jobs of this kind to `renderer` (one per kind; a cog calls this at load)."""
        if kind in self._renderers:
            raise ValueError(f"a renderer for {kind!r} jobs is already registered")
        self._renderers[kind] = renderer

    def unregister(self, kind: str) -> None:
        self._renderers.pop(kind, None)

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._consume(), name="clipbot-events")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [job.task for job in self._jobs.values() if job.task] + ([self._task] if self._task else [])
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: redis-py may swallow a CancelledError mid-command; the flag ends the loop
            await asyncio.wait(tasks, timeout=5)
        for renderer in self._renderers.values():
            await renderer.close()

    async def _consume(self) -> None:
        await self._wait_until_ready()
        backoff = DEFAULT_RETRY.backoff()
        while not self._stopping:
            try:
                batch = await self.reader.read(count=100, block_ms=1000)
            except asyncio.CancelledError:
                raise
            except REDIS_UNAVAILABLE as e:
                self.redis_outage.failed(e)
                await backoff.sleep()
                continue
            except Exception:
                log.exception("reading events failed; retrying")
                await backoff.sleep()
                continue
            backoff.reset()
            self.redis_outage.ok()
            for entry in batch:
                self._job_queue(entry.event.job_id).inbox.put_nowait(entry)

    def _job_queue(self, job_id: str) -> _JobQueue:
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = _JobQueue()
        if job.task is None or job.task.done():
            job.task = asyncio.create_task(self._run_job(job_id, job), name=f"clipbot-job-{job_id}")
        return job

    async def _run_job(self, job_id: str, job: _JobQueue) -> None:
        idle_s = 0
        while not self._stopping:  # the flag as well as cancel(): redis-py can swallow a CancelledError
            try:
                entry = await asyncio.wait_for(job.inbox.get(), timeout=1.0)
            except TimeoutError:
                idle_s += 1
                if idle_s >= IDLE_LIMIT_S:
                    break
                continue
            idle_s = 0
            final = isinstance(entry.event, FINAL_EVENTS)
            if job.owned is None:
                job.owned = await self._owned(job_id)
                if job.owned is None:  # stopping: leave the entry unacked, to be read again
                    break
            if job.owned:
                await self._apply(job_id, entry)
            else:  # another process shows it; recording it as applied here would hide it from that one
                await self.reader.ack(entry)
            if final:
                break
        if job.inbox.empty():
            self._jobs.pop(job_id, None)
            for renderer in self._renderers.values():
                await renderer.forget(job_id)

    async def _owned(self, job_id: str) -> bool | None:
        failures = 0
        while not self._stopping:
            try:
                record = await self.records.get(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: decide later rather than drop or steal the job
                failures += 1
                if failures == 1:
                    log.warning("cannot read the record of %s (%s); retrying", job_id, e)
                await asyncio.sleep(1.0)
                continue
            return record is None or self._owns(record)  # no record: nobody shows it (CLI, expired)
        return None

    async def _apply(self, job_id: str, entry: EventEntry) -> None:
        backoff = DEFAULT_RETRY.backoff()
        attempt = 0
        while attempt < ATTEMPTS:
            if self._stopping:
                return  # not applied, not acked: read again when the bot next starts
            try:
                await self.reader.apply_once(entry, functools.partial(self._render, job_id))
                return
            except asyncio.CancelledError:
                raise
            except REDIS_UNAVAILABLE as e:  # not the event's fault: wait for Redis, then apply it again
                self.redis_outage.failed(e)
                await backoff.sleep()
            except discord.DiscordServerError:  # discord.py already retried; try again a little later
                attempt += 1
                log.warning("Discord 5xx while rendering %s (attempt %d)", job_id, attempt)
                await asyncio.sleep(2.0 * attempt)
            except Exception:
                log.exception("rendering event %s of job %s failed", entry.event.seq, job_id)
                break
        try:
            await self.reader.ack(entry)  # settled: a poison event must not block the stream forever
        except REDIS_UNAVAILABLE as e:  # left pending: read again when the bot next starts
            self.redis_outage.failed(e)

    async def _render(self, job_id: str, event: Event) -> None:
        record = await self.records.get(job_id)
        if record is None:  # not ours (CLI, bench) or expired
            return
        renderer = self._renderers.get(record.kind)
        if renderer is not None:
            await renderer.render(job_id, record, event)
