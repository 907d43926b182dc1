"""The submitting side of the job queue (bot, CLI): submit, cancel, status, follow, blobs."""
from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from jobs.blobs import STORE_FULL, BlobStore, BlobTooLarge  # noqa: F401 - BlobTooLarge: callers import it here
from jobs.events import decode_event, encode_event
from jobs.keys import WORKER_GROUP, lane_of
from jobs.quota import day_of, quota_expiry
from jobs.schemas import FINAL_EVENTS, Cancelled, Event, Job, parse_job
from jobs.streams import as_text

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled", "dead")


@dataclass(frozen=True)
class SubmitResult:
    accepted: bool
    position: int = 0  # jobs ahead of this one in its lane
    reason: str | None = None  # why it was refused, for the user
    event_id: str | None = None  # events-stream id of its Queued event (followers start there)
    refusal: str | None = None  # limit | cooldown | quota | duplicate
    cooldown_left_s: float = 0.0


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str
    state: str  # queued | running | done | failed | cancelled | dead
    user: int
    position: int | None  # jobs ahead while queued
    worker: str | None
    attempts: int
    cancel_requested: bool
    created: float
    started: float | None
    finished: float | None
    error: str | None


_DISCORD_EPOCH_MS = 1_420_070_400_000
_last_stamp = 0


def arrival_stamp(snowflake: int | None = None) -> int:
    """The lane's order key: a Discord snowflake as given, or one for now (milliseconds since
    Discord's epoch in the top bits, so it sorts with interaction ids; the low bits make the
    stamps of one process strictly increasing)."""
    global _last_stamp
    if snowflake is not None:
        return int(snowflake)
    _last_stamp = max(_last_stamp + 1, (int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22)
    return _last_stamp


def cancel_by(flag: str) -> int | None:
    """The user id in a cancel flag ('by:<id>' or 'by:')."""
    v = flag.removeprefix("by:")
    return int(v) if v.lstrip("-").isdigit() else None


def _float_or_none(h: dict[str, str], field: str) -> float | None:
    return float(h[field]) if h.get(field) else None


class QueueClient(BlobStore):
    """Submit and watch jobs."""

    async def submit(self, job: Job, *, user_limit: int | None = None, cooldown_s: float = 0,
                     daily_quota: int = 0, arrival: int | None = None) -> SubmitResult:
        """Queue a job, in one atomic step, unless its user already has `user_limit` jobs queued or
        running, is within `cooldown_s` of their last accepted job (in this job's server), or has
        used `daily_quota` generations today (0: unlimited; only imagine jobs count). An accepted
        job starts the cooldown and counts against the quota.

        `arrival` orders the lane: a Discord snowflake (the interaction's id: Discord's creation
        time, increasing) or None for now. Jobs are served by fair-share round, then arrival, not
        by when this call happens to reach Redis. Refused too while the image store is over its byte budget."""
        if await self.blob_store_full():
            return SubmitResult(False, 0, STORE_FULL)
        limit = self.user_max_jobs if user_limit is None else user_limit
        lane, k = lane_of(job.kind), self.keys
        now = time.time()
        quota = int(daily_quota) if job.kind == "imagine" else 0
        quota_key = k.quota(job.guild, job.user, day_of(now))
        res = await self.scripts.submit(
            keys=[k.job(job.id), k.user(job.user), k.queue(lane), k.events, k.round(lane), k.fair(lane, job.user),
                  k.wake(lane), k.cooldown(job.guild, job.user), quota_key],
            args=[job.id, job.model_dump_json(), job.user, limit, job.kind, lane, repr(now),
                  self.events_maxlen, k.prefix, f"{arrival_stamp(arrival):020d}",
                  max(0, int(cooldown_s * 1000)), quota, int(quota_expiry(now)), self.job_ttl_s],
        )
        if int(res[0]) == 1:
            return SubmitResult(True, int(res[1]), None, as_text(res[2]))
        why, n = as_text(res[1]), int(res[2])
        if why == "limit":
            return SubmitResult(False, 0, f"You already have {n} jobs queued or running "
                                f"(limit {limit}). Wait for one to finish, or cancel one.", refusal=why)
        if why == "cooldown":
            return SubmitResult(False, 0, f"Slow down: you can start another job in {math.ceil(n / 1000)} s.",
                                refusal=why, cooldown_left_s=n / 1000)
        if why == "quota":
            return SubmitResult(False, 0, f"You have used your {quota} generations for today.", refusal=why)
        return SubmitResult(False, 0, f"A job with id {job.id} was already submitted.", refusal=why)

    async def position(self, job_id: str) -> int | None:
        """Jobs ahead of this one in its lane; None unless it is queued."""
        lane, member = await self.redis.hmget(self.keys.job(job_id), ["lane", "qm"])
        if lane is None or not member:
            return None
        rank = await self.redis.zrank(self.keys.queue(as_text(lane)), member)
        return None if rank is None else int(rank)

    async def waiting(self, lane: str) -> list[tuple[str, int]]:
        """The jobs waiting in `lane` in serving order, as (job id, arrival stamp)."""
        out = []
        for member in await self.redis.zrange(self.keys.queue(lane), 0, -1):  # "<arrival stamp>:<job id>"
            stamp, _, job_id = as_text(member).partition(":")
            out.append((job_id, int(stamp)))
        return out

    async def queue_length(self, lane: str) -> int:
        return int(await self.redis.zcard(self.keys.queue(lane)))

    async def cancel(self, job_id: str, by: int | None = None) -> bool:
        """Cancel a job. Queued: it becomes Cancelled and never runs. Running: the worker is
        asked to stop between steps (it publishes Cancelled). False if it already ended."""
        k = self.keys
        raw = await self.redis.hmget(k.job(job_id), ["lane", "user"])
        if raw[0] is None:
            return False
        lane, user = as_text(raw[0]), int(raw[1])
        now = time.time()
        # The event JSON is built here, not in Lua: cjson turns numbers into doubles, and Discord
        # ids (> 2**53) would come back rounded.
        event = Cancelled(job_id=job_id, seq=0, by=by, at=now)
        res = await self.scripts.cancel(
            keys=[k.job(job_id), k.stream(lane), k.queue(lane), k.user(user), k.events],
            args=["" if by is None else int(by), repr(now), self.job_ttl_s,
                  self.events_maxlen, job_id, WORKER_GROUP, encode_event(event)],
        )
        if as_text(res or "") == "cancelled":  # ended before any worker took it: its inputs are consumed
            job = await self.job(job_id)
            if job is not None:
                await self.release_inputs(job)
        return res is not None

    async def cancel_flag(self, job_id: str) -> str:
        """'' if not asked to cancel, else 'by:<user id>'."""
        v = await self.redis.hget(self.keys.job(job_id), "cancel")
        return as_text(v) if v else ""

    async def status(self, job_id: str) -> JobStatus | None:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        h = {as_text(k): as_text(v) for k, v in raw.items()}
        state = h.get("state", "")
        pos = await self.position(job_id) if state == "queued" else None
        return JobStatus(
            id=job_id, kind=h.get("kind", ""), state=state, user=int(h.get("user", 0)), position=pos,
            worker=h.get("worker") or None, attempts=int(h.get("attempts", 0)),
            cancel_requested=bool(h.get("cancel")), created=_float_or_none(h, "created") or 0.0,
            started=_float_or_none(h, "started"), finished=_float_or_none(h, "finished"),
            error=h.get("error") or None,
        )

    async def job(self, job_id: str) -> Job | None:
        raw = await self.redis.hget(self.keys.job(job_id), "json")
        return None if raw is None else parse_job(raw)

    async def user_jobs(self, user: int) -> list[JobStatus]:
        """The user's queued and running jobs, oldest first."""
        ids = [as_text(m) for m in await self.redis.smembers(self.keys.user(user))]
        out = [s for s in [await self.status(i) for i in ids] if s and s.state in ACTIVE_STATES]
        return sorted(out, key=lambda s: s.created)

    # --- events, for followers (the CLI) that are not a consumer group
    async def follow(self, job_id: str, after: str = "0-0", block_ms: int = 1000,
                     timeout_s: float | None = None) -> AsyncIterator[Event]:
        """Yield the job's events after events-stream id `after`, ending with its final event."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = after
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no final event for job {job_id} within {timeout_s}s")
            res = await self.redis.xread({self.keys.events: last}, count=500, block=block_ms)
            for _, entries in res or []:
                for entry_id, fields in entries:
                    last = as_text(entry_id)
                    if as_text(fields.get(b"job", b"")) != job_id:
                        continue
                    ev = decode_event(fields)
                    yield ev
                    if isinstance(ev, FINAL_EVENTS):
                        return

    async def last_event_id(self) -> str:
        res = await self.redis.xrevrange(self.keys.events, count=1)
        return as_text(res[0][0]) if res else "0-0"

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        res = await self.redis.xrange(self.keys.dead, count=count)
        return [{as_text(k): as_text(v) for k, v in f.items()} for _, f in res]
