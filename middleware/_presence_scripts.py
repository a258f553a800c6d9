"""The Lua scripts of :class:`~strands_trio.middleware.RedisPresence`, one round trip each.

Each runs atomically in Redis. They compute key names from the prefix in ``ARGV[1]`` (so they
need a standalone Redis, not Redis Cluster); the layout is in ``_presence_redis.py``. Members
are JSON objects, whose ``instance`` field names their owner; ``cjson`` reads it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["APPLY", "MEMBERS", "REFRESH", "ROOMS"]

# Shared: owner(value) is a member's instance (nil if unreadable); live_count() counts (and
# collects) a room's entries whose owner's liveness key exists, caching each owner's answer.
_OWNER = """
local function owner(value)
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == "table" and type(decoded.instance) == "string" then
    return decoded.instance
  end
  return nil
end
local function live_count(p, room_key, cache, out)
  local entries = redis.call("HGETALL", room_key)
  local n = 0
  for i = 2, #entries, 2 do
    local inst = owner(entries[i])
    if inst then
      local alive = cache[inst]
      if alive == nil then
        alive = redis.call("EXISTS", p .. "alive:" .. inst) == 1
        cache[inst] = alive
      end
      if alive then
        n = n + 1
        if out then out[#out + 1] = entries[i] end
      end
    end
  end
  return n
end
"""

# ARGV: prefix, this instance, ms to keep removal notices, ms to keep leave marks, then
# (op, client, room, member JSON or, for a leave, its time)*. Returns one integer per op:
# 0 written or deleted; > 0 the PTTL (ms) of the live instance whose entry a heal left alone;
# -1 not written: the client left (as another instance recorded) after this was recorded.
APPLY: Final = (
    _OWNER
    + """
local p, me, keep, mark = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function drop(room_key, room, cid)
  redis.call("HDEL", room_key, cid)
  if redis.call("HLEN", room_key) == 0 then redis.call("SREM", p .. "rooms", room) end
end
local function notify(inst, cid, value)
  if inst then
    redis.call("HDEL", p .. "instance:" .. inst, cid)
    if inst ~= me then
      local key = p .. "removed:" .. inst
      redis.call("RPUSH", key, value)
      redis.call("PEXPIRE", key, keep)
    end
  end
end
local function claim(room_key, room, cid, value)
  local index = p .. "instance:" .. me
  local before = redis.call("HGET", index, cid)
  if before and before ~= room then
    local before_key = p .. "room:" .. before
    local v = redis.call("HGET", before_key, cid)
    if v and owner(v) == me then drop(before_key, before, cid) end
  end
  redis.call("HSET", room_key, cid, value)
  redis.call("HSET", index, cid, room)
  redis.call("SADD", p .. "rooms", room)
end
local function left_since(cid, value, any)
  local left = redis.call("GET", p .. "left:" .. cid)
  if not left then return false end
  if any then return true end
  local ok, decoded = pcall(cjson.decode, value)
  return ok and type(decoded) == "table" and tonumber(left) >= (decoded.joined_at or 0)
end
local results = {}
for i = 5, #ARGV, 4 do
  local op, cid, room, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local room_key = p .. "room:" .. room
  local current = redis.call("HGET", room_key, cid)
  local inst = current and owner(current)
  local result = 0
  if op == "l" then
    if current then
      drop(room_key, room, cid)
      notify(inst, cid, current)
    end
    redis.call("HDEL", p .. "instance:" .. me, cid)
    redis.call("SET", p .. "left:" .. cid, value, "PX", mark)
  elseif left_since(cid, value, op == "h") then
    result = -1
  elseif op == "j" then
    if current and current ~= value then notify(inst, cid, current) end
    claim(room_key, room, cid, value)
  else
    local pttl = -2
    if current and inst and inst ~= me then
      pttl = redis.call("PTTL", p .. "alive:" .. inst)
    end
    if pttl > 0 then
      result = pttl
    else
      if current and inst and inst ~= me then
        redis.call("HDEL", p .. "instance:" .. inst, cid)
      end
      claim(room_key, room, cid, value)
    end
  end
  results[#results + 1] = result
end
return results
"""
)

# ARGV: prefix, this instance, ttl in ms. Sets the liveness key, takes the removal notices,
# and reaps dead instances. Returns {1 if the key existed else 0, members reaped, notices}.
REFRESH: Final = (
    _OWNER
    + """
local p, me, ttl = ARGV[1], ARGV[2], ARGV[3]
local existed = redis.call("SET", p .. "alive:" .. me, "1", "PX", ttl, "GET")
redis.call("SADD", p .. "instances", me)
local notices_key = p .. "removed:" .. me
local notices = redis.call("LRANGE", notices_key, 0, -1)
redis.call("DEL", notices_key)
local reaped = 0
for _, inst in ipairs(redis.call("SMEMBERS", p .. "instances")) do
  if redis.call("EXISTS", p .. "alive:" .. inst) == 0 then
    local index = p .. "instance:" .. inst
    local owned = redis.call("HGETALL", index)
    for i = 1, #owned, 2 do
      local cid, room = owned[i], owned[i + 1]
      local room_key = p .. "room:" .. room
      local v = redis.call("HGET", room_key, cid)
      if v and owner(v) == inst then
        redis.call("HDEL", room_key, cid)
        if redis.call("HLEN", room_key) == 0 then redis.call("SREM", p .. "rooms", room) end
        reaped = reaped + 1
      end
    end
    redis.call("DEL", index, p .. "removed:" .. inst)
    redis.call("SREM", p .. "instances", inst)
  end
end
return {existed and 1 or 0, reaped, notices}
"""
)

# ARGV: prefix, room. The JSON of the room's members whose owner is alive.
MEMBERS: Final = (
    _OWNER
    + """
local out = {}
live_count(ARGV[1], ARGV[1] .. "room:" .. ARGV[2], {}, out)
return out
"""
)

# ARGV: prefix. {room, count, room, count ...} for rooms with live members.
ROOMS: Final = (
    _OWNER
    + """
local p = ARGV[1]
local cache, out = {}, {}
for _, room in ipairs(redis.call("SMEMBERS", p .. "rooms")) do
  local n = live_count(p, p .. "room:" .. room, cache, nil)
  if n > 0 then
    out[#out + 1] = room
    out[#out + 1] = n
  end
end
return out
"""
)
