"""`python -m bot doctor` against a healthy set-up and broken ones (real Redis, real worker, fake Discord)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from bot.guild_config import GuildConfig, GuildConfigStore
from jobs.embedded import free_port
from tests.bot_harness import harness  # noqa: F401
from tests.fake_discord import FakeDiscord

PERM_ATTACH_FILES = 1 << 15


async def doctor(fake_base: str, redis_url: str, **env: str) -> tuple[int, dict]:
    full = {**os.environ, "REDIS_URL": redis_url, "DISCORD_TOKEN": "test-token",
            "DISCORD_API_BASE": f"{fake_base}/api/v10", **env}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "doctor", "--json", env=full,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode()[-3000:]
    return proc.returncode, json.loads(out)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


async def wait_workers(queue, n: int = 1) -> None:
    for _ in range(300):
        if len(await queue.workers()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no worker registered")


async def test_healthy(harness, worker_procs, worker_env):
    fake = harness.fake
    hof = fake.add_channel("hall-of-fame")
    await GuildConfigStore(harness.queue.redis, "clipbot:").put(
        fake.guild_id, GuildConfig(allowed_channels=[fake.channel_id], hof_channel=hof))
    worker_procs(harness.redis_url, worker_env, worker_id="w-healthy")
    await harness.start_bot()  # registers the commands, as a first start does
    await harness.stop_bot()
    await wait_workers(harness.queue)
    rc, report = await doctor(fake.base, harness.redis_url)
    checks = by_name(report)
    assert rc == 0 and report["ok"], report
    assert checks["Redis AOF"]["status"] == "ok"
    assert "models" in checks["worker w-healthy"]["detail"] and "imagine" in checks["worker w-healthy"]["detail"]
    assert checks["commands"]["status"] == "ok"
    assert checks["art club: #art (commands)"]["status"] == "ok"
    assert checks["art club: #hall-of-fame (hall of fame)"]["status"] == "ok"
    assert all(c["status"] == "ok" for c in report["checks"]), report


async def test_redis_down_and_commands_never_registered(harness):
    fake = harness.fake
    rc, report = await doctor(fake.base, f"redis://127.0.0.1:{free_port()}/0")
    checks = by_name(report)
    assert rc == 1 and not report["ok"]
    assert checks["Redis"]["status"] == "fail" and "fix" in checks["Redis"] and checks["Redis"]["fix"]
    assert checks["workers"]["status"] == "skip"
    assert checks["Discord token"]["status"] == "ok"
    assert checks["commands"]["status"] == "fail" and "imagine" in checks["commands"]["detail"]
    assert "CLIPBOT_DEV_GUILD" in checks["commands"]["fix"]


async def test_no_worker_missing_permission_and_deleted_channel(harness):
    fake = harness.fake
    gone = fake.add_channel("old-hof")
    fake.delete_channel(gone)
    fake.deny_bot(fake.channel_id, PERM_ATTACH_FILES)
    await GuildConfigStore(harness.queue.redis, "clipbot:").put(
        fake.guild_id, GuildConfig(allowed_channels=[fake.channel_id], hof_channel=gone))
    await harness.start_bot()
    await harness.stop_bot()
    rc, report = await doctor(fake.base, harness.redis_url)
    checks = by_name(report)
    assert rc == 1
    assert checks["workers"]["status"] == "fail" and "python -m worker" in checks["workers"]["fix"]
    art = checks["art club: #art (commands)"]
    assert art["status"] == "fail" and art["detail"] == "the bot lacks Attach Files"
    assert checks[f"art club: channel {gone} (hall of fame)"]["status"] == "fail"
    assert checks["commands"]["status"] == "ok"


async def test_discord_unreachable_and_rejected_token(redis_server):
    rc, report = await doctor(f"http://127.0.0.1:{free_port()}", redis_server.url)
    checks = by_name(report)
    assert rc == 1 and checks["Discord"]["status"] == "fail" and "cannot connect" in checks["Discord"]["detail"]
    assert checks["commands"]["status"] == "skip"
    fake = await FakeDiscord().start()
    fake.token = "another"
    try:
        rc, report = await doctor(fake.base, redis_server.url)
    finally:
        await fake.stop()
    checks = by_name(report)
    assert rc == 1 and checks["Discord"]["status"] == "ok" and checks["Discord token"]["status"] == "fail"


async def test_readable_output_without_json(harness):
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "DISCORD_TOKEN": "test-token",
           "DISCORD_API_BASE": f"{harness.fake.base}/api/v10"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "doctor", env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1
    assert "[FAIL] Redis" in text and "fix: start Redis" in text and "[ ok ] Discord token" in text
