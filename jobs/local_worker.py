"""Start a queue worker as a child process: the bot's embedded local worker, the demo, tests.

The worker runs in its own process (`python -m worker`), so the bot never imports worker code."""
from __future__ import annotations

import os
import subprocess
import sys


def spawn_worker(redis_url: str, env: dict[str, str] | None = None, **popen_kw) -> subprocess.Popen:
    """Start `python -m worker --redis URL` as a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "worker", "--redis", redis_url], env=full_env, **popen_kw)
