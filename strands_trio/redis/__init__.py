"""Redis for Trio: a small client on trio streams and hiredis, for the broker's scale-out.

- :func:`open_redis`: one connection that many tasks share; ``await redis.execute("SET",
  "k", "v")`` returns the reply as hiredis parses it, commands from concurrent tasks are
  pipelined and their replies matched in order.
- :class:`Script`: a Lua script called by SHA1 (``EVALSHA``), sent again if Redis forgot it.
- :func:`open_pubsub`: a subscriber connection: ``await pubsub.subscribe("ch")``, then
  ``async for message in pubsub``.
- :func:`serve_live_redis` / :func:`serve_live_pubsub` (and their ``open_live_*`` forms):
  the same, kept up by a task that reconnects with backoff (and subscribes again); calls
  fail at once with :class:`RedisUnavailable` while Redis is down.
- :class:`Membership`: a process's registrations in a Redis shared by many, kept alive by
  an expiring key, made again when Redis lost them, the dead processes' swept (the broker
  cluster's nodes and ``RedisPresence``'s instances); :class:`OutageLog`: an outage logged
  once when it starts and once when it ends, the same words for every user of Redis.
- Errors: :class:`RedisError`, and below it :class:`RedisConnectionError` (the connection is
  gone: open a new one) and :class:`RedisReplyError` (Redis answered with an error).

Needs ``hiredis`` (``pip install 'strands-trio[redis]'``). Why hiredis rather than redis-py or
coredis, and the design, with figures: ``docs/redis.md``.
"""

try:
    import hiredis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "strands_trio.redis needs hiredis: pip install 'strands-trio[redis]'"
    ) from exc

from ._client import Arg, Redis, RedisStatistics, open_redis
from ._config import RedisConfig
from ._errors import RedisConnectionError, RedisError, RedisReplyError
from ._live import (
    Backoff,
    LivePubSub,
    LivePubSubStatistics,
    LiveRedis,
    LiveRedisStatistics,
    RedisUnavailable,
    open_live_pubsub,
    open_live_redis,
    serve_live_pubsub,
    serve_live_redis,
)
from ._membership import (
    LIVENESS_LUA,
    Membership,
    MembershipStatistics,
    PendingWrites,
    Registrations,
)
from ._outage import OutageLog, OutageStatistics
from ._pubsub import Message, PubSub, PubSubStatistics, open_pubsub
from ._script import Script

__all__ = [
    "LIVENESS_LUA",
    "Arg",
    "Backoff",
    "LivePubSub",
    "LivePubSubStatistics",
    "LiveRedis",
    "LiveRedisStatistics",
    "Membership",
    "MembershipStatistics",
    "Message",
    "OutageLog",
    "OutageStatistics",
    "PendingWrites",
    "PubSub",
    "PubSubStatistics",
    "Redis",
    "RedisConfig",
    "RedisConnectionError",
    "RedisError",
    "RedisReplyError",
    "RedisStatistics",
    "RedisUnavailable",
    "Registrations",
    "Script",
    "open_live_pubsub",
    "open_live_redis",
    "open_pubsub",
    "open_redis",
    "serve_live_pubsub",
    "serve_live_redis",
]
