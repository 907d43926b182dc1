"""Votes on generations: per-user sets in Redis, a per-guild leaderboard, the hall of fame once.

Everything lives in Redis, so counts survive restarts. A Lua script makes "record this voter and
update the tally" one atomic step: a repeated reaction event (gateway resend, a user toggling
fast) changes nothing, and two bots sharing one Redis cannot double count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

_VOTE = """
-- KEYS: voters set, generation hash, guild leaderboard zset
-- ARGV: user, 'add'|'remove', field ('up'|'down'), job id, '1'|'0' (the author's own vote counts)
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1, 0, 0} end
local changed
if ARGV[2] == 'add' and ARGV[5] == '0' and redis.call('HGET', KEYS[2], 'user') == ARGV[1] then
  changed = 0  -- the author's own reaction: no vote (a removal still takes back one counted earlier)
elseif ARGV[2] == 'add' then changed = redis.call('SADD', KEYS[1], ARGV[1])
else changed = redis.call('SREM', KEYS[1], ARGV[1]) end
if changed == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[2] == 'add' and 1 or -1)
end
local up = tonumber(redis.call('HGET', KEYS[2], 'up') or '0')
local down = tonumber(redis.call('HGET', KEYS[2], 'down') or '0')
if changed == 1 then redis.call('ZADD', KEYS[3], up - down, ARGV[4]) end
return {changed, up, down}
"""

PERIODS = {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "all": None}


@dataclass(frozen=True)
class Generation:
    job_id: str
    guild: int
    channel: int
    message_id: int
    user: int
    prompt: str
    created: float
    up: int = 0
    down: int = 0
    image_url: str = ""

    @property
    def score(self) -> int:
        return self.up - self.down

    @property
    def link(self) -> str:
        return f"https://discord.com/channels/{self.guild}/{self.channel}/{self.message_id}"


@dataclass(frozen=True)
class VoteResult:
    job_id: str
    changed: bool
    up: int
    down: int


class VoteBook:
    def __init__(self, redis, prefix: str):
        self.redis, self.key_prefix = redis, f"{prefix}bot:"
        self._vote = redis.register_script(_VOTE)

    def _generation_key(self, job_id: str) -> str:
        return f"{self.key_prefix}gen:{job_id}"

    async def register(self, gen: Generation) -> None:
        """A finished generation's message becomes votable (idempotent: keeps existing counts)."""
        key = self._generation_key(gen.job_id)
        fields = {"guild": gen.guild, "channel": gen.channel, "message_id": gen.message_id, "user": gen.user,
                  "prompt": gen.prompt, "created": gen.created, "image_url": gen.image_url}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.hsetnx(key, "up", 0)
        pipe.hsetnx(key, "down", 0)
        pipe.set(f"{self.key_prefix}genmsg:{gen.message_id}", gen.job_id)
        pipe.zadd(f"{self.key_prefix}top:{gen.guild}", {gen.job_id: 0}, nx=True)
        await pipe.execute()

    async def job_for_message(self, message_id: int) -> str | None:
        raw = await self.redis.get(f"{self.key_prefix}genmsg:{message_id}")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def vote(self, message_id: int, guild: int, user: int, up: bool, add: bool,
                   self_votes: bool = True) -> VoteResult | None:
        """Record one reaction; None when the message is not a generation. self_votes=False: the
        author's own reaction counts nothing (checked in the same atomic step)."""
        job_id = await self.job_for_message(message_id)
        if job_id is None:
            return None
        field = "up" if up else "down"
        changed, up_count, down_count = await self._vote(
            keys=[f"{self.key_prefix}voters:{job_id}:{field}", self._generation_key(job_id),
                  f"{self.key_prefix}top:{guild}"],
            args=[user, "add" if add else "remove", field, job_id, "1" if self_votes else "0"],
        )
        if changed == -1:
            return None
        return VoteResult(job_id, bool(changed), int(up_count), int(down_count))

    async def claim_hall_of_fame(self, job_id: str) -> bool:
        """True exactly once per generation: the caller reposts it."""
        return bool(await self.redis.set(f"{self.key_prefix}hof:{job_id}", b"1", nx=True))

    async def get(self, job_id: str) -> Generation | None:
        raw = await self.redis.hgetall(self._generation_key(job_id))
        if not raw:
            return None
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        return Generation(job_id=job_id, guild=int(fields["guild"]), channel=int(fields["channel"]),
                          message_id=int(fields["message_id"]), user=int(fields["user"]), prompt=fields["prompt"],
                          created=float(fields["created"]), up=int(fields.get("up", 0)),
                          down=int(fields.get("down", 0)), image_url=fields.get("image_url", ""))

    async def top(self, guild: int, period: str = "all", n: int = 10) -> list[Generation]:
        """Most-voted generations of a guild created within the period, best first."""
        span = PERIODS[period]
        since = 0.0 if span is None else time.time() - span
        found: list[Generation] = []
        start, page = 0, 200
        while len(found) < n:  # walk the leaderboard best-first, skipping ones outside the period
            ids = await self.redis.zrevrange(f"{self.key_prefix}top:{guild}", start, start + page - 1)
            if not ids:
                break
            for raw in ids:
                gen = await self.get(raw.decode())
                if gen is not None and gen.created >= since and gen.up + gen.down > 0:
                    found.append(gen)
                    if len(found) == n:
                        break
            start += page
        return found

    async def set_image(self, job_id: str, image_url: str) -> None:
        """The picture shown for a generation changed (its author picked an earlier frame)."""
        if await self.redis.exists(self._generation_key(job_id)):
            await self.redis.hset(self._generation_key(job_id), "image_url", image_url)
