"""The queue's Lua scripts: every state change that must not be torn is one script.

So e.g. a job's final event and its XACK happen together or not at all, and a worker whose claim
was taken over can no longer publish for that job: no double Result. Each script names its KEYS
and ARGV in locals at the top; the Python callers pass them in that order. Key names: jobs/keys.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import AsyncScript

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

# Queue a job unless its user is at the limit. Returns {1, position, events id} or
# {0, 'limit', n} / {0, 'duplicate', 0}.
SUBMIT = _PUBLISH_FN + """
local job_key, user_key, stream_key, queue_key, events_key, positions_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job_id, job_json, user, limit, kind, lane, now, events_maxlen, prefix =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
for _, member in ipairs(redis.call('SMEMBERS', user_key)) do
  local st = redis.call('HGET', prefix .. 'job:' .. member, 'state')
  if not st or not is_active(st) then redis.call('SREM', user_key, member) end
end
local n = redis.call('SCARD', user_key)
if limit > 0 and n >= limit then return {0, 'limit', n} end
if redis.call('EXISTS', job_key) == 1 then return {0, 'duplicate', 0} end
local entry = redis.call('XADD', stream_key, '*', 'job', job_json)
local score = redis.call('INCR', positions_key)
redis.call('HSET', job_key, 'id', job_id, 'json', job_json, 'user', user, 'kind', kind,
           'lane', lane, 'state', 'queued', 'entry', entry, 'attempts', 0, 'seq', 0,
           'created', now, 'score', score)
redis.call('SADD', user_key, job_id)
redis.call('ZADD', queue_key, score, job_id)
local pos = redis.call('ZRANK', queue_key, job_id)
local ev = cjson.encode({type='queued', job_id=job_id, position=pos, at=tonumber(now)})
local r = publish(job_key, events_key, events_maxlen, job_id, 'queued', ev)
return {1, pos, r[2]}
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
  redis.call('ZREM', queue_key, job_id); redis.call('SREM', user_key, job_id)
  local ev = cjson.encode({type='failed', job_id=job_id, reason=reason, dead_lettered=true,
                           at=tonumber(now)})
  publish(job_key, events_key, events_maxlen, job_id, 'failed', ev)
  redis.call('EXPIRE', job_key, job_ttl)
  drop()
  return {'dead', reason}
end
local token = consumer .. ':' .. attempts .. ':' .. redis.call('HGET', job_key, 'seq')
redis.call('HSET', job_key, 'state', 'running', 'worker', consumer, 'claim', token, 'started', now)
redis.call('ZREM', queue_key, job_id)
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

# Give a held job back: a new stream entry at the back of its lane. Returns the new entry id,
# or nil if the claim was lost. refund '1': this attempt does not count toward max deliveries.
RELEASE = """
local job_key, stream_key, queue_key, positions_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, entry, group, refund, err, job_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('HGET', job_key, 'claim') ~= token then return false end
redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry)
local new_entry = redis.call('XADD', stream_key, '*', 'job', redis.call('HGET', job_key, 'json'))
local score = redis.call('INCR', positions_key)
redis.call('HSET', job_key, 'state', 'queued', 'entry', new_entry, 'claim', '', 'worker', '', 'score', score)
if refund == '1' then redis.call('HINCRBY', job_key, 'attempts', -1) end
if err ~= '' then redis.call('HSET', job_key, 'error', err) end
redis.call('ZADD', queue_key, score, job_id)
return new_entry
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
  local entry = redis.call('HGET', job_key, 'entry')
  redis.call('XACK', stream_key, group, entry); redis.call('XDEL', stream_key, entry)
  redis.call('ZREM', queue_key, job_id); redis.call('SREM', user_key, job_id)
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
    claim: AsyncScript
    publish: AsyncScript
    finish: AsyncScript
    release: AsyncScript
    heartbeat: AsyncScript
    cancel: AsyncScript

    @classmethod
    def register(cls, redis) -> "Scripts":
        return cls(*(redis.register_script(src) for src in (SUBMIT, CLAIM, PUBLISH, FINISH, RELEASE, HEARTBEAT, CANCEL)))
