"""The Lua scripts of :class:`~strands_trio.middleware.RedisPresence`, one round trip each,
and the data they keep: the layout of its keys, and the rules of ownership they enforce.

*Layout.* Under a prefix ``P`` (``"strands:presence:"``), for rooms and instances:

==========================  ====================================================================
``P room:<room>``           hash: client id -> the :class:`Member` as JSON (its ``instance``
                            says which backend instance recorded it, its *owner*)
``P alive:<instance>``      string with an expiry of ``ttl``: the instance is alive while it
                            exists; the instance sets it again every ``ttl / 3``
``P instance:<instance>``   hash: client id -> room, for every member the instance owns
``P removed:<instance>``    list: members of the instance that another instance removed
``P left:<client>``         string with an expiry of ``ttl``: when the client last left
``P rooms``, ``P instances``  sets: rooms with entries, instances that have been alive
==========================  ====================================================================

*Why an expiring key per instance* rather than a sorted set scored by expiry per member: an
instance proves it is alive with one ``SET ... PX`` every ``ttl / 3``, whatever the number of
its members, where scores would need every member rewritten as often. The price is paid on
reads: a query keeps only the entries whose owner's key exists (one ``EXISTS`` per distinct
owner, in the same Lua script as the ``HGETALL``). So the members of an instance that dies
drop out of every answer at most ``ttl`` after its last refresh, which is the bounded time
the issue asks for. Their entries are then deleted at the next round of any live instance
(*reaping*, through the dead instance's own ``instance:`` hash), so Redis does not fill up
with the dead.

*Ownership.* A client's entry belongs to the instance that wrote it: at its
``new_connection``, or when it healed it. Any instance may remove it (the reference broker
sends each event to a backend chosen at random, so a ``disconnected`` often reaches another
instance than the ``new_connection`` did); the remover pushes the entry onto the owner's
``removed:`` list, and the owner forgets it at its next refresh, so that it never writes it
back. Healing takes over an entry only if it is missing or its owner is dead: an entry held
by a live instance is left alone, and this instance trusts it until that owner's key would
expire (the script returns its ``PTTL``), then checks again at the client's next message.

*A leave that overtakes a join.* With events spread over instances, a ``disconnected`` at one
instance may be written before the ``new_connection`` that another instance recorded
earlier; written after it, that entry would stay for as long as its owner lives. So a leave
leaves a mark (``left:``, for ``ttl``) with its time, and a write of a member whose
``joined_at`` is not later than the mark is refused: its owner forgets it. A client that
reconnects with the same id joins after the mark and is written; this needs the instances'
clocks to agree better than the time a client takes to reconnect.

Each script runs atomically in Redis. They compute key names from the prefix in ``ARGV[1]`` (so
they need a standalone Redis, not Redis Cluster); how the store uses them is in
``_presence_redis.py``. Members are JSON objects, whose ``instance`` field names their owner;
``cjson`` reads it. ``REFRESH`` and ``SWEEP`` are the steps of the instance's
:class:`~strands_trio.redis.Membership`, written with its Lua functions
(:data:`~strands_trio.redis.LIVENESS_LUA`); :func:`scripts` makes the
:class:`~strands_trio.redis.Script` objects, importing the Redis client (the ``redis`` extra)
only then.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from strands_trio.redis import Script

    from ._presence_store import Member

__all__ = [
    "APPLY",
    "DROP",
    "HEAL",
    "JOIN",
    "LEAVE",
    "MEMBERS",
    "REFRESH",
    "REPUBLISH",
    "ROOMS",
    "SWEEP",
    "Change",
    "Scripts",
    "apply_ops",
    "scripts",
]

# Kinds of change, written as, and answered by, APPLY.
JOIN: Final = "j"  # new_connection: write, taking the entry over from anyone
HEAL: Final = "h"  # a message from an unknown client: write if missing or owner dead
REPUBLISH: Final = "r"  # an owned member after a lapse: as HEAL, with its stored JSON
LEAVE: Final = "l"  # disconnected: delete, whoever owns it

#: A change not written yet: (kind, room, the time of a leave).
Change = tuple[str, str, float]

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

# After LIVENESS_LUA. ARGV: prefix, this instance, ttl in ms. Sets the liveness key and takes
# the removal notices. Returns {1 if the key existed else 0, notices}.
REFRESH: Final = """
local p, me = ARGV[1], ARGV[2]
local existed = renew(p, p .. "instances", me, ARGV[3])
local notices_key = p .. "removed:" .. me
local notices = redis.call("LRANGE", notices_key, 0, -1)
redis.call("DEL", notices_key)
return {existed and 1 or 0, notices}
"""

# After LIVENESS_LUA. ARGV: prefix. Reaps the instances whose liveness key is gone: their
# entries that are still theirs, their index and notices. Returns how many entries.
SWEEP: Final = (
    _OWNER
    + """
local p = ARGV[1]
local reaped = 0
local function clear(inst)
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
end
sweep(p, p .. "instances", clear)
return reaped
"""
)

# ARGV: prefix, this instance, ms to keep removal notices, broker name, broker instance.
# Removes every entry learnt through that broker name with another instance (the broker
# restarted: those clients are gone), whoever owns it; the owner is told as by a leave.
# Idempotent: run again (by every replica that reconnects), it finds nothing more.
# Returns how many entries it removed.
DROP: Final = """
local p, me, keep, broker, instance = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local removed = 0
for _, room in ipairs(redis.call("SMEMBERS", p .. "rooms")) do
  local room_key = p .. "room:" .. room
  local entries = redis.call("HGETALL", room_key)
  for i = 1, #entries, 2 do
    local cid, value = entries[i], entries[i + 1]
    local ok, m = pcall(cjson.decode, value)
    if ok and type(m) == "table" and m.broker == broker
        and type(m.broker_instance) == "string" and m.broker_instance ~= instance then
      redis.call("HDEL", room_key, cid)
      removed = removed + 1
      if type(m.instance) == "string" then
        redis.call("HDEL", p .. "instance:" .. m.instance, cid)
        if m.instance ~= me then
          local key = p .. "removed:" .. m.instance
          redis.call("RPUSH", key, value)
          redis.call("PEXPIRE", key, keep)
        end
      end
    end
  end
  if redis.call("HLEN", room_key) == 0 then redis.call("SREM", p .. "rooms", room) end
end
return removed
"""

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


class Scripts(NamedTuple):
    """The scripts as :class:`~strands_trio.redis.Script` objects."""

    apply: Script
    drop: Script
    refresh: Script
    sweep: Script
    members: Script
    rooms: Script


@functools.cache
def scripts() -> Scripts:
    """The scripts, made once (this imports :mod:`strands_trio.redis`)."""
    from strands_trio.redis import LIVENESS_LUA, Script

    return Scripts(
        apply=Script(APPLY),
        drop=Script(DROP),
        refresh=Script(LIVENESS_LUA + REFRESH),
        sweep=Script(LIVENESS_LUA + SWEEP),
        members=Script(MEMBERS),
        rooms=Script(ROOMS),
    )


def apply_ops(
    batch: Mapping[str, Change],
    owned: Mapping[str, tuple[Member, bytes]],
    healing: Mapping[str, Member],
) -> tuple[list[str | bytes], list[tuple[str, str, Any]]]:
    """The ops of one ``APPLY`` call for the changes *batch* (client -> change), as ``ARGV``
    after the first four, and the plan: ``(client, kind, what was written)`` per op, in
    order, to read ``APPLY``'s replies against. A change whose member is no longer owned or
    healing has no op."""
    args: list[str | bytes] = []
    plan: list[tuple[str, str, Any]] = []
    for client_id, (kind, room, when) in batch.items():
        if kind == LEAVE:
            args += [LEAVE, client_id, room, repr(when)]
            plan.append((client_id, kind, None))
        elif kind == HEAL:
            member = healing.get(client_id)
            if member is not None:
                args += [HEAL, client_id, room, member.to_json()]
                plan.append((client_id, kind, member))
        else:
            entry = owned.get(client_id)
            if entry is not None:
                op = JOIN if kind == JOIN else REPUBLISH
                args += [op, client_id, entry[0].room, entry[1]]
                plan.append((client_id, kind, entry))
    return args, plan
