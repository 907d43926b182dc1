"""Start a queue worker as a child process: the bot's embedded local worker, the demo, tests.

The worker runs in its own process (`python -m worker`), so the bot never imports worker code.
A worker started with `die_with_parent` never outlives its starter (see jobs/processes.py): it
watches its parent's pid (CLIPBOT_PARENT_PID) and, on Linux, also gets SIGTERM from the kernel.
"""
from __future__ import annotations

import os
import subprocess
import sys

from jobs.processes import death_signal_preexec


def spawn_worker(redis_url: str, env: dict[str, str] | None = None, *, die_with_parent: bool = False,
                 **popen_kw) -> subprocess.Popen:
    """Start `python -m worker --redis URL` as a child process."""
    full_env = {**os.environ, **(env or {})}
    if die_with_parent:
        full_env["CLIPBOT_PARENT_PID"] = str(os.getpid())
        popen_kw.setdefault("preexec_fn", death_signal_preexec())
    return subprocess.Popen([sys.executable, "-m", "worker", "--redis", redis_url], env=full_env, **popen_kw)
