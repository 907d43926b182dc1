"""Job events on the events stream: encoding, decoding, and the bot's consumer-group reader."""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

from jobs.keys import Keys
from jobs.schemas import EVENT_ADAPTER, Event
from jobs.streams import as_text, create_group, is_missing_group, short_error

log = logging.getLogger(__name__)


def encode_event(event: Event) -> str:
    """An event's JSON for the stream; its seq is assigned by Redis and stored beside it."""
    return event.model_dump_json(exclude={"seq"})


def decode_event(fields: dict) -> Event:
    """An Event from an events-stream entry (seq lives beside the JSON, assigned by Redis)."""
    f = {as_text(k): v for k, v in fields.items()}
    data = json.loads(f["event"])
    data["seq"] = int(f["seq"])
    return EVENT_ADAPTER.validate_python(data)


@dataclass(frozen=True)
class EventEntry:
    """One events-stream entry read through a consumer group: ack it by `entry_id`."""

    entry_id: str
    event: Event


class EventReader:
    """The bot's side of the events stream: a consumer group, so events published while the bot
    is down are delivered when it returns, and redelivered if it died before acking them.

        reader = EventReader(redis, group="bot", consumer="bot-1")
        for entry in await reader.read():
            await reader.apply_once(entry, handle)   # skips (job, seq) already applied, then acks
    """

    def __init__(self, redis: aioredis.Redis, *, group: str = "bot", consumer: str = "bot",
                 prefix: str = "clipbot:", applied_ttl_s: int = 7 * 86400, applied_as: str | None = None):
        self.redis = redis
        self.group = group
        # the name (job, seq) records are kept under: groups sharing one never apply an event twice
        self.applied_as = applied_as or group
        self.consumer = consumer
        self.keys = Keys(prefix)
        self.events_key = self.keys.events
        self.applied_ttl_s = applied_ttl_s
        self._group_ready = False
        self._pending_first = True  # after a restart, our own unacked entries come first

    async def read(self, count: int = 100, block_ms: int | None = 1000) -> list[EventEntry]:
        if not self._group_ready:
            await create_group(self.redis, self.events_key, self.group)
            self._group_ready = True
        start = "0" if self._pending_first else ">"
        try:
            res = await self.redis.xreadgroup(self.group, self.consumer, {self.events_key: start},
                                              count=count, block=None if self._pending_first else (block_ms or None))
        except ResponseError as e:
            if not is_missing_group(e):
                raise
            self._group_ready = False
            return []
        entries = [e for _, es in (res or []) for e in es]
        if self._pending_first and not entries:
            self._pending_first = False
            return await self.read(count, block_ms)
        out = []
        for entry_id, fields in entries:
            entry_id = as_text(entry_id)
            if fields is None:  # trimmed away while pending
                await self.ack_ids(entry_id)
                continue
            try:
                out.append(EventEntry(entry_id, decode_event(fields)))
            except (ValidationError, ValueError, KeyError) as e:
                log.warning("dropping malformed event %s: %s", entry_id, short_error(e))
                await self.redis.xadd(self.keys.dead, {"lane": "events", "entry": entry_id,
                                                       "reason": f"malformed event: {short_error(e)}"})
                await self.ack_ids(entry_id)
        if self._pending_first and len(entries) < count:
            self._pending_first = False
        return out

    async def ack(self, *entries: EventEntry) -> None:
        await self.ack_ids(*[e.entry_id for e in entries])

    async def ack_ids(self, *entry_ids: str) -> None:
        if entry_ids:
            await self.redis.xack(self.events_key, self.group, *entry_ids)

    async def seen(self, event: Event) -> bool:
        return bool(await self.redis.sismember(self.keys.applied(self.applied_as, event.job_id), event.seq))

    async def mark_applied(self, event: Event) -> bool:
        """Record (job, seq) as applied. True if it was not recorded before."""
        key = self.keys.applied(self.applied_as, event.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, event.seq)
            pipe.expire(key, self.applied_ttl_s)
            added, _ = await pipe.execute()
        return bool(added)

    async def apply_once(self, entry: EventEntry, fn: Callable[[Event], Awaitable[None]]) -> bool:
        """Apply an event unless its (job, seq) was applied before, record it, ack it.
        If `fn` raises, nothing is recorded or acked: the event is delivered again.
        Returns True if `fn` ran."""
        ran = False
        if not await self.seen(entry.event):
            await fn(entry.event)
            await self.mark_applied(entry.event)
            ran = True
        await self.ack(entry)
        return ran
