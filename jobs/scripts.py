"""The queue's Lua scripts: every state change that must not be torn is one script.

So e.g. a job's final event and its XACK happen together or not at all, and a worker whose claim
was taken over can no longer publish for that job: no double Result. Each script names its KEYS
and ARGV in locals at the top; the Python callers pass them in that order. Key names: jobs/keys.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import AsyncScript

from jobs.quota import QUOTA_LUA_FN

# Shared by the scripts that publish events: the job's seq and the events entry are one step.
_PUBLISH_FN = """
local function publish(job_key, events_key, events_maxlen, job_id, etype, ejson)
  local seq = redis.call('HINCRBY', job_key, 'seq', 1)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', events_maxlen, '*',
                        'job', job_id, 'seq', seq, 'type', etype, 'event', ejson)
  return {seq, id}
end
local function is_active(state) return state == 'queued' or state == 'running' end
"""

# Queue a job unless its user is at the limit, in their cooldown or out of today's quota; all
# checked and taken in this one step. Nothing is written before the last check passes.
# The job waits in queue:<lane> (not yet in the stream): score = its fair-share round (the lane's
# current round, or one past the member's previous job if that is later), member = arrival stamp
# and id, so serving order = rank. Returns {1, position, events id} or {0, 'limit', n} /
# {0, 'duplicate', 0} / {0, 'cooldown', ms left} / {0, 'quota', used}.
SUBMIT = _PUBLISH_FN + QUOTA_LUA_FN + """
local job_key, user_key, queue_key, events_key, round_key, fair_key, wake_key, cooldown_key, quota_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local job_id, job_json, user, limit, kind, lane, now, events_maxlen, prefix, stamp =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local cooldown_ms, quota_limit, quota_expire, fair_ttl =
  tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
for _, member in ipairs(redis.call('SMEMBERS', user_key)) do
  local st = redis.call('HGET', prefix .. 'job:' .. member, 'state')
  if not st or not is_active(st) then redis.call('SREM', user_key, member) end
end
local n = redis.call('SCARD', user_key)
if limit > 0 and n >= limit then return {0, 'limit', n} end
if redis.call('EXISTS', job_key) == 1 then return {0, 'duplicate', 0} end
if cooldown_ms > 0 then
  local left = redis.call('PTTL', cooldown_key)
  if left > 0 then return {0, 'cooldown', left} end
end
local q = quota_take(quota_key, job_id, quota_limit, quota_expire)
if q[1] == 0 then return {0, 'quota', q[2]} end
if cooldown_ms > 0 then redis.call('SET', cooldown_key, '1', 'PX', cooldown_ms) end
local round = tonumber(redis.call('GET', round_key)) or 0
local last = tonumber(redis.call('GET', fair_key))
if last and last + 1 > round then round = last + 1 end
redis.call('SET', fair_key, round, 'EX', fair_ttl)
local member = stamp .. ':' .. job_id
redis.call('HSET', job_key, 'id', job_id, 'json', job_json, 'user', user, 'kind', kind,
           'lane', lane, 'state', 'queued', 'entry', '', 'attempts', 0, 'seq', 0,
           'created', now, 'qm', member, 'round', round)
redis.call('SADD', user_key, job_id)
redis.call('ZADD', queue_key, round, member)
redis.call('RPUSH', wake_key, '1'); redis.call('LTRIM', wake_key, 0, 63)
local pos = redis.call('ZRANK', queue_key, member)
local ev = cjson.encode({type='queued', job_id=job_id, position=pos, at=tonumber(now)})
local r = publish(job_key, events_key, events_maxlen, job_id, 'queued', ev)
return {1, pos, r[2]}
"""

# A worker's take: entries already in the stream's undelivered tail first (only ever there when
# written from outside the queue: they go to the claim script, which dead-letters them), then the
# best waiting jobs: each leaves queue:<lane>, is added to the stream and read by this consumer,
# so the consumer group's PEL, XAUTOCLAIM reclaim, heartbeats and dead letters work as before.
# An empty waiting set also empties the wake list: wake-ups left by jobs that busy workers took
# would only cost idle workers an empty look each. Returns the entries read, as XREADGROUP gives them.
TAKE = """
local stream_key, queue_key, round_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, count, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out = {}
local function read(n)
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n, 'STREAMS', stream_key, '>')
  if got then for _, e in ipairs(got[1][2]) do out[#out + 1] = e end end
end
read(count)
local need = count - #out
if need <= 0 then return out end
local best = redis.call('ZRANGE', queue_key, 0, need - 1, 'WITHSCORES')
if #best == 0 then redis.call('DEL', wake_key); return out end
local served = tonumber(redis.call('GET', round_key)) or 0
for i = 1, #best, 2 do
  local member, round = best[i], tonumber(best[i + 1])
  local job_key = prefix .. 'job:' .. string.sub(member, 22)
  redis.call('ZREM', queue_key, member)
  if redis.call('HGET', job_key, 'state') == 'queued' then
    local entry = redis.call('XADD', stream_key, '*', 'job', redis.call('HGET', job_key, 'json'))
    redis.call('HSET', job_key, 'entry', entry)
  end
  if round > served then served = round end
end
redis.call('SET', round_key, served)
if redis.call('ZCARD', queue_key) == 0 then redis.call('DEL', wake_key) end
read(need)
return out
"""

# Turn a stream entry read by a worker into a claim. Returns {'ok', token, attempt, cancel flag},
# {'skip', state} (stale or unknown entry, dropped) or {'dead', reason} (out of deliveries).
CLAIM = _PUBLISH_FN + """
local job_key, stream_key, queue_key, events_key, dead_key, user_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local entry, consumer, max_deliveries, now, group, job_id, events_maxlen, job_ttl =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local state = redis.call('HGET', job_key, 'state')
local function drop() redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry) end
if not state then
  redis.call('XADD', dead_key, '*', 'lane', stream_key, 'entry', entry, 'job', job_id,
             'reason', 'unknown job: not submitted through the queue', 'at', now)
  drop()
  return {'skip', 'unknown'}
end
if redis.call('HGET', job_key, 'entry') ~= entry or not is_active(state) then
  drop()
  return {'skip', state}
end
local attempts = redis.call('HINCRBY', job_key, 'attempts', 1)
if attempts > max_deliveries then
  local last = redis.call('HGET', job_key, 'error') or 'the worker stopped while running it'
  local reason = 'Sorry, this job failed ' .. (attempts - 1) .. ' times on our workers and was dropped (' ..
                 last .. '). Try again later, or with a smaller request.'
  redis.call('HSET', job_key, 'state', 'dead', 'claim', '', 'finished', now, 'error', reason)
  redis.call('XADD', dead_key, '*', 'lane', stream_key, 'entry', entry, 'job', job_id,
             'reason', 'max deliveries exceeded: ' .. last, 'at', now,
             'json', redis.call('HGET', job_key, 'json'))
  redis.call('ZREM', queue_key, redis.call('HGET', job_key, 'qm') or ''); redis.call('SREM', user_key, job_id)
  local ev = cjson.encode({type='failed', job_id=job_id, reason=reason, dead_lettered=true,
                           at=tonumber(now)})
  publish(job_key, events_key, events_maxlen, job_id, 'failed', ev)
  redis.call('EXPIRE', job_key, job_ttl)
  drop()
  return {'dead', reason}
end
local token = consumer .. ':' .. attempts .. ':' .. redis.call('HGET', job_key, 'seq')
redis.call('HSET', job_key, 'state', 'running', 'worker', consumer, 'claim', token, 'started', now)
redis.call('ZREM', queue_key, redis.call('HGET', job_key, 'qm') or '')
local ev = cjson.encode({type='started', job_id=job_id, worker=consumer, attempt=attempts,
                         at=tonumber(now)})
publish(job_key, events_key, events_maxlen, job_id, 'started', ev)
local cancel = redis.call('HGET', job_key, 'cancel') or ''
return {'ok', token, attempts, cancel}
"""

# A non-final event for a held job. Returns {seq, events id}, or nil if the claim was lost.
PUBLISH = _PUBLISH_FN + """
local job_key, events_key = KEYS[1], KEYS[2]
local token, job_id, etype, ejson, events_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', job_key, 'claim') ~= token then return false end
return publish(job_key, events_key, events_maxlen, job_id, etype, ejson)
"""

# The final event and the ack of a held job. Returns {seq, events id}, or nil if the claim was lost.
FINISH = _PUBLISH_FN + """
local job_key, stream_key, user_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, entry, group, final_state, etype, ejson, now, job_ttl, events_maxlen, job_id, err =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
if redis.call('HGET', job_key, 'claim') ~= token then return false end
local r = publish(job_key, events_key, events_maxlen, job_id, etype, ejson)
redis.call('HSET', job_key, 'state', final_state, 'claim', '', 'finished', now)
if err ~= '' then redis.call('HSET', job_key, 'error', err) end
redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry)
redis.call('SREM', user_key, job_id)
redis.call('EXPIRE', job_key, job_ttl)
return r
"""

# Give a held job back: it waits again in queue:<lane> with its round and arrival stamp (so at
# the front, where it was), and an idle worker is woken. Returns 1, or nil if the claim was lost.
# refund '1': this attempt does not count toward max deliveries.
RELEASE = """
local job_key, stream_key, queue_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, entry, group, refund, err, job_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('HGET', job_key, 'claim') ~= token then return false end
redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry)
redis.call('HSET', job_key, 'state', 'queued', 'entry', '', 'claim', '', 'worker', '')
if refund == '1' then redis.call('HINCRBY', job_key, 'attempts', -1) end
if err ~= '' then redis.call('HSET', job_key, 'error', err) end
local fields = redis.call('HMGET', job_key, 'round', 'qm')
redis.call('ZADD', queue_key, tonumber(fields[1]) or 0, fields[2])
redis.call('RPUSH', wake_key, '1'); redis.call('LTRIM', wake_key, 0, 63)
return 1
"""

# Reset a held entry's idle time. Returns {1, cancel flag}, or {0, ''} if the claim was lost.
HEARTBEAT = """
local job_key, stream_key = KEYS[1], KEYS[2]
local token, group, consumer, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', job_key, 'claim') ~= token then return {0, ''} end
redis.call('XCLAIM', stream_key, group, consumer, 0, entry, 'JUSTID')
return {1, redis.call('HGET', job_key, 'cancel') or ''}
"""

# Cancel: a queued job ends at once ('cancelled'); a running one is flagged for its worker
# ('flagged'); nil if it already ended. `by` is '' when the user is unknown.
CANCEL = _PUBLISH_FN + """
local job_key, stream_key, queue_key, user_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local by, now, job_ttl, events_maxlen, job_id, group, ejson =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local state = redis.call('HGET', job_key, 'state')
if state == 'queued' then
  local entry = redis.call('HGET', job_key, 'entry') or ''
  if entry ~= '' then redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry) end
  redis.call('ZREM', queue_key, redis.call('HGET', job_key, 'qm') or ''); redis.call('SREM', user_key, job_id)
  redis.call('HSET', job_key, 'state', 'cancelled', 'cancel', 'by:' .. by, 'finished', now)
  publish(job_key, events_key, events_maxlen, job_id, 'cancelled', ejson)
  redis.call('EXPIRE', job_key, job_ttl)
  return 'cancelled'
elseif state == 'running' then
  redis.call('HSET', job_key, 'cancel', 'by:' .. by)
  return 'flagged'
end
return false
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts registered on one Redis client (each call runs EVALSHA, loading on a miss)."""

    submit: AsyncScript
    take: AsyncScript
    claim: AsyncScript
    publish: AsyncScript
    finish: AsyncScript
    release: AsyncScript
    heartbeat: AsyncScript
    cancel: AsyncScript

    @classmethod
    def register(cls, redis) -> Scripts:
        return cls(*(redis.register_script(src) for src in (SUBMIT, TAKE, CLAIM, PUBLISH, FINISH, RELEASE, HEARTBEAT, CANCEL)))
