"""Prometheus metrics of a real worker process and of the real bot (against the fake Discord),
scraped over HTTP: the values follow what really happened in Redis and Discord."""
from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from jobs.embedded import free_port
from jobs.keys import FAST, IMAGINE
from jobs.schemas import FindJob, ImagineJob
from tests.bot_harness import harness  # noqa: F401
from tests.test_worker_death import job_events, live_workers


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from http://127.0.0.1:port/metrics."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_worker_process_metrics_move_with_its_jobs(queue, worker_procs, worker_env, redis_url):
    port = free_port()
    worker_procs(redis_url, {**worker_env, "CLIPBOT_METRICS_PORT": str(port)}, "worker-m")
    await live_workers(queue, 1)
    before = await scrape(port)
    assert before.get(("clipbot_job_wait_seconds_count", (("kind", "find"),)), 0) == 0
    ok, bad, pic = FindJob(query="fine", user=1), FindJob(query="error", user=2), ImagineJob(prompt="p", steps=6, user=3)
    for job in (ok, bad, pic):
        await queue.submit(job)
    for job in (ok, bad, pic):
        assert (await job_events(queue, job.id))[-1].type in ("result", "failed")
    # The worker counts an attempt once queue.finish has answered, a moment after the job's last
    # event is visible: scrape until all three attempts are counted.
    runs = "clipbot_job_run_seconds_count"
    for _ in range(100):
        m = await scrape(port)
        if sum(v for (name, _labels), v in m.items() if name == runs) >= 3:
            break
        await asyncio.sleep(0.05)
    assert m[("clipbot_job_wait_seconds_count", (("kind", "find"),))] == 2
    assert m[("clipbot_job_wait_seconds_count", (("kind", "imagine"),))] == 1
    assert m[("clipbot_job_run_seconds_count", (("kind", "find"), ("outcome", "result")))] == 1
    assert m[("clipbot_job_run_seconds_count", (("kind", "find"), ("outcome", "failed")))] == 1
    assert m[("clipbot_job_run_seconds_count", (("kind", "imagine"), ("outcome", "result")))] == 1
    assert m[("clipbot_job_failures_total", (("kind", "find"), ("reason", "failed")))] == 1
    assert m[("clipbot_imagine_step_seconds_count", ())] >= 6  # one observation per engine step
    assert m[("clipbot_imagine_step_seconds_sum", ())] >= 6 * 0.02  # the fake engine's steps sleep 20 ms


async def test_bot_metrics_read_the_queue_and_count_429s(harness):
    port = free_port()
    bot = await harness.start_bot(metrics_port=port)
    q = harness.queue
    for i in range(3):
        await q.submit(FindJob(query="waiting", user=100 + i))
    await q.submit(ImagineJob(prompt="p", user=200))
    from jobs.registry import WorkerInfo

    await q.register_worker(WorkerInfo(id="w1", host="h", pid=1, lanes=[FAST, IMAGINE]), ttl_s=60)
    await q.register_worker(WorkerInfo(id="w2", host="h", pid=2, lanes=[FAST]), ttl_s=60)
    await q.dead_letter(FAST, "0-1", {b"job": b"not json"}, "malformed job: test")
    blob_sizes = [1000, 2345]
    for n in blob_sizes:
        await q.put_blob(b"x" * n)
    m = await scrape(port)
    assert m[("clipbot_redis_up", ())] == 1
    assert m[("clipbot_queue_depth", (("lane", FAST),))] == await q.queue_length(FAST) == 3
    assert m[("clipbot_queue_depth", (("lane", IMAGINE),))] == await q.queue_length(IMAGINE) == 1
    assert m[("clipbot_queue_oldest_age_seconds", (("lane", FAST),))] > 0
    assert m[("clipbot_workers_online", (("lane", FAST),))] == 2
    assert m[("clipbot_workers_online", (("lane", IMAGINE),))] == 1
    assert m[("clipbot_dead_letters_total", ())] == 1
    assert m[("clipbot_blob_bytes", ())] == sum(blob_sizes)
    assert m[("clipbot_discord_rate_limited_total", ())] == 0
    # Discord answers one request with 429: discord.py waits and retries, and it is counted
    fake = harness.fake
    fake.fail_next("GET", r"/guilds/\d+$", 429, retry_after=0.1)
    await bot.fetch_guild(fake.guild_id)
    assert [c.status for c in fake.find_calls("GET", r"/guilds/\d+$")] == [429, 200]
    assert (await scrape(port))[("clipbot_discord_rate_limited_total", ())] == 1
    # a queued job cancelled: the depth follows the real queue
    first = (await q.redis.zrange(q.keys.queue(FAST), 0, 0))[0].decode()  # "<arrival stamp>:<job id>"
    await q.cancel(first.partition(":")[2])
    assert (await scrape(port))[("clipbot_queue_depth", (("lane", FAST),))] == await q.queue_length(FAST) == 2
