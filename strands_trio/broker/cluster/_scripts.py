"""The Lua scripts of the broker cluster, one per thing a node asks Redis, as
:class:`~strands_trio.redis.Script` objects (their source, and the SHA1 Redis names them by).

Each script takes the cluster's key prefix as ``ARGV[1]`` and builds the key names from it
(the layout is in ``_node.py``'s docstring), so a script touches keys it did not declare: the
cluster needs one Redis, not a Redis Cluster. Every script is short, and its cost is bounded by
what it reads: one client's entries, one room's presence, one node's registrations, or the set
of nodes.

They are called by SHA1 (``EVALSHA``), in the pipelines of the node's writer, and loaded
(``SCRIPT LOAD``) at the head of the first pipeline of every connection: ``_writer.py`` says
why that keeps the writes in order. :func:`call` makes the command.
"""

from __future__ import annotations

from typing import Final

from ...redis import LIVENESS_LUA, Arg, Script

__all__ = [
    "ADD_MANY",
    "ALL",
    "BACKENDS",
    "JOIN",
    "JOIN_ROOM",
    "LEAVE",
    "LEAVE_ROOM",
    "PRESENCE",
    "REFRESH",
    "RESYNC",
    "SEND",
    "SWEEP",
    "call",
]


def call(script: Script, *args: Arg) -> tuple[Arg, ...]:
    """The command that runs *script* by its SHA1 with *args* as ``ARGV`` (no ``KEYS``)."""
    return ("EVALSHA", script.sha1, 0, *args)


# Removes what node ARGV[2] registered (only the entries that still point to it). The rooms
# its clients joined are in P joined:<node>, field client .. NUL .. room, value room (the
# client is the field without the value's length and the NUL, whatever bytes both hold).
_CLEAR_NODE: Final = """
local function clear(prefix, node)
  local owned = prefix .. 'owned:' .. node
  local clients = prefix .. 'clients'
  local entries = redis.call('HGETALL', owned)
  for i = 1, #entries, 2 do
    local client = entries[i]
    local presence = prefix .. 'presence:' .. entries[i + 1]
    if redis.call('HGET', clients, client) == node then redis.call('HDEL', clients, client) end
    if redis.call('HGET', presence, client) == node then redis.call('HDEL', presence, client) end
  end
  redis.call('DEL', owned)
  local joined = prefix .. 'joined:' .. node
  entries = redis.call('HGETALL', joined)
  for i = 1, #entries, 2 do
    local room = entries[i + 1]
    local client = string.sub(entries[i], 1, #entries[i] - #room - 1)
    local presence = prefix .. 'presence:' .. room
    if redis.call('HGET', presence, client) == node then redis.call('HDEL', presence, client) end
  end
  redis.call('DEL', joined)
end
"""

#: ARGV: prefix, node, client, room, close envelope. Returns 1 if another live node held the
#: client id (it is told to close that socket), else 0.
JOIN: Final = Script("""
local prefix, node, client, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local clients = prefix .. 'clients'
local old = redis.call('HGET', clients, client)
redis.call('HSET', clients, client, node)
redis.call('HSET', prefix .. 'presence:' .. room, client, node)
redis.call('HSET', prefix .. 'owned:' .. node, client, room)
if old and old ~= node and redis.call('EXISTS', prefix .. 'alive:' .. old) == 1 then
  redis.call('PUBLISH', prefix .. 'node:' .. old, ARGV[5])
  return 1
end
return 0
""")

#: ARGV: prefix, node, client, room.
LEAVE: Final = Script("""
local prefix, node, client = ARGV[1], ARGV[2], ARGV[3]
local clients = prefix .. 'clients'
local presence = prefix .. 'presence:' .. ARGV[4]
if redis.call('HGET', clients, client) == node then redis.call('HDEL', clients, client) end
if redis.call('HGET', presence, client) == node then redis.call('HDEL', presence, client) end
redis.call('HDEL', prefix .. 'owned:' .. node, client)
return 0
""")

#: ARGV: prefix, node, then client, room pairs: register the rooms these clients of the node
#: joined (a join, or again after a clear).
JOIN_ROOM: Final = Script("""
local prefix, node = ARGV[1], ARGV[2]
local joined = prefix .. 'joined:' .. node
for i = 3, #ARGV, 2 do
  local client, room = ARGV[i], ARGV[i + 1]
  redis.call('HSET', prefix .. 'presence:' .. room, client, node)
  redis.call('HSET', joined, client .. '\0' .. room, room)
end
return 0
""")

#: ARGV: prefix, node, client, room: the client left a room it had joined.
LEAVE_ROOM: Final = Script("""
local prefix, node, client, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local presence = prefix .. 'presence:' .. room
if redis.call('HGET', presence, client) == node then redis.call('HDEL', presence, client) end
redis.call('HDEL', prefix .. 'joined:' .. node, client .. '\0' .. room)
return 0
""")

#: ARGV: prefix, node, then client, room pairs: register them (after a clear).
ADD_MANY: Final = Script("""
local prefix, node = ARGV[1], ARGV[2]
local clients, owned = prefix .. 'clients', prefix .. 'owned:' .. node
for i = 3, #ARGV, 2 do
  local client, room = ARGV[i], ARGV[i + 1]
  redis.call('HSET', clients, client, node)
  redis.call('HSET', prefix .. 'presence:' .. room, client, node)
  redis.call('HSET', owned, client, room)
end
return (#ARGV - 2) / 2
""")

#: ARGV: prefix, client, envelope. Publishes the envelope on the channel of the client's
#: node; returns the receivers (0 or 1), -1 if the client is unknown, -2 if its node is dead.
SEND: Final = Script("""
local prefix = ARGV[1]
local node = redis.call('HGET', prefix .. 'clients', ARGV[2])
if not node then return -1 end
if redis.call('EXISTS', prefix .. 'alive:' .. node) == 0 then return -2 end
return redis.call('PUBLISH', prefix .. 'node:' .. node, ARGV[3])
""")

#: ARGV: prefix, room. Returns [client, node, ...] for the members on live nodes; drops the
#: entries of dead nodes on the way.
PRESENCE: Final = Script("""
local prefix = ARGV[1]
local key = prefix .. 'presence:' .. ARGV[2]
local entries = redis.call('HGETALL', key)
local alive, out = {}, {}
for i = 1, #entries, 2 do
  local node = entries[i + 1]
  local live = alive[node]
  if live == nil then
    live = redis.call('EXISTS', prefix .. 'alive:' .. node) == 1
    alive[node] = live
  end
  if live then
    out[#out + 1] = entries[i]
    out[#out + 1] = node
  else
    redis.call('HDEL', key, entries[i])
  end
end
return out
""")

#: ARGV: prefix, node, ttl in ms. Renews the node's alive key (creating it if it was gone) and
#: returns 1 if it was still there, else 0.
REFRESH: Final = Script(
    LIVENESS_LUA + "return renew(ARGV[1], ARGV[1] .. 'nodes', ARGV[2], ARGV[3]) and 1 or 0\n"
)

#: ARGV: prefix, node, its number of backends. Records it, and returns the other live nodes
#: that have at least one backend.
BACKENDS: Final = Script("""
local prefix, node = ARGV[1], ARGV[2]
local key = prefix .. 'backends'
if tonumber(ARGV[3]) > 0 then redis.call('HSET', key, node, ARGV[3])
else redis.call('HDEL', key, node) end
local out = {}
local entries = redis.call('HGETALL', key)
for i = 1, #entries, 2 do
  local other = entries[i]
  if other ~= node then
    if redis.call('EXISTS', prefix .. 'alive:' .. other) == 1 then out[#out + 1] = other
    else redis.call('HDEL', key, other) end
  end
end
return out
""")

#: ARGV: prefix, node to clear (this node's own registrations, after an outage).
RESYNC: Final = Script(_CLEAR_NODE + "clear(ARGV[1], ARGV[2])\nreturn 0\n")

#: ARGV: prefix, and this node's id to leave the cluster now ('' to only sweep the dead).
#: Sweeps every node of P nodes whose alive key is gone; returns how many.
SWEEP: Final = Script(
    _CLEAR_NODE
    + LIVENESS_LUA
    + """
local prefix, leaving = ARGV[1], ARGV[2]
if leaving ~= '' then redis.call('DEL', prefix .. 'alive:' .. leaving) end
return sweep(prefix, prefix .. 'nodes', function(node) clear(prefix, node) end)
"""
)

#: Every script: what the writer loads on each new connection.
ALL: Final = (
    JOIN,
    LEAVE,
    JOIN_ROOM,
    LEAVE_ROOM,
    ADD_MANY,
    SEND,
    PRESENCE,
    REFRESH,
    BACKENDS,
    RESYNC,
    SWEEP,
)
