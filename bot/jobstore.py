"""What the bot remembers about each job it queued: where its events are shown.

A job's events carry only its id; this record (JSON in Redis, with a TTL) says which channel,
message and interaction it belongs to. Being in Redis, it survives a bot restart, so results
that arrive while the bot is down are still delivered when it comes back.
"""
from __future__ import annotations

import time

from pydantic import BaseModel, Field

from jobs.schemas import JOB_ADAPTER, Job


class JobRecord(BaseModel):
    job_json: str  # the job as queued (re-roll reuses its options)
    kind: str
    user: int
    guild: int | None = None
    channel: int | None = None
    interaction_token: str | None = None  # valid 15 minutes after the command
    original_message_id: int | None = None  # the deferred answer to edit with the result
    message_id: int | None = None  # imagine: the channel message edited with progress and the result
    created: float = Field(default_factory=time.time)
    delivered: bool = False
    label: str = ""  # short description for /queue
    note: str = ""  # imagine: a line under the caption (what a refine or re-roll came from)

    @property
    def job(self) -> Job:
        return JOB_ADAPTER.validate_json(self.job_json)

    def token_fresh(self, margin: float = 60.0) -> bool:
        return bool(self.interaction_token) and time.time() - self.created < 15 * 60 - margin


class JobStore:
    def __init__(self, redis, prefix: str, ttl_s: int):
        self.redis, self.key_prefix, self.ttl_s = redis, f"{prefix}bot:job:", ttl_s

    async def put(self, record: JobRecord, job_id: str) -> None:
        await self.redis.set(self.key_prefix + job_id, record.model_dump_json(), ex=self.ttl_s)

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self.key_prefix + job_id)
        return JobRecord.model_validate_json(raw) if raw else None

    async def update(self, job_id: str, **fields) -> JobRecord | None:
        record = await self.get(job_id)
        if record is None:
            return None
        record = record.model_copy(update=fields)
        await self.put(record, job_id)
        return record

    async def delete(self, job_id: str) -> None:
        await self.redis.delete(self.key_prefix + job_id)


def record_for(job: Job, label: str, token: str | None = None, original_message_id: int | None = None) -> JobRecord:
    return JobRecord(job_json=job.model_dump_json(), kind=job.kind, user=job.user, guild=job.guild,
                     channel=job.channel, interaction_token=token, original_message_id=original_message_id,
                     label=label)
