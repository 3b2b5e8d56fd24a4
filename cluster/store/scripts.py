"""The Lua scripts that make the thought tree's racing writes atomic.

Each script touches only keys of one tree, which share a hash tag and so one Redis Cluster
slot. Node hashes are named from a prefix passed in ARGV (their ids come from the tree's
counter), so they are not listed in KEYS; they live in the same slot as every declared key.
Scripts validate everything before their first write: a script that fails halfway would
leave half a batch behind.
"""

from __future__ import annotations

from cluster.store.keys import LUA_INHERIT_TTL

# A lease token, when given, must still be the tree's lease: a planner that stalled past its
# lease must not write over the planner that took the tree over (fencing).
_LUA_FENCE = """
local function fenced(lease_key, token)
  return token ~= '' and redis.call('GET', lease_key) ~= token
end
"""

# KEYS: meta, budget, the tree's other fixed keys, its lease (none may exist yet).
# ARGV: ttl ms, node prefix, meta field/value pairs as JSON, budget field/value pairs as JSON.
CREATE_TREE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return {'exists', key} end
end
if redis.call('EXISTS', ARGV[2] .. 'n0') == 1 then return {'exists', ARGV[2] .. 'n0'} end
local meta = cjson.decode(ARGV[3])
for i = 1, #meta, 2 do redis.call('HSET', KEYS[1], meta[i], meta[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local grants = cjson.decode(ARGV[4])
for i = 1, #grants, 2 do redis.call('HSET', KEYS[2], grants[i], grants[i + 1]) end
if #grants > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return {'ok'}
"""

# KEYS: meta, counter, edges, frontier, events, lease.
# ARGV: node prefix, fence token ('' for none), the batch as JSON (every leaf a string):
# {parent, new: [{field: value}], set: [[id, {field: value}]], visit: [[[ids], value]],
#  events: [[kind, data, ts]], maxlen}.
WRITE_TREE = (
    LUA_INHERIT_TTL
    + _LUA_FENCE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
if fenced(KEYS[6], ARGV[2]) then return {'fenced'} end
local prefix = ARGV[1]
local batch = cjson.decode(ARGV[3])
local parent = batch.parent
local depth = 0
if #batch.new > 0 and parent ~= '' then
  local parent_depth = redis.call('HGET', prefix .. parent, 'depth')
  if not parent_depth then return {'nonode', parent} end
  depth = tonumber(parent_depth) + 1
end
for _, item in ipairs(batch.set) do
  if redis.call('EXISTS', prefix .. item[1]) == 0 then return {'nonode', item[1]} end
end
for _, item in ipairs(batch.visit) do
  for _, id in ipairs(item[1]) do
    if redis.call('EXISTS', prefix .. id) == 0 then return {'nonode', id} end
  end
end

local ttl = redis.call('PTTL', KEYS[1])
local function set_fields(key, fields)
  local args = {}
  for name, value in pairs(fields) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end
-- Only scored open/expanded nodes are in the frontier, ranked by their score.
local function sync_frontier(id)
  local node = redis.call('HMGET', prefix .. id, 'status', 'score')
  if (node[1] == 'open' or node[1] == 'expanded') and node[2] then
    redis.call('ZADD', KEYS[4], node[2], id)
  else
    redis.call('ZREM', KEYS[4], id)
  end
end

-- Updates first: a batch that reopens a node and gives it children leaves it expanded.
for _, item in ipairs(batch.set) do
  set_fields(prefix .. item[1], item[2])
  sync_frontier(item[1])
end
for _, item in ipairs(batch.visit) do
  for _, id in ipairs(item[1]) do
    redis.call('HINCRBY', prefix .. id, 'visits', 1)
    redis.call('HINCRBYFLOAT', prefix .. id, 'value_sum', item[2])
  end
end
local out = {'ok', string.format('%d', depth)}
if #batch.new > 0 then
  -- Children and their parent's new status land together: a resumed search never sees an
  -- open node that already has children.
  if parent ~= '' and redis.call('HGET', prefix .. parent, 'status') == 'open' then
    redis.call('HSET', prefix .. parent, 'status', 'expanded')
  end
  local last = redis.call('INCRBY', KEYS[2], #batch.new)
  for i, fields in ipairs(batch.new) do
    local id = 'n' .. string.format('%d', last - #batch.new + i - 1)
    local key = prefix .. id
    redis.call('HSET', key, 'parent_id', parent, 'depth', string.format('%d', depth))
    set_fields(key, fields)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    if parent ~= '' then redis.call('ZADD', KEYS[3], 0, parent .. ':' .. id) end
    out[#out + 1] = id
  end
end
for _, event in ipairs(batch.events) do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', batch.maxlen, '*', 'kind', event[1], 'data', event[2],
    'ts', event[3])
end
for i = 2, 5 do inherit_ttl(KEYS[i]) end
return out
"""
)

# KEYS: meta, lease. ARGV: fence token, then field/value pairs.
SET_META = (
    _LUA_FENCE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'notree' end
if fenced(KEYS[2], ARGV[1]) then return 'fenced' end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'ok'
"""
)

# KEYS: the tree's fixed keys (meta first, counter and frontier where `tree.py` says), then
# its lease. ARGV: status, updated_at, winning path JSON, ttl ms, node prefix, fence token,
# counter index, frontier index, then the winning node ids.
FINISH_TREE = (
    _LUA_FENCE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
if fenced(KEYS[#KEYS], ARGV[6]) then return {'fenced'} end
local prefix = ARGV[5]
local frontier = KEYS[tonumber(ARGV[8])]
for i = 9, #ARGV do
  if redis.call('EXISTS', prefix .. ARGV[i]) == 0 then return {'nonode', ARGV[i]} end
end
for i = 9, #ARGV do
  redis.call('HSET', prefix .. ARGV[i], 'status', 'won')
  redis.call('ZREM', frontier, ARGV[i])
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2], 'winning_path', ARGV[3])
-- Every key of the tree but the lease, which expires on its own.
for i = 1, #KEYS - 1 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
local count = tonumber(redis.call('GET', KEYS[tonumber(ARGV[7])])) or 0
for i = 0, count - 1 do redis.call('PEXPIRE', prefix .. 'n' .. string.format('%d', i), ARGV[4]) end
return {'ok'}
"""
)

# KEYS: meta, events. ARGV: maxlen, kind, data, ts.
APPEND_EVENT = (
    LUA_INHERIT_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'kind', ARGV[2], 'data', ARGV[3], 'ts', ARGV[4])
inherit_ttl(KEYS[2])
return id
"""
)
