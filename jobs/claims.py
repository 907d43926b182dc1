"""The worker side of the job queue: take, reclaim, heartbeat, publish, finish, release.

A worker holds a job through a `Claim`; its token proves the claim to the Lua scripts, so a
worker whose job was taken over (after the visibility timeout) can no longer publish for it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pydantic import ValidationError
from redis.exceptions import ResponseError

from jobs.events import encode_event
from jobs.keys import LANES, WORKER_GROUP
from jobs.queue_base import QueueBase
from jobs.schemas import FINAL_EVENTS, Cancelled, Event, Failed, Job, Result, parse_job
from jobs.streams import as_text, create_group, is_missing_group, short_error

log = logging.getLogger(__name__)

_FINAL_STATE = {Result: "done", Failed: "failed", Cancelled: "cancelled"}


@dataclass(frozen=True)
class Claim:
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


class ClaimQueue(QueueBase):
    """Take jobs, keep them, report on them, end them."""

    async def ensure_groups(self, lanes=LANES) -> None:
        for lane in lanes:
            if lane not in self._lanes_with_group:
                await create_group(self.redis, self.keys.stream(lane), WORKER_GROUP)
                self._lanes_with_group.add(lane)

    async def take(self, lane: str, consumer: str, count: int = 1, block_ms: int | None = 1000) -> list[Claim]:
        """The best waiting jobs of a lane (fair-share round, then arrival) for this consumer.
        block_ms None or 0 = do not wait; else wait up to block_ms for a submit's wake-up."""
        await self.ensure_groups([lane])
        entries = await self._take_now(lane, consumer, count)
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while not entries and (left := deadline - time.monotonic()) > 0.001:
            # a submit (or a job given back) pushes to the wake list after queueing; one pushed
            # between the take above and this wait is still there, so no wake-up is lost. A stale
            # one (its job taken by a busy worker) costs one more look; a take that empties the
            # waiting set clears them.
            await self.redis.blpop([self.keys.wake(lane)], timeout=max(left, 0.01))
            entries = await self._take_now(lane, consumer, count)
        return await self._claim_entries(lane, consumer, entries)

    async def _take_now(self, lane: str, consumer: str, count: int) -> list:
        k = self.keys
        try:
            res = await self.scripts.take(keys=[k.stream(lane), k.queue(lane), k.round(lane), k.wake(lane)],
                                          args=[WORKER_GROUP, consumer, count, k.prefix])
        except ResponseError as e:
            if not is_missing_group(e):
                raise
            self._lanes_with_group.discard(lane)
            return []
        # XREADGROUP inside Lua gives each entry's fields as a flat list
        return [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in res or []]

    async def reclaim(self, lane: str, consumer: str, count: int = 1) -> list[Claim]:
        """Take over jobs whose worker has been silent longer than the visibility timeout.
        A job past max deliveries is dead-lettered and its user gets a Failed event."""
        await self.ensure_groups([lane])
        stream = self.keys.stream(lane)
        res = await self.redis.xautoclaim(stream, WORKER_GROUP, consumer,
                                          int(self.visibility_timeout_s * 1000), "0-0", count=count)
        entries = res[1] if len(res) > 1 else []
        out: list[tuple] = []
        for entry in entries:
            if entry is None or entry[1] is None:  # deleted under us (Redis 6.2 returns nil)
                if entry is not None:
                    await self.redis.xack(stream, WORKER_GROUP, entry[0])
                continue
            out.append(entry)
        return await self._claim_entries(lane, consumer, out)

    async def reclaim_dead(self, lane: str, consumer: str, min_idle_s: float, count: int = 1) -> list[Claim]:
        """Take over jobs held by workers whose registry entry expired (they missed several
        heartbeats: dead), without waiting for the visibility timeout.

        Two proofs of death must agree: the consumer's registry entry is gone (its TTL is a few
        heartbeats, kept by Redis's own clock), and the entry itself was not heartbeaten for
        `min_idle_s` (XCLAIM's min-idle re-checks that atomically, so a worker that beats in
        between keeps its job). Claimed through the same script as every take: the attempt is
        counted, a new claim token fences the old holder out, Started is published."""
        if count <= 0:
            return []
        await self.ensure_groups([lane])
        stream = self.keys.stream(lane)
        min_idle_ms = int(min_idle_s * 1000)
        claimed = []
        for c in await self.redis.xinfo_consumers(stream, WORKER_GROUP):
            name = as_text(c["name"])
            if name == consumer or int(c["pending"]) == 0 or await self.redis.exists(self.keys.worker(name)):
                continue
            pending = await self.redis.xpending_range(stream, WORKER_GROUP, min="-", max="+", count=count - len(claimed),
                                                      consumername=name, idle=min_idle_ms)
            ids = [p["message_id"] for p in pending]
            if not ids:
                continue
            log.warning("worker %s is gone (no registry entry): reclaiming %d job(s) on %s", name, len(ids), lane)
            for entry in await self.redis.xclaim(stream, WORKER_GROUP, consumer, min_idle_ms, ids):
                if entry is None or entry[0] is None or entry[1] is None:  # deleted under us
                    if entry is not None and entry[0] is not None:
                        await self.redis.xack(stream, WORKER_GROUP, entry[0])
                    continue
                claimed.append(entry)
            if len(claimed) >= count:
                break
        return await self._claim_entries(lane, consumer, claimed)

    async def adopt_own(self, lane: str, consumer: str, count: int = 1) -> list[Claim]:
        """Jobs still pending under this consumer's name when it starts: a previous process with
        the same worker id (a restarted container keeps its hostname and pid 1) died holding them.
        Its registry entry is this process's now, so `reclaim_dead` would never see it dead."""
        if count <= 0:
            return []
        await self.ensure_groups([lane])
        stream = self.keys.stream(lane)
        pending = await self.redis.xpending_range(stream, WORKER_GROUP, min="-", max="+", count=count,
                                                  consumername=consumer)
        ids = [p["message_id"] for p in pending]
        if not ids:
            return []
        log.warning("%d job(s) on %s were left by a previous process named %s: taking them over", len(ids), lane, consumer)
        entries = [e for e in await self.redis.xclaim(stream, WORKER_GROUP, consumer, 0, ids)
                   if e is not None and e[0] is not None and e[1] is not None]
        return await self._claim_entries(lane, consumer, entries)

    async def _claim_entries(self, lane: str, consumer: str, entries) -> list[Claim]:
        k = self.keys
        out = []
        for entry_id, fields in entries:
            entry_id = as_text(entry_id)
            raw = (fields or {}).get(b"job")
            try:
                job = parse_job(raw if raw is not None else b"")
            except (ValidationError, ValueError) as e:
                await self.dead_letter(lane, entry_id, fields or {}, f"malformed job: {short_error(e)}")
                continue
            res = await self.scripts.claim(
                keys=[k.job(job.id), k.stream(lane), k.queue(lane), k.events, k.dead, k.user(job.user)],
                args=[entry_id, consumer, self.max_deliveries, repr(time.time()), WORKER_GROUP, job.id,
                      self.events_maxlen, self.job_ttl_s],
            )
            outcome = as_text(res[0])
            if outcome == "ok":
                out.append(Claim(lane, entry_id, job, as_text(res[1]), int(res[2]), as_text(res[3])))
            elif outcome == "dead":
                log.warning("job %s dead-lettered: %s", job.id, as_text(res[1]))
        return out

    async def prune_consumers(self, lane: str, min_idle_s: float = 3600.0) -> list[str]:
        """Forget consumers (workers long gone) that hold no pending job. Each worker process is
        a consumer named after it; without this the group's consumer list only grows."""
        await self.ensure_groups([lane])
        stream = self.keys.stream(lane)
        gone = []
        for c in await self.redis.xinfo_consumers(stream, WORKER_GROUP):
            name = as_text(c["name"])
            if int(c["pending"]) == 0 and int(c["idle"]) >= min_idle_s * 1000:
                await self.redis.xgroup_delconsumer(stream, WORKER_GROUP, name)
                gone.append(name)
        return gone

    async def dead_letter(self, lane: str, entry_id: str, fields: dict, reason: str) -> None:
        """Move a stream entry that cannot be run to the dead-letter stream, with the reason."""
        log.warning("dead-lettering %s %s: %s", lane, entry_id, reason)
        safe = {("f_" + as_text(k))[:64]: (v if isinstance(v, bytes) else str(v))[:65536] for k, v in fields.items()}
        stream = self.keys.stream(lane)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead, {"lane": lane, "entry": entry_id, "reason": reason,
                                       "at": repr(time.time()), **safe})
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def heartbeat(self, consumer: str, claims: list[Claim]) -> dict[str, tuple[bool, str]]:
        """Keep claims fresh (reset their idle time). Returns job id -> (still ours, cancel flag)."""
        out = {}
        for c in claims:
            res = await self.scripts.heartbeat(keys=[self.keys.job(c.job.id), self.keys.stream(c.lane)],
                                               args=[c.token, WORKER_GROUP, consumer, c.entry_id])
            out[c.job.id] = (bool(int(res[0])), as_text(res[1]))
        return out

    async def publish(self, claim: Claim, event: Event) -> int | None:
        """Publish a non-final event for a held job; seq is assigned atomically.
        Returns the seq, or None if this worker no longer holds the job."""
        res = await self.scripts.publish(
            keys=[self.keys.job(claim.job.id), self.keys.events],
            args=[claim.token, claim.job.id, event.type, encode_event(event), self.events_maxlen],
        )
        return None if res is None else int(res[0])

    async def finish(self, claim: Claim, event: Event) -> int | None:
        """Publish the final event (Result / Failed / Cancelled) and ack the job, atomically.
        None if the claim was lost (another worker owns the job now): nothing is published."""
        assert isinstance(event, FINAL_EVENTS), event
        error = event.reason if isinstance(event, Failed) else ""
        k, job = self.keys, claim.job
        res = await self.scripts.finish(
            keys=[k.job(job.id), k.stream(claim.lane), k.user(job.user), k.events],
            args=[claim.token, claim.entry_id, WORKER_GROUP, _FINAL_STATE[type(event)], event.type,
                  encode_event(event), repr(time.time()), self.job_ttl_s, self.events_maxlen, job.id, error],
        )
        return None if res is None else int(res[0])

    async def release(self, claim: Claim, *, refund: bool = False, error: str = "") -> bool:
        """Give a held job back to the queue (graceful shutdown, or an unexpected error: then the
        attempt counts toward max deliveries unless `refund`)."""
        k, job = self.keys, claim.job
        res = await self.scripts.release(
            keys=[k.job(job.id), k.stream(claim.lane), k.queue(claim.lane), k.wake(claim.lane)],
            args=[claim.token, claim.entry_id, WORKER_GROUP, "1" if refund else "0", error[:500], job.id],
        )
        return res is not None
