"""The processes a bot starts next to itself (its embedded Redis, its local worker), kept from outliving it.

Two mechanisms, because either alone can miss:

* the child dies with its parent: on Linux the kernel sends it SIGTERM when the parent dies
  (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec), and the local worker also watches its
  parent pid itself (`watch_parent`), which works everywhere;
* a bot starting on a DATA_DIR reads the pid files it left there (`PidFile`) and stops a child whose
  owner is gone. A pid file records the pid *and its start time*, so a pid the system has since
  given to another process is never signalled.

Start times come from /proc (Linux). Where /proc is missing a process cannot be identified, so
nothing is ever stopped: the pid file is then only informative.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) as text; None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of proc(5); fields[0] is field 3 (the state)


def is_same_process(pid: int, started: str | None) -> bool:
    """True only if `pid` is alive and still the process that started at `started`."""
    return started is not None and pid > 0 and start_time(pid) == started


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the thread that forked it dies (Linux; else a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def death_signal_preexec() -> Callable[[], None] | None:
    """`die_with_parent` when forking from the main thread: the death signal follows the forking
    *thread*, so a child started from a short-lived thread would be killed when that thread ends."""
    if threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux"):
        return die_with_parent
    return None


def terminate(pid: int, started: str | None, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process if it is still the one recorded, SIGKILL after `timeout_s`; True once gone."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if not is_same_process(pid, started):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_same_process(pid, started):
                return True
            time.sleep(0.05)
    return not is_same_process(pid, started)


class PidFile:
    """`<dir>/<name>.pid`: JSON {pid, started, owner, owner_started} of a child and the process that started it."""

    def __init__(self, directory: str | os.PathLike, name: str):
        self.path = Path(directory) / f"{name}.pid"

    def write(self, pid: int) -> None:
        record = {"pid": pid, "started": start_time(pid), "owner": os.getpid(), "owner_started": start_time(os.getpid())}
        tmp = self.path.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path)

    def read(self) -> dict | None:
        try:
            record = json.loads(self.path.read_text())
            return record if isinstance(record.get("pid"), int) and isinstance(record.get("owner"), int) else None
        except (OSError, ValueError, AttributeError):
            return None

    def remove(self, pid: int | None = None) -> None:
        """Remove the file (only if it still names `pid`, when given)."""
        record = self.read()
        if pid is None or (record is not None and record["pid"] == pid):
            self.path.unlink(missing_ok=True)

    def stale(self) -> dict | None:
        """The record if its child is still running but the process that started it is gone."""
        record = self.read()
        if record is None or not is_same_process(record["pid"], record.get("started")):
            return None
        if is_same_process(record["owner"], record.get("owner_started")):
            return None  # its owner lives: not ours to stop
        return record

    def stop_stale(self, what: str, timeout_s: float = 10.0) -> bool:
        """Stop a stale child left by a process that died (SIGKILL, power loss); True if one was stopped."""
        record = self.stale()
        if record is None:
            return False
        log.warning("stopping a stale %s (pid %d) left by process %d, which is gone", what, record["pid"], record["owner"])
        terminate(record["pid"], record.get("started"), timeout_s)
        self.remove(record["pid"])
        return True


async def watch_parent(parent_pid: int, on_gone: Callable[[], None], *, interval_s: float = 0.5,
                       give_up_s: float | None = None) -> None:
    """Call `on_gone` once the process that started us has exited (we get re-parented). If we are
    still running `give_up_s` later (a graceful stop can wait on a Redis that died with the parent),
    exit at once: whatever we held is reclaimed by the queue, and an orphan must not live on."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(interval_s)
    log.warning("parent process %d is gone; stopping", parent_pid)
    on_gone()
    if give_up_s is not None:
        await asyncio.sleep(give_up_s)
        log.error("still running %.0f s after the parent process %d went away; exiting now", give_up_s, parent_pid)
        logging.shutdown()
        os._exit(1)
