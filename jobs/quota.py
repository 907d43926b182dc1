"""Daily generation quotas: how many jobs one member may start per server per UTC day.

A member's day is one Redis set of job ids, `quota:<guild>:<user>:<YYYYMMDD>` (UTC), expiring at
the next UTC midnight (plus an hour, so a refund just after midnight still finds the set). A set,
not a counter, so that taking and refunding are idempotent: a retried submit of the same job is
not counted twice, and a refund removes only a job that was counted.

`QUOTA_LUA_FN` is a Lua function the queue's submit script (jobs/scripts.py `SUBMIT`) calls after
the per-user limit, duplicate and cooldown checks and before its first write, so the limit, the
cooldown and the daily quota are one atomic step and a refusal changes nothing; `Queue.submit`
passes the key (`Keys.quota`) and the limit (`daily_quota`, 0 = unlimited; only imagine jobs
count). `DailyQuota.reserve` runs the same function alone: with `refund`, a standalone "reserve,
then give back if the submit is refused" pair.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from jobs.keys import Keys

# quota_take(key, job, limit, expire_at) -> {1, used} when the job may start (counted now, or
# already counted: idempotent), {0, used} when the day's quota is used up. limit <= 0: unlimited,
# nothing is recorded.
QUOTA_LUA_FN = """
local function quota_take(key, job, limit, expire_at)
  if limit <= 0 then return {1, 0} end
  if redis.call('SISMEMBER', key, job) == 1 then return {1, redis.call('SCARD', key)} end
  local used = redis.call('SCARD', key)
  if used >= limit then return {0, used} end
  redis.call('SADD', key, job)
  redis.call('EXPIREAT', key, expire_at)
  return {1, used + 1}
end
"""

# KEYS: the member's day set. ARGV: job id, limit, expire_at (unix seconds)
_RESERVE = QUOTA_LUA_FN + """
return quota_take(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
"""

_GRACE_S = 3600  # the day's set outlives midnight by this much: late refunds still land


def day_of(now: float) -> str:
    """The UTC day `now` falls in, as YYYYMMDD."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d")


def next_reset(now: float) -> float:
    """The next UTC midnight after `now` (unix seconds): when every member's count starts again."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def quota_expiry(now: float) -> float:
    """When a day's set may go: the next UTC midnight plus a grace, so late refunds still land."""
    return next_reset(now) + _GRACE_S


@dataclass(frozen=True)
class Reservation:
    ok: bool
    used: int  # jobs counted today, this one included when ok
    limit: int  # 0: unlimited
    guild: int
    user: int
    job_id: str
    day: str  # the UTC day it was counted in: a refund goes back to that day
    resets_at: float

    @property
    def left(self) -> int | None:
        return None if self.limit <= 0 else max(self.limit - self.used, 0)


class DailyQuota:
    def __init__(self, redis, prefix: str = "clipbot:"):
        self.redis, self.keys = redis, Keys(prefix)
        self._reserve = redis.register_script(_RESERVE)

    def key(self, guild: int | None, user: int, day: str) -> str:
        return self.keys.quota(guild, user, day)

    def submit_seam(self, guild: int | None, user: int, job_id: str, limit: int,
                    now: float | None = None) -> tuple[str, list]:
        """(key, [job id, limit, expire_at]) for the submit script's `quota_take` call."""
        now = time.time() if now is None else now
        return self.key(guild, user, day_of(now)), [job_id, int(limit), int(quota_expiry(now))]

    async def reserve(self, guild: int | None, user: int, job_id: str, limit: int,
                      now: float | None = None) -> Reservation:
        """Count `job_id` against today's quota unless it is used up (atomic; idempotent per job)."""
        now = time.time() if now is None else now
        key, args = self.submit_seam(guild, user, job_id, limit, now)
        ok, used = await self._reserve(keys=[key], args=args)
        return Reservation(bool(int(ok)), int(used), int(limit), guild or 0, user, job_id, day_of(now), next_reset(now))

    async def refund(self, r: Reservation) -> bool:
        """Give a counted job back (the submit was refused, or it never ran); True if it was counted."""
        return bool(await self.redis.srem(self.key(r.guild, r.user, r.day), r.job_id))

    async def used(self, guild: int | None, user: int, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(await self.redis.scard(self.key(guild, user, day_of(now))))
