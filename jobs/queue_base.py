"""What both sides of the job queue share: the Redis client, the key names, the limits, the scripts."""
from __future__ import annotations

import redis.asyncio as aioredis

from jobs.keys import Keys
from jobs.scripts import Scripts


class QueueBase:
    """The state the client side (jobs.client) and the worker side (jobs.claims, jobs.registry)
    work on; jobs.queue.Queue joins them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "clipbot:",
        user_max_jobs: int = 3,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 3,
        blob_ttl_s: int = 86400,
        blob_max_bytes: int = 16 * 1024 * 1024,
        events_maxlen: int = 100_000,
        job_ttl_s: int = 7 * 86400,
        blob_budget_bytes: int = 512 * 1024 * 1024,
        result_keep_s: int = 3600,
    ):
        self.redis = redis
        self.keys = Keys(prefix)
        self.user_max_jobs = user_max_jobs
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.blob_ttl_s = blob_ttl_s
        self.blob_max_bytes = blob_max_bytes
        self.events_maxlen = events_maxlen
        self.job_ttl_s = job_ttl_s
        self.blob_budget_bytes = blob_budget_bytes  # past it new work is refused (jobs/blobs.py)
        self.result_keep_s = result_keep_s  # how long reusable images are kept once consumed
        self.scripts = Scripts.register(redis)
        self._lanes_with_group: set[str] = set()

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings):
        return cls(
            redis,
            prefix=settings.redis_prefix,
            user_max_jobs=settings.user_max_jobs,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_deliveries=settings.max_deliveries,
            blob_ttl_s=settings.blob_ttl_s,
            blob_max_bytes=settings.blob_max_bytes,
            events_maxlen=settings.events_maxlen,
            job_ttl_s=settings.job_ttl_s,
            blob_budget_bytes=settings.blob_budget_bytes,
            result_keep_s=settings.result_keep_s,
        )
