"""Small helpers for Redis replies and stream consumer groups, shared by both sides of the queue."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError


def as_text(value: Any) -> str:
    """A Redis reply value (bytes from a binary-safe client) as text."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def short_error(e: Exception) -> str:
    """An exception as one short line, for dead-letter reasons and logs."""
    return str(e).replace("\n", " ")[:300]


async def create_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Create a consumer group reading `stream` from its start (and the stream if missing);
    a group that already exists is left as it is."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def is_missing_group(e: ResponseError) -> bool:
    """True for NOGROUP: Redis lost the group (e.g. restarted without persistence); the caller
    forgets it created the group, so the next read creates it again."""
    return "NOGROUP" in str(e)
