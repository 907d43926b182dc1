"""The live worker registry: each worker refreshes its entry; one that stops is gone after its TTL."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from jobs.queue_base import QueueBase
from jobs.streams import as_text


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    models: list[str] = field(default_factory=list)
    device: str = "cpu"
    lanes: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)  # job ids being worked on
    max_pixels: int = 0  # largest picture its imagine engine admits; 0 = not declared
    started: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)
    # measured seconds per step of one picture, per requested size (`size_key`), at the worker's
    # usual load (jobs running together share the time): the bot's queue ETAs
    step_s: dict[str, float] = field(default_factory=dict)


def size_key(width: int, height: int) -> str:
    """How `WorkerInfo.step_s` names an imagine job's size: as requested ("0x0": the worker's default)."""
    return f"{width}x{height}"


_FIELDS = {f.name for f in dataclasses.fields(WorkerInfo)}


class WorkerRegistry(QueueBase):
    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        key = self.keys.worker(info.id)
        now = time.time()
        data = {k: json.dumps(v) for k, v in info.__dict__.items()}
        data["seen"] = json.dumps(now)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=data)
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(self.keys.workers, {info.id: now + ttl_s})
            await pipe.execute()

    async def unregister_worker(self, worker_id: str) -> None:
        await self.redis.delete(self.keys.worker(worker_id))
        await self.redis.zrem(self.keys.workers, worker_id)

    async def workers(self) -> list[WorkerInfo]:
        """Live workers (those whose registry entry has not expired)."""
        await self.redis.zremrangebyscore(self.keys.workers, "-inf", time.time())
        out = []
        for wid in await self.redis.zrange(self.keys.workers, 0, -1):
            h = await self.redis.hgetall(self.keys.worker(as_text(wid)))
            if h:
                fields = {as_text(k): json.loads(v) for k, v in h.items()}
                # a newer worker may publish fields this process does not know yet (rolling upgrades)
                out.append(WorkerInfo(**{k: v for k, v in fields.items() if k in _FIELDS}))
        return out
