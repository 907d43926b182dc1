"""The Redis Streams job transport: the only link between bot, workers and CLI.

Shape (all keys start with the prefix, default ``clipbot:``):

    stream:fast, stream:imagine   job streams (consumer group "workers"); classify/index/find are
                                  on "fast" so they never wait behind a long generation
    queue:fast, queue:imagine     sorted sets of queued job ids in submit order (queue position)
    job:<id>                      hash: state, json, user, lane, entry, attempts, claim, worker,
                                  seq (event counter), cancel, timestamps, error
    user:<uid>                    set of the user's queued + running job ids (the per-user limit)
    events                        stream of every job event (the bot reads it via its own group)
    dead                          dead-letter stream: malformed entries and jobs out of deliveries
    blob:<hex>                    image bytes with a TTL
    workers, worker:<id>          live worker registry (zset by expiry, hash with a TTL)
    applied:<group>:<job id>      (job, seq) pairs a consumer group has applied (dedupe)

Every state change that must not be torn (submit, claim, publish, finish, release, cancel) is one
Lua script, so e.g. the final event and the XACK of a job happen together or not at all, and a
worker whose claim was taken over can no longer publish for that job: no double Result.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

from jobs.schemas import (
    EVENT_ADAPTER,
    FINAL_EVENTS,
    Cancelled,
    Event,
    Failed,
    Job,
    Result,
    parse_job,
)

log = logging.getLogger(__name__)

FAST, IMAGINE = "fast", "imagine"
LANES = (FAST, IMAGINE)
GROUP = "workers"
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled", "dead")
_BLOB_KEY = re.compile(r"^[0-9a-f]{32}$")


def lane_of(kind: str) -> str:
    return IMAGINE if kind == "imagine" else FAST


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class BlobTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class SubmitResult:
    accepted: bool
    position: int = 0  # jobs ahead of this one in its lane
    reason: str | None = None  # why it was refused, for the user
    event_id: str | None = None  # events-stream id of its Queued event (followers start there)


@dataclass(frozen=True)
class Delivery:
    """A job a worker now holds. `token` proves the claim when publishing and finishing."""

    lane: str
    entry_id: str
    job: Job
    token: str
    attempt: int
    cancel: str = ""  # '' or 'by:<user id>' when a cancel was asked before it started

    @property
    def cancel_requested(self) -> bool:
        return bool(self.cancel)


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


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    models: list[str] = field(default_factory=list)
    device: str = "cpu"
    lanes: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)  # job ids being worked on
    started: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)


@dataclass(frozen=True)
class EventDelivery:
    entry_id: str
    event: Event


# ----------------------------------------------------------------------------- Lua

_LUA_PUBLISH_FN = """
local function publish(jobkey, events, maxlen, job_id, etype, ejson)
  local seq = redis.call('HINCRBY', jobkey, 'seq', 1)
  local id = redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
                        'job', job_id, 'seq', seq, 'type', etype, 'event', ejson)
  return {seq, id}
end
local function is_active(state) return state == 'queued' or state == 'running' end
"""

# KEYS: job hash, user set, lane stream, lane queue zset, events, position counter
# ARGV: id, json, user, limit, kind, lane, now, events maxlen, prefix
_LUA_SUBMIT = _LUA_PUBLISH_FN + """
local p = ARGV[9]
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local st = redis.call('HGET', p .. 'job:' .. m, 'state')
  if not st or not is_active(st) then redis.call('SREM', KEYS[2], m) end
end
local limit = tonumber(ARGV[4])
local n = redis.call('SCARD', KEYS[2])
if limit > 0 and n >= limit then return {0, 'limit', n} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'duplicate', 0} end
local entry = redis.call('XADD', KEYS[3], '*', 'job', ARGV[2])
local score = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'json', ARGV[2], 'user', ARGV[3], 'kind', ARGV[5],
           'lane', ARGV[6], 'state', 'queued', 'entry', entry, 'attempts', 0, 'seq', 0,
           'created', ARGV[7], 'score', score)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], score, ARGV[1])
local pos = redis.call('ZRANK', KEYS[4], ARGV[1])
local ev = cjson.encode({type='queued', job_id=ARGV[1], position=pos, at=tonumber(ARGV[7])})
local r = publish(KEYS[1], KEYS[5], ARGV[8], ARGV[1], 'queued', ev)
return {1, pos, r[2]}
"""

# KEYS: job hash, lane stream, lane queue, events, dead, user set
# ARGV: entry id, consumer, max deliveries, now, group, job id, events maxlen, job ttl
_LUA_CLAIM = _LUA_PUBLISH_FN + """
local state = redis.call('HGET', KEYS[1], 'state')
local function drop() redis.call('XACK', KEYS[2], ARGV[5], ARGV[1]); redis.call('XDEL', KEYS[2], ARGV[1]) end
if not state then
  redis.call('XADD', KEYS[5], '*', 'lane', KEYS[2], 'entry', ARGV[1], 'job', ARGV[6],
             'reason', 'unknown job: not submitted through the queue', 'at', ARGV[4])
  drop()
  return {'skip', 'unknown'}
end
if redis.call('HGET', KEYS[1], 'entry') ~= ARGV[1] or not is_active(state) then
  drop()
  return {'skip', state}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[3]) then
  local last = redis.call('HGET', KEYS[1], 'error') or 'the worker stopped while running it'
  local reason = 'Sorry, this job failed ' .. (attempts - 1) .. ' times on our workers and was dropped (' ..
                 last .. '). Try again later, or with a smaller request.'
  redis.call('HSET', KEYS[1], 'state', 'dead', 'claim', '', 'finished', ARGV[4], 'error', reason)
  redis.call('XADD', KEYS[5], '*', 'lane', KEYS[2], 'entry', ARGV[1], 'job', ARGV[6],
             'reason', 'max deliveries exceeded: ' .. last, 'at', ARGV[4],
             'json', redis.call('HGET', KEYS[1], 'json'))
  redis.call('ZREM', KEYS[3], ARGV[6]); redis.call('SREM', KEYS[6], ARGV[6])
  local ev = cjson.encode({type='failed', job_id=ARGV[6], reason=reason, dead_lettered=true,
                           at=tonumber(ARGV[4])})
  publish(KEYS[1], KEYS[4], ARGV[7], ARGV[6], 'failed', ev)
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  drop()
  return {'dead', reason}
end
local token = ARGV[2] .. ':' .. attempts .. ':' .. redis.call('HGET', KEYS[1], 'seq')
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'claim', token, 'started', ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[6])
local ev = cjson.encode({type='started', job_id=ARGV[6], worker=ARGV[2], attempt=attempts,
                         at=tonumber(ARGV[4])})
publish(KEYS[1], KEYS[4], ARGV[7], ARGV[6], 'started', ev)
local cancel = redis.call('HGET', KEYS[1], 'cancel') or ''
return {'ok', token, attempts, cancel}
"""

# KEYS: job hash, events. ARGV: token, job id, type, event json, maxlen
_LUA_PUBLISH = _LUA_PUBLISH_FN + """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return false end
return publish(KEYS[1], KEYS[2], ARGV[5], ARGV[2], ARGV[3], ARGV[4])
"""

# KEYS: job hash, lane stream, user set, events
# ARGV: token, entry, group, final state, type, event json, now, job ttl, maxlen, job id, error
_LUA_FINISH = _LUA_PUBLISH_FN + """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return false end
local r = publish(KEYS[1], KEYS[4], ARGV[9], ARGV[10], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'claim', '', 'finished', ARGV[7])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[11]) end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2]); redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[10])
redis.call('EXPIRE', KEYS[1], ARGV[8])
return r
"""

# KEYS: job hash, lane stream, lane queue, position counter
# ARGV: token, entry, group, refund (0/1), error, job id
_LUA_RELEASE = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return false end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2]); redis.call('XDEL', KEYS[2], ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'job', redis.call('HGET', KEYS[1], 'json'))
local score = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'state', 'queued', 'entry', entry, 'claim', '', 'worker', '', 'score', score)
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('ZADD', KEYS[3], score, ARGV[6])
return entry
"""

# KEYS: job hash, events. ARGV: pairs "lane stream|entry|token" ... via separate calls
# KEYS: job hash, lane stream. ARGV: token, group, consumer, entry
_LUA_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return {0, ''} end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
return {1, redis.call('HGET', KEYS[1], 'cancel') or ''}
"""

# KEYS: job hash, lane stream, lane queue, user set, events
# ARGV: by ('' = unknown), now, job ttl, maxlen, job id, group
_LUA_CANCEL = _LUA_PUBLISH_FN + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  local entry = redis.call('HGET', KEYS[1], 'entry')
  redis.call('XACK', KEYS[2], ARGV[6], entry); redis.call('XDEL', KEYS[2], entry)
  redis.call('ZREM', KEYS[3], ARGV[5]); redis.call('SREM', KEYS[4], ARGV[5])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel', 'by:' .. ARGV[1], 'finished', ARGV[2])
  publish(KEYS[1], KEYS[5], ARGV[4], ARGV[5], 'cancelled', ARGV[7])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 'cancelled'
elseif state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', 'by:' .. ARGV[1])
  return 'flagged'
end
return false
"""


def cancel_by(flag: str) -> int | None:
    """The user id in a cancel flag ('by:<id>' or 'by:')."""
    v = flag.removeprefix("by:")
    return int(v) if v.lstrip("-").isdigit() else None


def _event_json(event: Event) -> str:
    return event.model_dump_json(exclude={"seq"})


def decode_event(fields: dict) -> Event:
    """An Event from an events-stream entry (seq lives beside the JSON, assigned by Redis)."""
    f = {_s(k): v for k, v in fields.items()}
    data = json.loads(f["event"])
    data["seq"] = int(f["seq"])
    return EVENT_ADAPTER.validate_python(data)


class Queue:
    """Client side (bot, CLI) and worker side of the job queue on one Redis connection pool."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "clipbot:",
        user_max_jobs: int = 3,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 3,
        blob_ttl_s: int = 86400,
        blob_max_bytes: int = 16 * 1024 * 1024,
        events_maxlen: int = 100_000,
        job_ttl_s: int = 7 * 86400,
    ):
        self.redis = redis
        self.p = prefix
        self.user_max_jobs = user_max_jobs
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.blob_ttl_s = blob_ttl_s
        self.blob_max_bytes = blob_max_bytes
        self.events_maxlen = events_maxlen
        self.job_ttl_s = job_ttl_s
        self.events_key = prefix + "events"
        self.dead_key = prefix + "dead"
        self._groups_ready: set[str] = set()
        r = redis
        self._submit = r.register_script(_LUA_SUBMIT)
        self._claim = r.register_script(_LUA_CLAIM)
        self._publish = r.register_script(_LUA_PUBLISH)
        self._finish = r.register_script(_LUA_FINISH)
        self._release = r.register_script(_LUA_RELEASE)
        self._heartbeat = r.register_script(_LUA_HEARTBEAT)
        self._cancel = r.register_script(_LUA_CANCEL)

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings) -> "Queue":
        return cls(
            redis,
            prefix=settings.redis_prefix,
            user_max_jobs=settings.user_max_jobs,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_deliveries=settings.max_deliveries,
            blob_ttl_s=settings.blob_ttl_s,
            blob_max_bytes=settings.blob_max_bytes,
            events_maxlen=settings.events_maxlen,
            job_ttl_s=settings.job_ttl_s,
        )

    # --- key names
    def stream_key(self, lane: str) -> str:
        return f"{self.p}stream:{lane}"

    def _queue_key(self, lane: str) -> str:
        return f"{self.p}queue:{lane}"

    def _job_key(self, job_id: str) -> str:
        return f"{self.p}job:{job_id}"

    def _user_key(self, user: int) -> str:
        return f"{self.p}user:{user}"

    # ------------------------------------------------------------------ client side

    async def submit(self, job: Job, *, user_limit: int | None = None) -> SubmitResult:
        """Queue a job unless its user already has `user_limit` jobs queued or running (atomic)."""
        limit = self.user_max_jobs if user_limit is None else user_limit
        lane = lane_of(job.kind)
        res = await self._submit(
            keys=[self._job_key(job.id), self._user_key(job.user), self.stream_key(lane),
                  self._queue_key(lane), self.events_key, self.p + "positions"],
            args=[job.id, job.model_dump_json(), job.user, limit, job.kind, lane, repr(time.time()),
                  self.events_maxlen, self.p],
        )
        if int(res[0]) == 1:
            return SubmitResult(True, int(res[1]), None, _s(res[2]))
        why = _s(res[1])
        if why == "limit":
            return SubmitResult(False, 0, f"You already have {int(res[2])} jobs queued or running "
                                f"(limit {limit}). Wait for one to finish, or cancel one.")
        return SubmitResult(False, 0, f"A job with id {job.id} was already submitted.")

    async def position(self, job_id: str) -> int | None:
        """Jobs ahead of this one in its lane; None unless it is queued."""
        lane = await self.redis.hget(self._job_key(job_id), "lane")
        if lane is None:
            return None
        r = await self.redis.zrank(self._queue_key(_s(lane)), job_id)
        return None if r is None else int(r)

    async def queue_length(self, lane: str) -> int:
        return int(await self.redis.zcard(self._queue_key(lane)))

    async def cancel(self, job_id: str, by: int | None = None) -> bool:
        """Cancel a job. Queued: it becomes Cancelled and never runs. Running: the worker is
        asked to stop between steps (it publishes Cancelled). False if it already ended."""
        raw = await self.redis.hmget(self._job_key(job_id), ["lane", "user"])
        if raw[0] is None:
            return False
        lane, user = _s(raw[0]), int(raw[1])
        now = time.time()
        # The event JSON is built here, not in Lua: cjson turns numbers into doubles, and Discord
        # ids (> 2**53) would come back rounded.
        event = Cancelled(job_id=job_id, seq=0, by=by, at=now)
        res = await self._cancel(
            keys=[self._job_key(job_id), self.stream_key(lane), self._queue_key(lane),
                  self._user_key(user), self.events_key],
            args=["" if by is None else int(by), repr(now), self.job_ttl_s,
                  self.events_maxlen, job_id, GROUP, _event_json(event)],
        )
        return res is not None

    async def status(self, job_id: str) -> JobStatus | None:
        h = await self.redis.hgetall(self._job_key(job_id))
        if not h:
            return None
        h = {_s(k): _s(v) for k, v in h.items()}
        state = h.get("state", "")
        pos = await self.position(job_id) if state == "queued" else None
        f = lambda k: float(h[k]) if h.get(k) else None  # noqa: E731
        return JobStatus(
            id=job_id, kind=h.get("kind", ""), state=state, user=int(h.get("user", 0)), position=pos,
            worker=h.get("worker") or None, attempts=int(h.get("attempts", 0)),
            cancel_requested=bool(h.get("cancel")), created=f("created") or 0.0,
            started=f("started"), finished=f("finished"), error=h.get("error") or None,
        )

    async def job(self, job_id: str) -> Job | None:
        raw = await self.redis.hget(self._job_key(job_id), "json")
        return None if raw is None else parse_job(raw)

    async def user_jobs(self, user: int) -> list[JobStatus]:
        """The user's queued and running jobs, oldest first."""
        ids = [_s(m) for m in await self.redis.smembers(self._user_key(user))]
        out = [s for s in [await self.status(i) for i in ids] if s and s.state in ACTIVE_STATES]
        return sorted(out, key=lambda s: s.created)

    # --- blobs
    async def put_blob(self, data: bytes, ttl: int | None = None) -> str:
        if len(data) > self.blob_max_bytes:
            raise BlobTooLarge(f"file is {len(data)} bytes; the limit is {self.blob_max_bytes} bytes")
        key = secrets.token_hex(16)
        await self.redis.set(self.p + "blob:" + key, data, ex=int(ttl or self.blob_ttl_s))
        return key

    async def get_blob(self, key: str) -> bytes | None:
        if not _BLOB_KEY.match(key or ""):
            return None  # never read arbitrary keys on behalf of a job
        return await self.redis.get(self.p + "blob:" + key)

    # --- worker registry
    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        key = self.p + "worker:" + info.id
        now = time.time()
        data = {k: json.dumps(v) for k, v in info.__dict__.items()}
        data["seen"] = json.dumps(now)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=data)
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(self.p + "workers", {info.id: now + ttl_s})
            await pipe.execute()

    async def unregister_worker(self, worker_id: str) -> None:
        await self.redis.delete(self.p + "worker:" + worker_id)
        await self.redis.zrem(self.p + "workers", worker_id)

    async def workers(self) -> list[WorkerInfo]:
        """Live workers (those whose registry entry has not expired)."""
        reg = self.p + "workers"
        await self.redis.zremrangebyscore(reg, "-inf", time.time())
        out = []
        for wid in await self.redis.zrange(reg, 0, -1):
            h = await self.redis.hgetall(self.p + "worker:" + _s(wid))
            if h:
                out.append(WorkerInfo(**{_s(k): json.loads(v) for k, v in h.items()}))
        return out

    # --- events, for followers (the CLI) that are not a consumer group
    async def follow(self, job_id: str, after: str = "0-0", block_ms: int = 1000,
                     timeout_s: float | None = None) -> AsyncIterator[Event]:
        """Yield the job's events after events-stream id `after`, ending with its final event."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = after
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no final event for job {job_id} within {timeout_s}s")
            res = await self.redis.xread({self.events_key: last}, count=500, block=block_ms)
            for _, entries in res or []:
                for entry_id, fields in entries:
                    last = _s(entry_id)
                    if _s(fields.get(b"job", b"")) != job_id:
                        continue
                    ev = decode_event(fields)
                    yield ev
                    if isinstance(ev, FINAL_EVENTS):
                        return

    async def last_event_id(self) -> str:
        res = await self.redis.xrevrange(self.events_key, count=1)
        return _s(res[0][0]) if res else "0-0"

    # ------------------------------------------------------------------ worker side

    async def ensure_groups(self, lanes=LANES) -> None:
        for lane in lanes:
            if lane in self._groups_ready:
                continue
            try:
                await self.redis.xgroup_create(self.stream_key(lane), GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self._groups_ready.add(lane)

    async def take(self, lane: str, consumer: str, count: int = 1, block_ms: int | None = 1000) -> list[Delivery]:
        """New jobs from a lane for this consumer. block_ms None or 0 = do not wait."""
        await self.ensure_groups([lane])
        try:
            res = await self.redis.xreadgroup(GROUP, consumer, {self.stream_key(lane): ">"},
                                              count=count, block=block_ms or None)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._groups_ready.discard(lane)  # Redis lost its data: recreate and retry later
            return []
        entries = [e for _, es in (res or []) for e in es]
        return await self._claim_entries(lane, consumer, entries)

    async def reclaim(self, lane: str, consumer: str, count: int = 1) -> list[Delivery]:
        """Take over jobs whose worker has been silent longer than the visibility timeout.
        A job past max deliveries is dead-lettered and its user gets a Failed event."""
        await self.ensure_groups([lane])
        res = await self.redis.xautoclaim(self.stream_key(lane), GROUP, consumer,
                                          int(self.visibility_timeout_s * 1000), "0-0", count=count)
        entries = res[1] if len(res) > 1 else []
        out: list[tuple] = []
        for entry in entries:
            if entry is None or entry[1] is None:  # deleted under us (Redis 6.2 returns nil)
                if entry is not None:
                    await self.redis.xack(self.stream_key(lane), GROUP, entry[0])
                continue
            out.append(entry)
        return await self._claim_entries(lane, consumer, out)

    async def _claim_entries(self, lane: str, consumer: str, entries) -> list[Delivery]:
        out = []
        for entry_id, fields in entries:
            entry_id = _s(entry_id)
            raw = (fields or {}).get(b"job")
            try:
                job = parse_job(raw if raw is not None else b"")
            except (ValidationError, ValueError) as e:
                await self.dead_letter(lane, entry_id, fields or {}, f"malformed job: {_short(e)}")
                continue
            res = await self._claim(
                keys=[self._job_key(job.id), self.stream_key(lane), self._queue_key(lane),
                      self.events_key, self.dead_key, self._user_key(job.user)],
                args=[entry_id, consumer, self.max_deliveries, repr(time.time()), GROUP, job.id,
                      self.events_maxlen, self.job_ttl_s],
            )
            if _s(res[0]) == "ok":
                out.append(Delivery(lane, entry_id, job, _s(res[1]), int(res[2]), _s(res[3])))
            elif _s(res[0]) == "dead":
                log.warning("job %s dead-lettered: %s", job.id, _s(res[1]))
        return out

    async def prune_consumers(self, lane: str, min_idle_s: float = 3600.0) -> list[str]:
        """Forget consumers (workers long gone) that hold no pending job. Each worker process is
        a consumer named after it; without this the group's consumer list only grows."""
        await self.ensure_groups([lane])
        gone = []
        for c in await self.redis.xinfo_consumers(self.stream_key(lane), GROUP):
            name = _s(c["name"])
            if int(c["pending"]) == 0 and int(c["idle"]) >= min_idle_s * 1000:
                await self.redis.xgroup_delconsumer(self.stream_key(lane), GROUP, name)
                gone.append(name)
        return gone

    async def dead_letter(self, lane: str, entry_id: str, fields: dict, reason: str) -> None:
        """Move a stream entry that cannot be run to the dead-letter stream, with the reason."""
        log.warning("dead-lettering %s %s: %s", lane, entry_id, reason)
        safe = {("f_" + _s(k))[:64]: (v if isinstance(v, bytes) else str(v))[:65536] for k, v in fields.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_key, {"lane": lane, "entry": entry_id, "reason": reason,
                                      "at": repr(time.time()), **safe})
            pipe.xack(self.stream_key(lane), GROUP, entry_id)
            pipe.xdel(self.stream_key(lane), entry_id)
            await pipe.execute()

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        res = await self.redis.xrange(self.dead_key, count=count)
        return [{_s(k): _s(v) for k, v in f.items()} for _, f in res]

    async def heartbeat(self, consumer: str, deliveries: list[Delivery]) -> dict[str, tuple[bool, str]]:
        """Keep claims fresh (reset their idle time). Returns job id -> (still ours, cancel flag)."""
        out = {}
        for d in deliveries:
            res = await self._heartbeat(keys=[self._job_key(d.job.id), self.stream_key(d.lane)],
                                        args=[d.token, GROUP, consumer, d.entry_id])
            out[d.job.id] = (bool(int(res[0])), _s(res[1]))
        return out

    async def cancel_flag(self, job_id: str) -> str:
        """'' if not asked to cancel, else 'by:<user id>'."""
        v = await self.redis.hget(self._job_key(job_id), "cancel")
        return _s(v) if v else ""

    async def publish(self, d: Delivery, event: Event) -> int | None:
        """Publish a non-final event for a held job; seq is assigned atomically.
        Returns the seq, or None if this worker no longer holds the job."""
        res = await self._publish(keys=[self._job_key(d.job.id), self.events_key],
                                  args=[d.token, d.job.id, event.type, _event_json(event), self.events_maxlen])
        return None if res is None else int(res[0])

    async def finish(self, d: Delivery, event: Event) -> int | None:
        """Publish the final event (Result / Failed / Cancelled) and ack the job, atomically.
        None if the claim was lost (another worker owns the job now): nothing is published."""
        assert isinstance(event, FINAL_EVENTS), event
        state = {Result: "done", Failed: "failed", Cancelled: "cancelled"}[type(event)]
        error = event.reason if isinstance(event, Failed) else ""
        res = await self._finish(
            keys=[self._job_key(d.job.id), self.stream_key(d.lane), self._user_key(d.job.user), self.events_key],
            args=[d.token, d.entry_id, GROUP, state, event.type, _event_json(event), repr(time.time()),
                  self.job_ttl_s, self.events_maxlen, d.job.id, error],
        )
        return None if res is None else int(res[0])

    async def release(self, d: Delivery, *, refund: bool = False, error: str = "") -> bool:
        """Give a held job back to the queue (graceful shutdown, or an unexpected error: then the
        attempt counts toward max deliveries unless `refund`)."""
        res = await self._release(
            keys=[self._job_key(d.job.id), self.stream_key(d.lane), self._queue_key(d.lane), self.p + "positions"],
            args=[d.token, d.entry_id, GROUP, "1" if refund else "0", error[:500], d.job.id],
        )
        return res is not None


def _short(e: Exception) -> str:
    return str(e).replace("\n", " ")[:300]


class EventReader:
    """The bot's side of the events stream: a consumer group, so events published while the bot
    is down are delivered when it returns, and redelivered if it died before acking them.

        reader = EventReader(redis, group="bot", consumer="bot-1")
        for d in await reader.read():
            await reader.apply_once(d, handle)   # skips (job, seq) already applied, then acks
    """

    def __init__(self, redis: aioredis.Redis, *, group: str = "bot", consumer: str = "bot",
                 prefix: str = "clipbot:", applied_ttl_s: int = 7 * 86400):
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.p = prefix
        self.events_key = prefix + "events"
        self.applied_ttl_s = applied_ttl_s
        self._ready = False
        self._pending_first = True  # after a restart, our own unacked entries come first

    async def _ensure(self) -> None:
        if self._ready:
            return
        try:
            await self.redis.xgroup_create(self.events_key, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._ready = True

    async def read(self, count: int = 100, block_ms: int | None = 1000) -> list[EventDelivery]:
        await self._ensure()
        start = "0" if self._pending_first else ">"
        try:
            res = await self.redis.xreadgroup(self.group, self.consumer, {self.events_key: start},
                                              count=count, block=None if self._pending_first else (block_ms or None))
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._ready = False
            return []
        entries = [e for _, es in (res or []) for e in es]
        if self._pending_first and not entries:
            self._pending_first = False
            return await self.read(count, block_ms)
        out = []
        for entry_id, fields in entries:
            entry_id = _s(entry_id)
            if fields is None:  # trimmed away while pending
                await self.ack_ids(entry_id)
                continue
            try:
                out.append(EventDelivery(entry_id, decode_event(fields)))
            except (ValidationError, ValueError, KeyError) as e:
                log.warning("dropping malformed event %s: %s", entry_id, _short(e))
                await self.redis.xadd(self.p + "dead", {"lane": "events", "entry": entry_id,
                                                        "reason": f"malformed event: {_short(e)}"})
                await self.ack_ids(entry_id)
        if self._pending_first and len(entries) < count:
            self._pending_first = False
        return out

    async def ack(self, *deliveries: EventDelivery) -> None:
        await self.ack_ids(*[d.entry_id for d in deliveries])

    async def ack_ids(self, *entry_ids: str) -> None:
        if entry_ids:
            await self.redis.xack(self.events_key, self.group, *entry_ids)

    def _applied_key(self, job_id: str) -> str:
        return f"{self.p}applied:{self.group}:{job_id}"

    async def seen(self, event: Event) -> bool:
        return bool(await self.redis.sismember(self._applied_key(event.job_id), event.seq))

    async def mark_applied(self, event: Event) -> bool:
        """Record (job, seq) as applied. True if it was not recorded before."""
        key = self._applied_key(event.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, event.seq)
            pipe.expire(key, self.applied_ttl_s)
            added, _ = await pipe.execute()
        return bool(added)

    async def apply_once(self, d: EventDelivery, fn: Callable[[Event], Awaitable[None]]) -> bool:
        """Apply an event unless its (job, seq) was applied before, record it, ack it.
        If `fn` raises, nothing is recorded or acked: the event is delivered again.
        Returns True if `fn` ran."""
        ran = False
        if not await self.seen(d.event):
            await fn(d.event)
            await self.mark_applied(d.event)
            ran = True
        await self.ack(d)
        return ran


def queue_from_url(url: str, settings=None, *, max_connections: int = 64, **kw) -> Queue:
    """A Queue on a new connection pool (binary-safe: blobs are bytes).

    The pool *blocks* when all its connections are busy: a burst of commands waits for a free
    connection instead of failing with MaxConnectionsError (redis-py's default pool raises)."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=20)
    r = aioredis.Redis.from_pool(pool)
    if settings is not None:
        return Queue.from_settings(r, settings)
    return Queue(r, **kw)
