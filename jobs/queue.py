"""The Redis Streams job queue: the only link between bot, workers and CLI.

`Queue` joins the client side (jobs.client: submit, cancel, status, follow, blobs), the worker
side (jobs.claims: take, reclaim, heartbeat, publish, finish, release) and the worker registry
(jobs.registry) on one connection pool. Key names: jobs/keys.py; atomic steps: jobs/scripts.py;
the bot's event reader: jobs/events.py.
"""
from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from jobs.claims import ClaimQueue
from jobs.client import QueueClient
from jobs.registry import WorkerRegistry


class Queue(QueueClient, ClaimQueue, WorkerRegistry):
    """Both sides of the job queue on one Redis client."""


def queue_from_url(url: str, settings=None, *, max_connections: int = 64, **kw) -> Queue:
    """A Queue on a new connection pool (binary-safe: blobs are bytes).

    The pool *blocks* when all its connections are busy: a burst of commands waits for a free
    connection instead of failing with MaxConnectionsError (redis-py's default pool raises).
    A command on a pooled connection that Redis closed (it restarted) is sent once more on a new
    connection: redis-py's check before handing out a connection misses most closed sockets."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=20,
                                                    retry=Retry(NoBackoff(), 1))
    redis = aioredis.Redis.from_pool(pool)
    if settings is not None:
        return Queue.from_settings(redis, settings)
    return Queue(redis, **kw)
