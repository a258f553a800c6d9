"""Built-in middleware for strands-trio, imported as ``strands_trio.middleware``.

Each is an object with ``async def __call__(ctx, call_next)`` to put in an app's list, with a
frozen configuration checked when it is made and a ``statistics()`` of what it counted::

    from strands_trio.middleware import Auth, JWTVerifier, Logging, Rate, RateLimit

    app = StrandsApp(middleware=[
        Logging(),
        Auth(verifier=JWTVerifier(key=SECRET, algorithms=("HS256",), audience="chat")),
        RateLimit(messages=Rate(burst=10, per_second=2)),
    ])

- :class:`Auth` verifies a token at the connection request (:class:`JWTVerifier`, with keys
  from :class:`JWKSKeys` if wanted, :class:`APIKeyVerifier`, or your own async function) and
  keeps the :class:`Identity` in the connection's metadata (:data:`IDENTITY`); :func:`roles`
  restricts a handler to some roles.
- :class:`RateLimit` limits connection requests and messages per key (GCRA, :class:`Rate`),
  in a :class:`MemoryStore`, a :class:`RedisStore` shared by backend replicas, or any
  :class:`RateLimitStore`.
- :class:`Logging` writes one structured record per event, with secret headers redacted.
- :class:`Timeout` gives handlers a deadline; :class:`Metrics` exports Prometheus figures.
- :class:`History` keeps room messages with offsets, in a :class:`MemoryHistory` or a
  :class:`RedisHistory`, and replays what a reconnecting client missed.
- :class:`Presence` tracks who is in which room from connection events, in a
  :class:`MemoryPresence` or, shared by backend replicas, a :class:`RedisPresence`.

All six have one shape, as tower's layers do: the middleware is made from keyword arguments,
which it keeps as a frozen, validated record in ``.config`` (:class:`AuthConfig`,
:class:`RateLimitConfig`, :class:`PresenceConfig`, :class:`LoggingConfig`,
:class:`TimeoutConfig`, :class:`MetricsConfig`); it holds its counters itself and reports them
as a frozen record from ``statistics()``. ``X.from_config(attrs.evolve(x.config, ...))`` makes
another with a changed setting and counters of its own.

This folder is the ``strands_trio.middleware`` subpackage, through the symlink
``strands_trio/middleware`` (see ``package-dir`` in ``pyproject.toml``); nothing installs a
top-level ``middleware`` module. JWT support needs the
``auth`` extra (PyJWT, httpx), metrics the ``metrics`` extra (prometheus_client); both are
imported only when used. :class:`RedisStore` needs the ``redis`` extra (hiredis): its module is
imported when the name is first looked up. :class:`RedisPresence` needs it too, imported when
one is made.
"""

from typing import TYPE_CHECKING, Any

from ._auth import IDENTITY, ROLES, Auth, AuthConfig, AuthStatistics, RoleGuard, roles
from ._credentials import (
    APIKeyVerifier,
    AuthError,
    Identity,
    TokenSource,
    Verifier,
    as_verifier,
    first_of,
    from_cookie,
    from_header,
    from_query,
    from_subprotocol,
)
from ._history import RECOVER, RECOVERED, History, HistoryStatistics
from ._history_store import (
    HistoryStore,
    HistoryUnavailable,
    MemoryHistory,
    MemoryHistoryStatistics,
    Position,
    Since,
)
from ._jwks import JWKSKeys, JWKSStatistics
from ._jwt import JWTVerifier
from ._logging import DEFAULT_REDACTED_HEADERS, Logging, LoggingConfig, LoggingStatistics
from ._metrics import DURATION_BUCKETS, Metrics, MetricsConfig, MetricsStatistics
from ._presence import Presence, PresenceConfig, PresenceStatistics
from ._presence_redis import RedisPresence, RedisPresenceStatistics
from ._presence_store import (
    BrokerAwareStore,
    Member,
    MemoryPresence,
    MemoryPresenceStatistics,
    MultiRoomStore,
    PresenceStore,
    PresenceUnavailable,
    default_instance_id,
)
from ._ratelimit import (
    REMOTE_IP,
    RateLimit,
    RateLimitConfig,
    RateLimitStatistics,
    by_client,
    by_identity,
    by_metadata,
    by_remote_ip,
    by_room,
)
from ._ratelimit_store import (
    Decision,
    MemoryStore,
    MemoryStoreStatistics,
    Rate,
    RateLimitStore,
    gcra,
)
from ._timeout import HandlerTimeout, Timeout, TimeoutConfig, TimeoutStatistics

if TYPE_CHECKING:
    from ._history_redis import RedisHistory, RedisHistoryStatistics
    from ._ratelimit_redis import RedisStore, RedisStoreStatistics

#: Names imported when first looked up, since their module needs an extra.
_LAZY = {
    "RedisStore": "_ratelimit_redis",
    "RedisStoreStatistics": "_ratelimit_redis",
    "RedisHistory": "_history_redis",
    "RedisHistoryStatistics": "_history_redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_REDACTED_HEADERS",
    "DURATION_BUCKETS",
    "IDENTITY",
    "RECOVER",
    "RECOVERED",
    "REMOTE_IP",
    "ROLES",
    "APIKeyVerifier",
    "Auth",
    "AuthConfig",
    "AuthError",
    "AuthStatistics",
    "BrokerAwareStore",
    "Decision",
    "HandlerTimeout",
    "History",
    "HistoryStatistics",
    "HistoryStore",
    "HistoryUnavailable",
    "Identity",
    "JWKSKeys",
    "JWKSStatistics",
    "JWTVerifier",
    "Logging",
    "LoggingConfig",
    "LoggingStatistics",
    "Member",
    "MemoryHistory",
    "MemoryHistoryStatistics",
    "MemoryPresence",
    "MemoryPresenceStatistics",
    "MemoryStore",
    "MemoryStoreStatistics",
    "Metrics",
    "MetricsConfig",
    "MetricsStatistics",
    "MultiRoomStore",
    "Position",
    "Presence",
    "PresenceConfig",
    "PresenceStatistics",
    "PresenceStore",
    "PresenceUnavailable",
    "Rate",
    "RateLimit",
    "RateLimitConfig",
    "RateLimitStatistics",
    "RateLimitStore",
    "RedisHistory",
    "RedisHistoryStatistics",
    "RedisPresence",
    "RedisPresenceStatistics",
    "RedisStore",
    "RedisStoreStatistics",
    "RoleGuard",
    "Since",
    "Timeout",
    "TimeoutConfig",
    "TimeoutStatistics",
    "TokenSource",
    "Verifier",
    "as_verifier",
    "by_client",
    "by_identity",
    "by_metadata",
    "by_remote_ip",
    "by_room",
    "default_instance_id",
    "first_of",
    "from_cookie",
    "from_header",
    "from_query",
    "from_subprotocol",
    "gcra",
    "roles",
]
