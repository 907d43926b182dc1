"""The bot's Prometheus metrics (`CLIPBOT_METRICS_PORT`): the queue as Redis holds it, read at
scrape time, and Discord's rate limits as discord.py meets them.

Queue depth, oldest queued job's age, workers online, dead letters and blob bytes are read from
Redis by a collector when Prometheus scrapes (on the bot's event loop, so the values are the live
ones, never a stale copy). 429s are counted by a logging handler on `discord.http`: discord.py
handles a 429 inside its HTTP client (sleeps and retries) and only logs it ("We are being rate
limited. ... responded with 429"), so its log record is the one place every 429 passes."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from jobs.keys import LANES
from jobs.metrics import MetricsServer

log = logging.getLogger(__name__)

RATE_LIMITED = "We are being rate limited."  # how discord.http's 429 log lines start
SCRAPE_TIMEOUT_S = 5.0


class _RateLimitHandler(logging.Handler):
    def __init__(self, counter: Counter):
        super().__init__(logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith(RATE_LIMITED):
            self.counter.inc()


class QueueCollector:
    """Reads the queue's state from Redis on each scrape (called in the HTTP server's thread)."""

    def __init__(self, queue, loop: asyncio.AbstractEventLoop):
        self.queue, self.loop = queue, loop

    def collect(self):
        up = GaugeMetricFamily("clipbot_redis_up", "1 when the last scrape could read the queue from Redis.")
        if threading.get_ident() == getattr(self.loop, "_thread_id", None):
            return  # called on the bot's loop itself: waiting on it would deadlock
        try:
            snap = asyncio.run_coroutine_threadsafe(self.snapshot(), self.loop).result(SCRAPE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - Redis down or slow: say so, and nothing stale
            log.warning("metrics: cannot read the queue: %r", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("clipbot_queue_depth", "Jobs queued (not started) per lane.", labels=["lane"])
        age = GaugeMetricFamily("clipbot_queue_oldest_age_seconds",
                                "Age of the oldest queued job per lane (0 when none).", labels=["lane"])
        online = GaugeMetricFamily("clipbot_workers_online", "Live workers (registry entries) serving each lane.",
                                   labels=["lane"])
        for lane in LANES:
            depth.add_metric([lane], snap["depth"][lane])
            age.add_metric([lane], snap["age"][lane])
            online.add_metric([lane], snap["online"][lane])
        yield from (depth, age, online)
        dead = CounterMetricFamily("clipbot_dead_letters", "Entries in the dead-letter stream: malformed jobs and "
                                   "jobs out of deliveries.")
        dead.add_metric([], snap["dead"])
        yield dead
        blobs = GaugeMetricFamily("clipbot_blob_bytes", "Bytes of stored images (uploads, previews, results) in Redis.")
        blobs.add_metric([], snap["blob_bytes"])
        yield blobs

    async def snapshot(self) -> dict:
        q, redis, keys = self.queue, self.queue.redis, self.queue.keys
        now = time.time()
        out: dict = {"depth": {}, "age": {}, "online": {lane: 0 for lane in LANES}}
        for lane in LANES:
            out["depth"][lane] = await q.queue_length(lane)
            # the smallest arrival stamp is the job that has waited longest, wherever fair share placed it
            waiting = await q.waiting(lane)
            oldest = min(waiting, key=lambda job: job[1])[0] if waiting else None
            created = await redis.hget(keys.job(oldest), "created") if oldest else None
            out["age"][lane] = max(0.0, now - float(created)) if created is not None else 0.0
        for w in await q.workers():
            for lane in w.lanes:
                if lane in out["online"]:
                    out["online"][lane] += 1
        out["dead"] = await redis.xlen(keys.dead)
        out["blob_bytes"] = await self._blob_bytes()
        return out

    async def _blob_bytes(self) -> int:
        if hasattr(self.queue, "blob_bytes"):  # the queue's own account, when it keeps one
            return int(await self.queue.blob_bytes())
        total, redis = 0, self.queue.redis
        batch: list = []
        async for key in redis.scan_iter(match=self.queue.keys.blob("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                total += await self._strlen(batch)
                batch = []
        return total + (await self._strlen(batch) if batch else 0)

    async def _strlen(self, keys: list) -> int:
        async with self.queue.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.strlen(key)
            return sum(await pipe.execute())


class BotMetrics:
    """The bot's registry; `serve(port)` starts `/metrics`, `close()` stops it."""

    def __init__(self, queue, loop: asyncio.AbstractEventLoop):
        self.registry = CollectorRegistry()
        self.rate_limited = Counter("clipbot_discord_rate_limited_total", "Discord answers with status 429 "
                                    "(discord.py waited retry_after and retried).", registry=self.registry)
        self.registry.register(QueueCollector(queue, loop))
        self._handler = _RateLimitHandler(self.rate_limited)
        logging.getLogger("discord.http").addHandler(self._handler)
        self._server: MetricsServer | None = None

    def serve(self, port: int) -> int:
        self._server = MetricsServer(self.registry, port)
        return self._server.port

    def close(self) -> None:
        logging.getLogger("discord.http").removeHandler(self._handler)
        if self._server is not None:
            self._server.close()
            self._server = None
