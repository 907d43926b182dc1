"""`python -m worker doctor` and the shared checks (real Redis, real worker processes, real model loading)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from jobs.checks import Report, check_workers
from jobs.embedded import free_port
from jobs.keys import FAST
from jobs.queue import queue_from_url
from jobs.registry import WorkerInfo
from jobs.settings import Settings


def doctor(*args: str, **env: str) -> tuple[int, dict[str, dict]]:
    full = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "worker", "doctor", "--json", *args], env=full,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)  # --json: JSON on stdout and nothing else
    assert report["ok"] == (proc.returncode == 0)
    return proc.returncode, {c["name"]: c for c in report["checks"]}


def test_healthy(redis_server, worker_procs, worker_env):
    worker_procs(redis_server.url, worker_env, worker_id="w1")
    queue = queue_from_url(redis_server.url)
    import asyncio

    async def online() -> int:
        try:
            return len(await queue.workers())
        finally:
            await queue.redis.aclose()

    deadline = time.monotonic() + 30
    while not asyncio.run(online()):
        assert time.monotonic() < deadline, "the worker never registered"
        time.sleep(0.1)
    rc, checks = doctor(REDIS_URL=redis_server.url, CLIPBOT_HANDLERS="tests.worker_fakes:build")
    assert rc == 0, checks
    assert checks["Redis"]["status"] == checks["Redis AOF"]["status"] == "ok"
    assert checks["worker w1"]["status"] == "ok"
    assert "classify, find, gallery; imagine" in checks["worker w1"]["detail"]
    models = checks["models (tests.worker_fakes:build)"]
    assert models["status"] == "ok" and models["detail"].startswith("fake on cpu")
    assert checks.get("GPU", checks.get("GPU 0"))["status"] in ("ok", "warn")


def test_redis_down_and_missing_model(tmp_path):
    missing = tmp_path / "no-such-clip"
    rc, checks = doctor(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CLIPBOT_ENGINES="clip",
                        CLIP_MODEL=str(missing), CLIPBOT_HANDLERS="worker.handlers:build")
    assert rc == 1
    assert checks["Redis"]["status"] == "fail" and "start Redis" in checks["Redis"]["fix"]
    assert checks["workers"]["status"] == "skip"
    clip = checks["models: clip"]
    assert clip["status"] == "fail" and str(missing) in clip["detail"] and "CLIP_MODEL" in clip["fix"]


def test_no_worker_online(redis_server):
    rc, checks = doctor(REDIS_URL=redis_server.url, CLIPBOT_HANDLERS="tests.worker_fakes:build")
    assert rc == 1
    assert checks["workers"]["status"] == "fail" and "python -m worker" in checks["workers"]["fix"]
    assert checks["models (tests.worker_fakes:build)"]["status"] == "ok"


async def test_a_lane_nobody_serves_is_named(redis_server):
    queue = queue_from_url(redis_server.url)
    try:
        await queue.register_worker(WorkerInfo(id="cpu-box", host="h", pid=1, models=["models/clip-shapes"],
                                               lanes=[FAST]), ttl_s=30)
        report = Report("t")
        await check_workers(report, redis_server.url, Settings())
    finally:
        await queue.redis.aclose()
    checks = {c.name: c for c in report.checks}
    assert checks["worker cpu-box"].status == "ok" and "models/clip-shapes" in checks["worker cpu-box"].detail
    assert checks["lane imagine"].status == "fail" and "CLIPBOT_ENGINES" in checks["lane imagine"].fix
    assert not report.ok and report.exit_code() == 1


def test_gpu_line_says_what_torch_sees():
    import torch

    from worker.doctor import check_gpu

    report = Report("t")
    check_gpu(report, Settings(device="cuda"))
    if torch.cuda.is_available():
        assert report.checks[0].status == "ok" and "GiB free" in report.checks[0].detail
    else:  # asked for CUDA without one: broken, with the reason and the fix
        (check,) = report.checks
        assert check.status == "fail" and "CLIPBOT_DEVICE=cuda" in check.detail and "nvidia-smi" in check.fix
        report = Report("t")
        check_gpu(report, Settings(device="auto"))
        assert report.checks[0].status == "warn" and report.ok
