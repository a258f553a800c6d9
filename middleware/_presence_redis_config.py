"""The settings and the statistics record of :class:`~strands_trio.middleware.RedisPresence`
(kept apart so that its module stays one concept of under 500 lines)."""

from __future__ import annotations

import math

import attrs
from attrs import validators as v

from ._validators import NON_EMPTY_STR, Validator, not_bool

__all__ = ["RedisPresenceStatistics", "Settings"]

_TTL: list[Validator] = [not_bool("ttl"), v.instance_of((int, float)), v.ge(0.01), v.lt(math.inf)]
_BATCH: list[Validator] = [not_bool("batch", "an int"), v.instance_of(int), v.ge(1)]


@attrs.frozen(kw_only=True)
class Settings:
    """The checked arguments of a RedisPresence."""

    prefix: str = attrs.field(validator=NON_EMPTY_STR)
    ttl: float = attrs.field(validator=_TTL)
    batch: int = attrs.field(validator=_BATCH)


@attrs.frozen(kw_only=True)
class RedisPresenceStatistics:
    """A snapshot of a :class:`RedisPresence` (:meth:`RedisPresence.statistics`).

    Attributes:
        available: Whether Redis is reachable now.
        serving: Whether :meth:`RedisPresence.serve` is running.
        members: Members this instance owns (recorded, or healed, and not removed).
        pending: Changes recorded and not yet written to Redis.
        written: Changes written to Redis.
        refreshes: Liveness refreshes done.
        lapses: Refreshes that found this instance's liveness key gone (Redis restarted, or
            no refresh for ``ttl``): each was followed by a republish.
        republished: Members written again after a lapse.
        reaped: Entries of dead instances this instance deleted.
        outages: Times Redis became unreachable (each logged once).
        deferred: Changes recorded while Redis was unreachable (written when it came back).
        query_failures: Queries that raised :class:`PresenceUnavailable`.
        invalid: Entries in Redis that were not members (skipped).
        superseded: Writes refused because the client had left since, as another instance
            recorded (the member is forgotten here too).
        dropped: Members this instance forgot because the broker link they were learnt
            through came up again with another instance (the broker restarted).
        drop_removed: Entries those drops removed from Redis: this instance's, and those of
            other replicas learnt through the same broker (whichever replica runs it first).
    """

    available: bool
    serving: bool
    members: int
    pending: int
    written: int
    refreshes: int
    lapses: int
    republished: int
    reaped: int
    outages: int
    deferred: int
    query_failures: int
    invalid: int
    superseded: int
    dropped: int
    drop_removed: int
