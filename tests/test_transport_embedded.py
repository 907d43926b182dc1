"""The embedded Redis: started by `python -m worker` when REDIS_URL is unset, persisted, shut down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis

from jobs.embedded import RedisServer
from jobs.queue import queue_from_url
from jobs.schemas import FindJob


async def test_worker_starts_embedded_redis_and_persists(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATA_DIR=str(data), CLIPBOT_HANDLERS="tests.worker_fakes:build", CLIPBOT_HEARTBEAT_S="0.3",
               CLIPBOT_VISIBILITY_TIMEOUT_S="2")
    log = open(tmp_path / "worker.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        srv = RedisServer(data)  # same data dir -> same socket
        deadline = time.monotonic() + 30
        while not srv.alive():
            assert time.monotonic() < deadline and p.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
        assert srv.url.startswith("unix://")
        q = queue_from_url(srv.url)
        job = FindJob(query="persist me", user=1)
        assert (await q.submit(job)).accepted
        events = [e async for e in q.follow(job.id, timeout_s=20, block_ms=200)]
        assert events[-1].type == "result"
        await q.redis.aclose()
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert not srv.alive()  # the worker owned the server and stopped it
        assert (data / "clipbot.aof").stat().st_size > 0
    finally:
        if p.poll() is None:
            p.kill()
        log.close()
    with RedisServer(data) as again:  # restart from the AOF: the finished job is still there
        r = redis.Redis.from_url(again.url)
        assert r.hget(b"clipbot:job:" + job.id.encode(), "state") == b"done"
        r.close()


def test_second_process_joins_running_embedded_server(tmp_path):
    with RedisServer(tmp_path) as first:
        second = RedisServer(tmp_path).start()
        assert second.proc is None and second.url == first.url  # shared, not owned
        second.stop()  # a no-op for the non-owner
        assert first.alive()
    assert not first.alive()


def test_embedded_redis_has_a_memory_limit_without_eviction(tmp_path):
    with RedisServer(tmp_path, maxmemory="64mb") as srv:
        r = redis.Redis.from_url(srv.url)
        assert r.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.close()
