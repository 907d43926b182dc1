"""Image blobs in Redis with a byte budget: put, get, delete once consumed, keep for a bounded time.

Every blob is `blob:<32 hex>` with a TTL. Its size is also recorded in the hash `blobs:size`, its
expiry in the sorted set `blobs:expiry`, and the total in the counter `blobs:bytes`; each change to
the three is one Lua script, so the total is exact: a put adds the size, a delete subtracts it only
if the blob was still counted (deleting twice frees once), and a blob that expired is subtracted by
`sweep` (run before every read of the total), which finds it in `blobs:expiry` and sees it gone.

Who deletes what (README, "Reliability"): the worker deletes a job's previous preview when it
publishes a new one and its last preview when the job ends; a job's input images are deleted when it
ends (classify) or kept at most `result_keep_s` (imagine, find, index: Re-roll reuses an upload, and
a generation's picture can be the input of another job); the bot deletes a preview once shown and, once
a result is posted, its GIF and extras, keeping the pictures and pick-a-frame frames `result_keep_s`.
"""
from __future__ import annotations

import re
import secrets
import time

from jobs.queue_base import QueueBase
from jobs.schemas import Job

BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
STORE_FULL = "The server's image store is full right now; please try again in a few minutes."
_SWEEP_LIMIT = 1000  # expired blobs forgotten per sweep (a sweep runs before every budget check)


class BlobTooLarge(ValueError):
    pass


_PUT = """
local blob_key, sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local data, ttl, now, name = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = string.len(data)
redis.call('SET', blob_key, data, 'EX', ttl)
local old = tonumber(redis.call('HGET', sizes, name) or '0')
redis.call('HSET', sizes, name, n)
redis.call('ZADD', expiry, now + ttl, name)
return redis.call('INCRBY', total, n - old)
"""

_DELETE = """
local sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local freed = 0
for i = 2, #ARGV do
  local name = ARGV[i]
  redis.call('DEL', prefix .. 'blob:' .. name)
  local n = redis.call('HGET', sizes, name)
  if n then
    freed = freed + tonumber(n)
    redis.call('HDEL', sizes, name); redis.call('ZREM', expiry, name)
  end
end
if freed > 0 then redis.call('DECRBY', total, freed) end
return freed
"""

# Lower a blob's remaining lifetime to `keep` seconds; never lengthen it.
_KEEP = """
local expiry = KEYS[1]
local prefix, now, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, #ARGV do
  local ttl = redis.call('TTL', prefix .. 'blob:' .. ARGV[i])
  if ttl == -1 or ttl > keep then
    redis.call('EXPIRE', prefix .. 'blob:' .. ARGV[i], keep)
    redis.call('ZADD', expiry, now + keep, ARGV[i])
  end
end
return 0
"""

# Forget blobs whose recorded expiry has passed and that Redis has expired; re-date the others
# (the recorded time comes from a client clock). Returns {bytes freed, total}.
_SWEEP = """
local sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3]
local prefix, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local freed = 0
for _, name in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, limit)) do
  local ttl = redis.call('TTL', prefix .. 'blob:' .. name)
  if ttl == -2 then
    freed = freed + tonumber(redis.call('HGET', sizes, name) or '0')
    redis.call('HDEL', sizes, name); redis.call('ZREM', expiry, name)
  else
    redis.call('ZADD', expiry, now + math.max(ttl, 1), name)
  end
end
if freed > 0 then redis.call('DECRBY', total, freed) end
return {freed, tonumber(redis.call('GET', total) or '0')}
"""


def reused_inputs(job: Job) -> list[str]:
    """The images a Re-roll of this job needs again."""
    return input_blobs(job)[1] if job.kind == "imagine" else []


def input_blobs(job: Job) -> tuple[list[str], list[str]]:
    """A job's input images as (deleted when it ends, kept `result_keep_s` after it ends).

    A classify upload serves that one job. An imagine job's init and prompt images are reused by
    Re-roll, and a find or index job's image may be a generation's picture that buttons still need."""
    if job.kind == "classify":
        return [job.image], []
    if job.kind == "find":
        return [], [job.image] if job.image else []
    if job.kind == "index":
        return [], [item.image for item in job.add if item.image]
    return [], ([job.init_image] if job.init_image else []) + [p.image for p in job.image_prompts]


class BlobStore(QueueBase):
    """The blob half of the queue client."""

    def _blob_scripts(self):
        if not hasattr(self, "_blob_script_objects"):
            self._blob_script_objects = tuple(self.redis.register_script(s) for s in (_PUT, _DELETE, _KEEP, _SWEEP))
        return self._blob_script_objects

    def _blob_keys(self) -> list[str]:
        k = self.keys
        return [k.blob_sizes, k.blob_expiry, k.blob_bytes]

    async def put_blob(self, data: bytes, ttl: int | None = None) -> str:
        if len(data) > self.blob_max_bytes:
            raise BlobTooLarge(f"file is {len(data)} bytes; the limit is {self.blob_max_bytes} bytes")
        name = secrets.token_hex(16)
        put = self._blob_scripts()[0]
        await put(keys=[self.keys.blob(name), *self._blob_keys()],
                  args=[data, int(ttl or self.blob_ttl_s), int(time.time()), name])
        return name

    async def get_blob(self, key: str) -> bytes | None:
        if not BLOB_NAME.match(key or ""):
            return None  # never read arbitrary keys on behalf of a job
        return await self.redis.get(self.keys.blob(key))

    async def blobs_exist(self, *names: str) -> bool:
        """True if every named blob is still stored."""
        if not all(BLOB_NAME.match(n or "") for n in names):
            return False
        return not names or await self.redis.exists(*(self.keys.blob(n) for n in names)) == len(names)

    async def delete_blobs(self, *names: str | None) -> int:
        """Delete blobs that have been consumed; returns the bytes freed (0 for ones already gone)."""
        valid = [n for n in names if n and BLOB_NAME.match(n)]
        if not valid:
            return 0
        return int(await self._blob_scripts()[1](keys=self._blob_keys(), args=[self.keys.prefix, *valid]))

    async def keep_blobs(self, *names: str | None, keep_s: int | None = None) -> None:
        """Keep blobs at most `keep_s` (default `result_keep_s`) from now: never lengthens a lifetime."""
        valid = [n for n in names if n and BLOB_NAME.match(n)]
        if valid:
            await self._blob_scripts()[2](keys=[self.keys.blob_expiry],
                                          args=[self.keys.prefix, int(time.time()), int(keep_s or self.result_keep_s),
                                                *valid])

    async def blob_bytes(self) -> int:
        """Bytes of blobs stored now (expired ones already subtracted): for metrics and the budget."""
        res = await self._blob_scripts()[3](keys=self._blob_keys(),
                                            args=[self.keys.prefix, int(time.time()), _SWEEP_LIMIT])
        return int(res[1])

    async def blob_store_full(self) -> bool:
        """True when new work must be refused (STORE_FULL): the blobs reached their byte budget."""
        return await self.blob_bytes() >= self.blob_budget_bytes

    async def release_inputs(self, job: Job) -> None:
        """A job ended: delete the inputs only it used, keep the others for a bounded time."""
        delete, keep = input_blobs(job)
        await self.delete_blobs(*delete)
        await self.keep_blobs(*keep)
