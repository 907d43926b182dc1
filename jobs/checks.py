"""The checks both doctors run (`python -m bot doctor`, `python -m worker doctor`), and the report.

Each check says in one line what works or what does not, and for what does not, how to fix it.
`fail` makes the doctor exit 1; `warn` is worth knowing but breaks nothing; `skip` could not be
checked because something it depends on failed.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobs.embedded import RedisServer
from jobs.keys import FAST, IMAGINE
from jobs.queue import queue_from_url

Status = Literal["ok", "warn", "fail", "skip"]
LANE_NAMES = {FAST: "classify, find, gallery", IMAGINE: "imagine"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Report:
    title: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> Check:
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        return check

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "checks": [asdict(c) for c in self.checks]})

    def text(self) -> str:
        marks = {"ok": " ok ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [self.title]
        for c in self.checks:
            lines.append(f"[{marks[c.status]}] {c.name.ljust(width)}  {c.detail}")
            if c.fix and c.status in ("fail", "warn"):
                lines.append(f"       {' ' * width}  fix: {c.fix}")
        broken = sum(c.status == "fail" for c in self.checks)
        lines.append("everything checked works" if not broken else f"{broken} problem(s) to fix")
        return "\n".join(lines)

    def print(self, as_json: bool) -> int:
        print(self.to_json() if as_json else self.text(), file=sys.stdout)
        return self.exit_code()


def redis_target(settings) -> tuple[str | None, str]:
    """(url to check or None, how it was chosen). With REDIS_URL unset, the embedded server under
    DATA_DIR is checked if one runs; none running is normal (bot and worker start it)."""
    if settings.redis_url:
        return settings.redis_url, "REDIS_URL"
    srv = RedisServer(settings.data_dir)
    if srv.socket_path.exists() and srv.alive():
        return srv.url, f"the embedded Redis under {settings.data_dir}"
    return None, f"REDIS_URL is unset and no embedded Redis runs under {settings.data_dir}"


async def check_redis(report: Report, settings) -> str | None:
    """Redis reachable and AOF on. Returns the URL when reachable."""
    url, how = redis_target(settings)
    if url is None:
        report.add("Redis", "warn", how + ": `python -m bot` (or `python -m worker`) starts one (AOF on)",
                   "nothing to do on one machine; with several machines set REDIS_URL=redis://HOST:6379/0")
        return None
    client = aioredis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        info = await client.info("server")
        persistence = await client.info("persistence")
    except (RedisError, OSError) as e:
        report.add("Redis", "fail", f"cannot reach {url} ({how}): {e}",
                   "start Redis (`docker compose up -d redis`) or point REDIS_URL at a running one")
        return None
    finally:
        await client.aclose()
    report.add("Redis", "ok", f"{url} answers (Redis {info.get('redis_version', '?')})")
    if int(persistence.get("aof_enabled", 0)):
        report.add("Redis AOF", "ok", "on: queued jobs, votes and settings survive a Redis restart")
    else:
        report.add("Redis AOF", "warn", "off: a Redis restart loses queued jobs, votes and server settings",
                   "run Redis with `--appendonly yes` (docker-compose.yml does), or `CONFIG SET appendonly yes`")
    return url


async def check_workers(report: Report, url: str | None, settings) -> None:
    """Workers online (from the registry) and what they serve; a lane nobody serves is named."""
    if url is None:
        report.add("workers", "skip", "no Redis to read the worker registry from")
        return
    queue = queue_from_url(url, settings, max_connections=2)
    try:
        workers = await queue.workers()
    except (RedisError, OSError) as e:
        report.add("workers", "fail", f"cannot read the worker registry: {e}", "see the Redis line above")
        return
    finally:
        await queue.redis.aclose()
    if not workers:
        report.add("workers", "fail", "no worker online: jobs wait in the queue",
                   f"start one on a machine with the models: REDIS_URL={url} python -m worker")
        return
    for w in workers:
        serves = "; ".join(LANE_NAMES.get(lane, lane) for lane in w.lanes) or "nothing"
        busy = f", running {len(w.current)} job(s)" if w.current else ""
        report.add(f"worker {w.id}", "ok", f"on {w.host} ({w.device}): serves {serves}; models "
                   f"{', '.join(w.models) or 'none'}{busy}")
    served = {lane for w in workers for lane in w.lanes}
    for lane, what in LANE_NAMES.items():
        if lane not in served:
            report.add(f"lane {lane}", "fail", f"no worker serves {what}: those jobs wait in the queue",
                       f"start a worker with CLIPBOT_ENGINES including {'imagine' if lane == IMAGINE else 'clip'}")
