"""A bot's embedded Redis and local worker never outlive it, and a restart never stacks a second pair.

Real `python -m bot` processes (REDIS_URL unset, DATA_DIR in tmp) against the fake Discord, with the
fake engines in the local worker. The test process makes itself a child subreaper, so the children of
a killed bot are re-parented to it (and reaped here) instead of to an init that may not reap them.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from jobs.embedded import RedisServer
from jobs.processes import PidFile, is_same_process, start_time
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    reap_children()


def _proc_table() -> list[tuple[int, int, str, str]]:
    """(pid, ppid, state, cmdline) of every process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        out.append((int(entry.name), int(rest[1]), rest[0], cmd))
    return out


def reap_children() -> None:
    """Reap exited children of this process that no Popen owns (re-parented orphans)."""
    for pid, ppid, state, _ in _proc_table():
        if ppid == os.getpid() and state == "Z":
            os.waitpid(pid, os.WNOHANG)


def zombies_of(pid: int) -> list[int]:
    return [p for p, pp, state, _ in _proc_table() if pp == pid and state == "Z"]


def redis_servers(data: Path) -> list[int]:
    return [p for p, _, state, cmd in _proc_table() if state != "Z" and "redis-server" in cmd and str(data) in cmd]


def local_workers(data: Path) -> list[int]:
    sock = str(data)
    return [p for p, _, state, cmd in _proc_table() if state != "Z" and " -m worker --redis " in cmd and sock in cmd]


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def bot_env(fake: FakeDiscord, data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATA_DIR=str(data), DISCORD_TOKEN="test-token", DISCORD_API_BASE=fake.api_base,
               DISCORD_GATEWAY_URL=fake.gateway_url, CLIPBOT_HANDLERS="tests.worker_fakes:build",
               CLIPBOT_HEARTBEAT_S="0.3", CLIPBOT_VISIBILITY_TIMEOUT_S="2", CLIPBOT_SHUTDOWN_GRACE_S="2",
               CLIPBOT_GUILD_READY_TIMEOUT_S="0.05", PYTHONUNBUFFERED="1")
    return env


async def start_bot(fake: FakeDiscord, data: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bot"], env=bot_env(fake, data), stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "serving" not in log_path.read_text(errors="replace") or not PidFile(data, "local-worker").read():
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
        await asyncio.sleep(0.1)
    return proc


def pids_of(data: Path) -> tuple[int, int]:
    return PidFile(data, "redis").read()["pid"], PidFile(data, "local-worker").read()["pid"]


async def test_killed_bot_takes_its_worker_and_redis_with_it(subreaper, tmp_path):
    fake = await FakeDiscord().start()
    data = tmp_path / "data"
    bot = await start_bot(fake, data, tmp_path / "bot.log")
    try:
        redis_pid, worker_pid = pids_of(data)
        started = {pid: start_time(pid) for pid in (redis_pid, worker_pid)}
        bot.send_signal(signal.SIGKILL)
        bot.wait()
        await asyncio.to_thread(wait_until, lambda: not is_same_process(worker_pid, started[worker_pid]), 10,
                                "the local worker outlived its bot")
        await asyncio.to_thread(wait_until, lambda: not is_same_process(redis_pid, started[redis_pid]), 10,
                                "the embedded Redis outlived its bot")
        # they were re-parented to us and have exited: reaping them leaves nothing behind
        for pid in (redis_pid, worker_pid):
            assert os.waitpid(pid, 0)[0] == pid
        assert redis_servers(data) == [] and local_workers(data) == []
        assert zombies_of(os.getpid()) == []
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
        await fake.stop()


# A bot on a system without death signals (or killed between its fork and the signal being set):
# its Redis and worker are left running, and it wrote its pid files, as `python -m bot` does.
_STALE_BOT = """
import sys, time
from jobs.embedded import RedisServer
from jobs.local_worker import spawn_worker
from jobs.processes import PidFile
srv = RedisServer(sys.argv[1]).start()
import redis; redis.Redis.from_url(srv.url).set("clipbot:test:kept", "yes")
w = spawn_worker(srv.url)
PidFile(sys.argv[1], "local-worker").write(w.pid)
print(srv.proc.pid, w.pid, flush=True)
time.sleep(600)
"""


async def test_restart_stops_a_stale_redis_and_worker_and_never_stacks(subreaper, tmp_path):
    data = tmp_path / "data"
    env = {**bot_env(FakeDiscord(), data)}  # fake not needed for the stale pair
    stale_bot = subprocess.Popen([sys.executable, "-c", _STALE_BOT, str(data)], env=env, stdout=subprocess.PIPE,
                                 stderr=open(tmp_path / "stale.log", "wb"))
    old_redis, old_worker = map(int, (await asyncio.to_thread(stale_bot.stdout.readline)).split())
    old = {pid: start_time(pid) for pid in (old_redis, old_worker)}
    await asyncio.to_thread(wait_until, lambda: "serving" in (tmp_path / "stale.log").read_text(), 30,
                            "the stale worker did not start")
    stale_bot.kill()
    stale_bot.wait()
    stale_bot.stdout.close()
    assert is_same_process(old_redis, old[old_redis]) and is_same_process(old_worker, old[old_worker])

    fake = await FakeDiscord().start()
    bot = await start_bot(fake, data, tmp_path / "bot.log")
    try:
        assert not is_same_process(old_redis, old[old_redis]) and not is_same_process(old_worker, old[old_worker])
        new_redis, new_worker = pids_of(data)
        assert redis_servers(data) == [new_redis] and local_workers(data) == [new_worker]
        assert new_redis not in old and new_worker not in old
        assert zombies_of(bot.pid) == []
        r = redis.Redis.from_url(RedisServer(data).url)  # the stale Redis was stopped cleanly: AOF kept
        assert r.get("clipbot:test:kept") == b"yes"
        r.close()
        bot.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(bot.wait, 30) == 0
        assert redis_servers(data) == [] and local_workers(data) == []
        assert PidFile(data, "redis").read() is None and PidFile(data, "local-worker").read() is None
        reap_children()  # the stale pair, re-parented to us when their bot was killed
        assert zombies_of(os.getpid()) == []
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
        await fake.stop()


def test_a_recycled_pid_is_never_signalled(tmp_path):
    """The pid file names a live process whose start time differs: it is left alone."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pf = PidFile(tmp_path, "local-worker")
        pf.path.write_text(f'{{"pid": {sleeper.pid}, "started": "1", "owner": 999999999, "owner_started": "1"}}')
        assert pf.stale() is None and not pf.stop_stale("local worker")
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


_PARENT_WITHOUT_DEATH_SIGNAL = """
import sys, time
from jobs.local_worker import spawn_worker
w = spawn_worker(sys.argv[1], die_with_parent=True, preexec_fn=None)  # the parent-pid watch alone
print(w.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("redis_too", [False, True], ids=["redis-alive", "redis-gone"])
async def test_the_worker_watches_its_parent_where_no_death_signal_exists(subreaper, redis_server, worker_env, tmp_path,
                                                                         redis_too):
    log = open(tmp_path / "parent.log", "wb")
    parent = subprocess.Popen([sys.executable, "-c", _PARENT_WITHOUT_DEATH_SIGNAL, redis_server.url],
                              env={**os.environ, **worker_env}, stdout=subprocess.PIPE, stderr=log)
    try:
        worker_pid = int(await asyncio.to_thread(parent.stdout.readline))
        started = start_time(worker_pid)
        await asyncio.to_thread(wait_until, lambda: "serving" in (tmp_path / "parent.log").read_text(), 30,
                                "the worker did not start")
        if redis_too:  # a graceful stop may then wait on Redis: the worker still exits after its grace
            redis_server.kill()
        parent.kill()
        parent.wait()
        grace = float(worker_env["CLIPBOT_SHUTDOWN_GRACE_S"])
        await asyncio.to_thread(wait_until, lambda: not is_same_process(worker_pid, started), grace + 10,
                                "the worker outlived its parent")
        status = os.waitpid(worker_pid, 0)[1]
        assert redis_too or status == 0  # with Redis up: a graceful stop, exit status 0
        assert "parent process" in (tmp_path / "parent.log").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        log.close()
