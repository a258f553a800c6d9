"""``RedisHistory``: room history on Redis Streams, shared by backend replicas.

Theory of operation. Each room has two keys, with the room in a hash tag so that a Redis
Cluster keeps them on one node: a hash ``<prefix>{<room>}:meta`` (``epoch``, ``offset``, and
``ms``, the time of the last message) and a stream ``<prefix>{<room>}:log`` of the messages.
One Lua script appends (:data:`APPEND_LUA`): it makes the room's epoch if the hash is gone
(never made, expired, or Redis flushed: the history is lost, and the epoch says so), takes the
next offset with ``HINCRBY`` and adds the message with ``XADD`` in the same call, so offsets
never skip nor repeat whichever replica sends. A stream entry's ID is ``<ms>-<offset>``:
increasing (the time never goes back, the offset always goes up), and time-ordered, so
``XADD ... MAXLEN ~ size`` trims by count and ``XTRIM MINID ~`` by age, in O(1) amortised.

Another script (:data:`SINCE_LUA`) answers a recovery: the room's epoch and offset and, if the
client's epoch is the room's (or the client follows the room from its start: ``""`` and
offset 0), the last ``offset - asked`` entries (at most ``size``) with
``XREVRANGE ... COUNT``. Python then drops those older than ``max_age`` (trimming with ``~``
keeps a few more) and judges, as :class:`MemoryHistory` does, whether they reach back.

The keys expire *ttl* after the room's last message (a day by default): a room quiet for
longer starts a new epoch, and a client that knew it is told it could not recover.

Failures: a call that fails because Redis is down, the connection broke or Redis refused it
raises :class:`HistoryUnavailable` (the middleware counts it and answers ``"unavailable"``),
and the outage is logged once when it starts and once when it ends (:class:`OutageLog`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import attrs

from strands_trio.redis import OutageLog, RedisError, RedisUnavailable, Script

from ._history_store import HistoryUnavailable, Position, Since, judge, new_epoch

if TYPE_CHECKING:
    from strands_trio.redis import LiveRedis

__all__ = ["APPEND_LUA", "SINCE_LUA", "RedisHistory", "RedisHistoryStatistics"]

logger = logging.getLogger("strands_trio.middleware.history")

#: KEYS: meta, log. ARGV: text, a new epoch (used if the room has none), size, max age in
#: ms (0: none), ttl in ms. Returns {epoch, offset}.
APPEND_LUA = """
local meta, log = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'ms', 0)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', meta, 'ms')) or 0
if ms < last then ms = last end
redis.call('HSET', meta, 'ms', ms)
redis.call('XADD', log, 'MAXLEN', '~', ARGV[3], ms .. '-' .. offset, 't', ARGV[1])
local age = tonumber(ARGV[4])
if age > 0 then redis.call('XTRIM', log, 'MINID', '~', ms - age) end
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PEXPIRE', log, ARGV[5])
return {epoch, offset}
"""

#: KEYS: meta, log. ARGV: a new epoch (used if the room has none), the client's epoch, its
#: offset, size, ttl in ms. Returns {epoch, offset, now in ms, entries newest first}.
SINCE_LUA = """
local meta, log = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'ms', 0)
  redis.call('PEXPIRE', meta, ARGV[5])
end
local offset = tonumber(redis.call('HGET', meta, 'offset'))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = offset - tonumber(ARGV[3])
local entries = {}
local from_start = ARGV[2] == '' and tonumber(ARGV[3]) == 0
if (epoch == ARGV[2] or from_start) and want > 0 and want <= tonumber(ARGV[4]) then
  entries = redis.call('XREVRANGE', log, '+', '-', 'COUNT', want)
end
return {epoch, offset, now, entries}
"""

_APPEND = Script(APPEND_LUA)
_SINCE = Script(SINCE_LUA)


@attrs.frozen(kw_only=True)
class RedisHistoryStatistics:
    """What a :class:`RedisHistory` has done.

    Attributes:
        appended: Messages appended.
        answered: Recoveries answered (``since`` calls).
        failures: Calls that failed (Redis down, or an error reply).
        outages: Outages begun (each logged once).
    """

    appended: int
    answered: int
    failures: int
    outages: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHistory:
    """Room history on Redis Streams, shared by every backend replica that uses the same
    Redis and *prefix*: any of them can replay a room to a client that reconnects to it::

        async with trio.open_nursery() as nursery:
            live = await nursery.start(serve_live_redis, "redis://redis:6379")
            history = History(store=RedisHistory(live, size=100, max_age=300))
            await nursery.start(make_app(history).serve, "broker", 8081)

    Args:
        redis: The connection, kept up by :func:`~strands_trio.redis.serve_live_redis`.
        size: Messages kept per room (about: Redis trims with ``~``; a recovery never
            replays more than *size*).
        max_age: Seconds a message is kept (by Redis's clock); ``math.inf`` for no limit.
        prefix: Put before every key.
        ttl: Seconds after a room's last message that its keys expire (then a new epoch).

    Raises:
        TypeError: *redis* has no ``execute``, or a bound has the wrong type.
        ValueError: a bound is out of range, or *prefix* is empty.
    """

    __slots__ = (
        "_age_ms",
        "_counts",
        "_outage",
        "_redis",
        "_ttl_ms",
        "max_age",
        "prefix",
        "size",
        "ttl",
    )

    def __init__(
        self,
        redis: LiveRedis,
        *,
        size: int = 100,
        max_age: float = 300.0,
        prefix: str = "strands:history:",
        ttl: float = 86400.0,
    ) -> None:
        if not callable(getattr(redis, "execute", None)):
            raise TypeError(f"redis must be a LiveRedis (from serve_live_redis), got {redis!r}")
        if type(size) is not int or size < 1:
            raise ValueError(f"size must be an int of at least 1, got {size!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, int | float) or not max_age > 0:
            raise ValueError(f"max_age must be a number of seconds above 0, got {max_age!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl < math.inf:
            raise ValueError(f"ttl must be a finite number of seconds, at least 1, got {ttl!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        self._redis = redis
        self.size = size
        self.max_age = float(max_age)
        self.prefix = prefix
        self.ttl = float(ttl)
        self._age_ms = 0 if max_age == math.inf else max(1, round(max_age * 1000))
        self._ttl_ms = round(ttl * 1000)
        self._outage = OutageLog(
            logger,
            f"the history store {prefix!r}",
            meanwhile="kept room messages are refused and recoveries fail",
            counted="failed calls",
        )
        self._counts = {"appended": 0, "answered": 0, "failures": 0}

    def __repr__(self) -> str:
        return f"<RedisHistory prefix={self.prefix!r} size={self.size} max_age={self.max_age}>"

    def keys(self, room: str) -> tuple[str, str]:
        """The hash and the stream of *room*."""
        return f"{self.prefix}{{{room}}}:meta", f"{self.prefix}{{{room}}}:log"

    async def _call(self, script: Script, room: str, args: list[Any]) -> Any:
        try:
            reply = await script(self._redis, keys=self.keys(room), args=args)
        except (RedisError, RedisUnavailable) as exc:
            self._counts["failures"] += 1
            self._outage.failed(exc)
            self._outage.count()
            raise HistoryUnavailable(f"the history of room {room!r} is unavailable: {exc}") from exc
        if self._outage.on:
            self._outage.ended()
        return reply

    async def append(self, room: str, text: str) -> Position:
        """See :meth:`HistoryStore.append`: one script call (pipelined with other tasks')."""
        args = [text, new_epoch(), self.size, self._age_ms, self._ttl_ms]
        epoch, offset = await self._call(_APPEND, room, args)
        self._counts["appended"] += 1
        return Position(_text(epoch), int(offset))

    async def since(self, room: str, epoch: str, offset: int) -> Since:
        """See :meth:`HistoryStore.since`: one script call."""
        args = [new_epoch(), epoch, offset, self.size, self._ttl_ms]
        current, last, now, entries = await self._call(_SINCE, room, args)
        self._counts["answered"] += 1
        position = Position(_text(current), int(last))
        cutoff = -math.inf if self._age_ms == 0 else int(now) - self._age_ms
        kept: list[tuple[int, str]] = []
        for entry_id, fields in reversed(entries):
            ms, _, number = _text(entry_id).partition("-")
            if int(ms) > cutoff:
                kept.append((int(number), _text(fields[1])))
        recovered, reason = judge(position, epoch, offset, kept[0][0] if kept else None)
        if not recovered:
            return Since(
                epoch=position.epoch, offset=position.offset, recovered=False, reason=reason
            )
        return Since(
            epoch=position.epoch, offset=position.offset, recovered=True, messages=tuple(kept)
        )

    def statistics(self) -> RedisHistoryStatistics:
        """What this store has done."""
        return RedisHistoryStatistics(**self._counts, outages=self._outage.statistics().outages)
