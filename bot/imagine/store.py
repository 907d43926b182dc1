"""What the bot keeps of a finished generation after posting it: its Result (so Refine, Similar
and Pick a frame can find its pictures' blobs) and its lineage (which generation a Re-roll or a
Refine came from, and which came from it). JSON and sets in Redis, kept as long as job records.
"""
from __future__ import annotations

from dataclasses import dataclass

from bot.jobstore import JobRecord
from jobs.schemas import Result


@dataclass(frozen=True)
class Link:
    """One edge of a generation's lineage: `job` was made from `parent` by `how` (refine / reroll)."""
    job: str
    parent: str
    how: str
    index: int | None = None  # the parent's picture a refine started from


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class GenerationStore:
    def __init__(self, redis, prefix: str, ttl_s: int):
        self.redis, self.key_prefix, self.ttl_s = redis, f"{prefix}bot:", ttl_s

    # ------------------------------------------------------------------ results

    async def put_result(self, result: Result) -> None:
        await self.redis.set(f"{self.key_prefix}result:{result.job_id}", result.model_dump_json(), ex=self.ttl_s)

    async def result(self, job_id: str) -> Result | None:
        raw = await self.redis.get(f"{self.key_prefix}result:{job_id}")
        return Result.model_validate_json(raw) if raw else None

    # ------------------------------------------------------------------ a member's history

    HISTORY = 25  # generations kept per member and server

    def _history_key(self, guild: int | None, user: int) -> str:
        return f"{self.key_prefix}history:{guild or 0}:{user}"

    async def remember(self, guild: int | None, user: int, job_id: str) -> None:
        """A generation of `user` was posted: newest first, the last HISTORY kept."""
        key = self._history_key(guild, user)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrem(key, 0, job_id)
        pipe.lpush(key, job_id)
        pipe.ltrim(key, 0, self.HISTORY - 1)
        pipe.expire(key, self.ttl_s)
        await pipe.execute()

    async def history(self, guild: int | None, user: int, n: int = 10) -> list[str]:
        return [_text(raw) for raw in await self.redis.lrange(self._history_key(guild, user), 0, n - 1)]

    # ------------------------------------------------------------------ lineage

    async def link(self, link: Link) -> None:
        value = f"{link.parent}|{link.how}|{link.index or ''}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self.key_prefix}parent:{link.job}", value, ex=self.ttl_s)
        pipe.rpush(f"{self.key_prefix}children:{link.parent}", link.job)
        pipe.expire(f"{self.key_prefix}children:{link.parent}", self.ttl_s)
        await pipe.execute()

    async def parent(self, job_id: str) -> Link | None:
        raw = await self.redis.get(f"{self.key_prefix}parent:{job_id}")
        if not raw:
            return None
        parent, how, index = _text(raw).split("|")
        return Link(job_id, parent, how, int(index) if index else None)

    async def children(self, job_id: str) -> list[str]:
        return [_text(raw) for raw in await self.redis.lrange(f"{self.key_prefix}children:{job_id}", 0, -1)]


def lineage_note(parent: JobRecord, how: str, index: int | None = None) -> str:
    """The line under a child generation's caption, linking the parent's message."""
    link = (f"https://discord.com/channels/{parent.guild}/{parent.channel}/{parent.message_id}"
            if parent.guild and parent.channel and parent.message_id else None)
    what = f"picture {index} of this generation" if index else "this generation"
    target = f"[{what}]({link})" if link else what
    return f"🔁 refines {target}" if how == "refine" else f"🎲 re-roll of {target}"
