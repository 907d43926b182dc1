"""The contest store's Lua scripts (bot/contests/store.py documents the keys).

Each is one atomic step: Redis runs a script alone, so no other command (another member's entry,
another bot process's claim) lands between its check and its write.
"""
from __future__ import annotations

_CREATE = """
-- KEYS: chan key, thread key of the same channel, contest hash, schedule. ARGV: id, closes_at, field, value...
local cur = redis.call('GET', KEYS[1]) or redis.call('GET', KEYS[2])
if cur then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], unpack(ARGV, 3))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return {1, ARGV[1]}
"""

_ADMIT = """
-- KEYS: contest, entries zset, authors, entry hash. ARGV: job, author, seed, now
local c = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'entries_limit')
if not c[1] then return {0, 'missing', 0} end
if c[1] ~= 'open' or tonumber(ARGV[4]) >= tonumber(c[2]) then return {0, 'closed', 0} end
local n = redis.call('ZSCORE', KEYS[2], ARGV[1])
if n then return {1, 'again', tonumber(n)} end
local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if mine >= tonumber(c[3]) then return {0, 'limit', mine} end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
local num = redis.call('HINCRBY', KEYS[1], 'entry_seq', 1)
redis.call('ZADD', KEYS[2], num, ARGV[1])
redis.call('HSET', KEYS[4], 'author', ARGV[2], 'seed', ARGV[3], 'number', num, 'entered_at', ARGV[4], 'up', 0, 'down', 0)
return {1, 'admitted', num}
"""

_WITHDRAW = """
-- KEYS: contest, entries zset, authors, entry hash. ARGV: job
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
local e = redis.call('HMGET', KEYS[4], 'author', 'message_id')
if not e[1] or e[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], e[1], -1)
redis.call('DEL', KEYS[4])
return 1
"""

_POSTED = """
-- KEYS: contest, entry hash, msg key. ARGV: message id, flagged, msg value
if not redis.call('HGET', KEYS[2], 'author') then return 'missing' end
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 'closed' end
redis.call('HSET', KEYS[2], 'message_id', ARGV[1], 'flagged', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 'posted'
"""

_VOTE = """
-- KEYS: contest, entry hash, votes hash. ARGV: voter, 'up'|'down', 'add'|'remove', now, joined_at or ''
local c = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'min_member_days')
local e = redis.call('HMGET', KEYS[2], 'author', 'message_id')
if not c[1] or not e[1] or not e[2] then return {'not_entry', 0, 0} end
local function tally(status)
  return {status, tonumber(redis.call('HGET', KEYS[2], 'up')), tonumber(redis.call('HGET', KEYS[2], 'down'))}
end
local now = tonumber(ARGV[4])
if c[1] ~= 'open' or now >= tonumber(c[2]) then return tally('closed') end
if e[1] == ARGV[1] then return tally('own') end
local days = tonumber(c[3])
-- only adding needs the membership age: a counted vote passed it, and removals carry no member
if ARGV[3] == 'add' and days > 0 and (ARGV[5] == '' or tonumber(ARGV[5]) + days * 86400 > now) then
  return tally('too_new')
end
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if ARGV[3] == 'add' then
  if cur == ARGV[2] then return tally('unchanged') end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  if cur then redis.call('HINCRBY', KEYS[2], cur, -1); return tally('switched') end
  return tally('counted')
end
if cur ~= ARGV[2] then return tally('unchanged') end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
return tally('removed')
"""

_END_NOW = """
-- KEYS: contest, schedule. ARGV: id, now
local c = redis.call('HMGET', KEYS[1], 'state', 'closes_at')
if not c[1] then return 'missing' end
if c[1] ~= 'open' then return 'closed' end
if tonumber(c[2]) > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'closes_at', ARGV[2], 'ended_early', 1)
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return 'ending'
"""

_CLAIM = """
-- KEYS: contest, schedule. ARGV: id, owner, boot, token, now, lease_s
local c = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'claim_owner', 'claim_boot', 'claim_until')
if not c[1] then redis.call('ZREM', KEYS[2], ARGV[1]); return {'missing', ''} end
if c[1] == 'closed' then redis.call('ZREM', KEYS[2], ARGV[1]); return {'done', ''} end
local now = tonumber(ARGV[5])
if c[1] == 'open' then
  if now < tonumber(c[2]) then return {'not_due', ''} end
else
  -- closing: another claim holds it until its lease ends, unless it is ours from before a restart
  local restarted = c[3] == ARGV[2] and c[4] ~= ARGV[3]
  if now < tonumber(c[5]) and not restarted then return {'busy', ''} end
end
redis.call('HSET', KEYS[1], 'state', 'closing', 'claim', ARGV[4], 'claim_owner', ARGV[2], 'claim_boot', ARGV[3],
           'claim_until', now + tonumber(ARGV[6]))
redis.call('HSETNX', KEYS[1], 'closed_at', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'claims', 1)
return {'claimed', ARGV[4]}
"""

_STEP = """
-- KEYS: contest. ARGV: token, step field, value, now, lease_s
local c = redis.call('HMGET', KEYS[1], 'state', 'claim')
if c[1] ~= 'closing' or c[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'claim_until', tonumber(ARGV[4]) + tonumber(ARGV[5]))
return 1
"""

_FINISH = """
-- KEYS: contest, schedule, chan key, entries zset, authors. ARGV: id, token, now, ttl, contest key, msg key prefix
local c = redis.call('HMGET', KEYS[1], 'state', 'claim')
if c[1] ~= 'closing' or c[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'closed', 'finished_at', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
local ttl = tonumber(ARGV[4])
for _, job in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local mid = redis.call('HGET', ARGV[5] .. ':e:' .. job, 'message_id')
  if mid then redis.call('EXPIRE', ARGV[6] .. mid, ttl) end
  redis.call('EXPIRE', ARGV[5] .. ':e:' .. job, ttl)
  redis.call('EXPIRE', ARGV[5] .. ':v:' .. job, ttl)
end
for _, k in ipairs({KEYS[1], KEYS[4], KEYS[5]}) do redis.call('EXPIRE', k, ttl) end
return 1
"""


SCRIPTS = dict(create=_CREATE, admit=_ADMIT, withdraw=_WITHDRAW, posted=_POSTED, vote=_VOTE,
               end_now=_END_NOW, claim=_CLAIM, step=_STEP, finish=_FINISH)
