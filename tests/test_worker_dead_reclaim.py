"""A dead worker's jobs are taken over as soon as its registry entry expires (a few missed
heartbeats), long before the visibility timeout; a slow worker that still heartbeats keeps them.
Real `python -m worker` processes (test-only fake engines) with the DEFAULT visibility timeout."""
from __future__ import annotations

import signal
import time

from jobs.keys import FAST
from jobs.schemas import FindJob, ImagineJob
from jobs.settings import Settings
from tests.test_worker_death import job_events, live_workers, started_by

DEFAULT_VISIBILITY_S = Settings.model_fields["visibility_timeout_s"].default


def default_visibility(env: dict) -> dict:
    env = dict(env)
    env.pop("CLIPBOT_VISIBILITY_TIMEOUT_S")  # the production default (30 s)
    return env


async def test_sigkill_job_is_taken_over_when_the_registration_expires(queue, worker_procs, worker_env, redis_url):
    env = default_visibility(worker_env)
    assert DEFAULT_VISIBILITY_S == 30.0
    a = worker_procs(redis_url, env, "worker-a")
    await live_workers(queue, 1)
    job = FindJob(query="sleep:1.5", user=1)
    await queue.submit(job)
    assert await started_by(queue, job.id) == "worker-a"
    b = worker_procs(redis_url, env, "worker-b")
    await live_workers(queue, 2)
    a.send_signal(signal.SIGKILL)
    t_kill = time.time()
    a.wait()
    events = await job_events(queue, job.id, timeout_s=25)
    assert events[-1].type == "result" and events[-1].data["pid"] == b.pid
    starts = [e for e in events if e.type == "started"]
    assert [(e.worker, e.attempt) for e in starts] == [("worker-a", 1), ("worker-b", 2)]
    # taken over by the registry's verdict, not by the visibility timeout: that could not have
    # fired before t_kill + 30 s
    assert starts[1].at < t_kill + DEFAULT_VISIBILITY_S / 2
    assert (await queue.status(job.id)).attempts == 2
    assert sum(e.type == "result" for e in events) == 1
    assert (await queue.redis.xpending(queue.keys.stream(FAST), "workers"))["pending"] == 0


async def test_slow_worker_that_heartbeats_keeps_its_job(queue, worker_procs, worker_env, redis_url):
    # each fake step (2.5 s) is longer than death takes to be judged (3 beats of 0.3 s, at least
    # 2 s), while the worker's heartbeats keep coming
    env = {**default_visibility(worker_env), "CLIPBOT_FAKE_STEP_S": "2.5"}
    a = worker_procs(redis_url, env, "worker-a")
    await live_workers(queue, 1)
    job = ImagineJob(prompt="slow", steps=2, user=1)
    await queue.submit(job)
    assert await started_by(queue, job.id) == "worker-a"
    worker_procs(redis_url, env, "worker-b")
    await live_workers(queue, 2)
    events = await job_events(queue, job.id, timeout_s=30)
    assert events[-1].type == "result" and events[-1].data["pid"] == a.pid
    assert [e.worker for e in events if e.type == "started"] == ["worker-a"]
    assert (await queue.status(job.id)).attempts == 1


async def test_restarted_worker_with_the_same_id_takes_back_its_jobs(queue, worker_procs, worker_env, redis_url):
    # a container restart keeps hostname and pid 1: the new process has the dead one's name
    env = default_visibility(worker_env)
    a = worker_procs(redis_url, env, "worker-a")
    await live_workers(queue, 1)
    job = FindJob(query="sleep:1.5", user=1)
    await queue.submit(job)
    assert await started_by(queue, job.id) == "worker-a"
    a.send_signal(signal.SIGKILL)
    t_kill = time.time()
    a.wait()
    again = worker_procs(redis_url, env, "worker-a")
    events = await job_events(queue, job.id, timeout_s=25)
    assert events[-1].type == "result" and events[-1].data["pid"] == again.pid
    starts = [e for e in events if e.type == "started"]
    assert [(e.worker, e.attempt) for e in starts] == [("worker-a", 1), ("worker-a", 2)]
    assert starts[1].at < t_kill + DEFAULT_VISIBILITY_S / 2


async def test_reclaim_dead_needs_both_an_expired_registration_and_idle_entries(queue):
    from jobs.registry import WorkerInfo
    from jobs.schemas import Result

    job = FindJob(query="q", user=1)
    await queue.submit(job)
    (held,) = await queue.take(FAST, "ghost", block_ms=None)
    await queue.register_worker(WorkerInfo(id="ghost", host="h", pid=1, lanes=[FAST]), ttl_s=30)
    assert await queue.reclaim_dead(FAST, "live", min_idle_s=0.0) == []  # registered: alive
    await queue.unregister_worker("ghost")
    assert await queue.reclaim_dead(FAST, "live", min_idle_s=30.0) == []  # heartbeated too recently
    (taken,) = await queue.reclaim_dead(FAST, "live", min_idle_s=0.0)
    assert (taken.job.id, taken.attempt) == (job.id, 2)
    st = await queue.status(job.id)
    assert (st.state, st.worker, st.attempts) == ("running", "live", 2)
    # the old holder is fenced out: its Result is refused, the new holder's stands
    assert await queue.finish(held, Result(job_id=job.id, seq=0, data={})) is None
    assert await queue.finish(taken, Result(job_id=job.id, seq=0, data={})) is not None
    assert await queue.reclaim_dead(FAST, "other", min_idle_s=0.0) == []
