"""Connection slots of the WebSocket port, counted from the moment a socket is accepted, and the
process's open-file limit.

Theory of operation. Every accepted socket takes a slot before a byte of it is read, so that a
flood of slow or silent connections (a slowloris) is bounded like open WebSockets are:
``max_connections`` in all and ``max_connections_per_ip`` from one address. A socket beyond
the per-address limit is refused at once; one beyond the total may still take one of a few
*headroom* slots, which only serve plain HTTP (``/healthz``, ``/metrics``) with a short
deadline, so that a full broker still answers its health checks. A socket from a trusted
proxy counts against the total only until its request head names the client, then against
that client's address (:meth:`Slot.assign`).

The limits only hold if the process can open that many files: :func:`raise_open_file_limit`
raises the soft limit to the hard one at start, and :func:`usable_connections` lowers
``max_connections`` when even that is not enough, keeping files for backends, Redis, the
headroom and the listeners.
"""

from __future__ import annotations

import logging
import resource
from typing import Literal

import attrs

__all__ = [
    "ConnectionLimits",
    "LimitStatistics",
    "Slot",
    "raise_open_file_limit",
    "usable_connections",
]

logger = logging.getLogger("strands_trio.broker")

#: Files kept for everything but WebSocket clients: listeners, backends, Redis, logs, TLS.
RESERVED_FILES = 128

Refusal = Literal["full", "per_ip"]


class Slot:
    """One accepted socket's place against the limits; :meth:`release` it when it closes."""

    __slots__ = ("_limits", "_released", "headroom", "ip")

    def __init__(self, limits: ConnectionLimits, ip: str | None, headroom: bool) -> None:
        self._limits = limits
        self._released = False
        #: The address counted against ``max_connections_per_ip`` (``None``: not yet known,
        #: behind a trusted proxy).
        self.ip = ip
        #: Whether this is a headroom slot (plain HTTP only).
        self.headroom = headroom

    def assign(self, ip: str) -> bool:
        """Count this slot against *ip* from now on (the client behind a trusted proxy);
        ``False`` if *ip* already has its share (the slot is then left as it was)."""
        limits = self._limits
        if ip == self.ip:
            return True
        if limits.per_ip.get(ip, 0) >= limits.max_per_ip:
            return False
        if self.ip is not None:
            limits._uncount(self.ip)
        limits.per_ip[ip] = limits.per_ip.get(ip, 0) + 1
        self.ip = ip
        return True

    def release(self) -> None:
        """Give the slot back (once)."""
        if self._released:
            return
        self._released = True
        limits = self._limits
        if self.headroom:
            limits.headroom_used -= 1
        else:
            limits.used -= 1
        if self.ip is not None:
            limits._uncount(self.ip)


@attrs.frozen(kw_only=True)
class LimitStatistics:
    """The connection slots in use (``FrontStatistics.slots``).

    Attributes:
        used: Sockets holding a slot (handshakes and open WebSockets alike).
        headroom_used: Sockets in the headroom (plain HTTP beyond the total).
        addresses: Client addresses holding at least one slot.
        max_connections: The total in force (``max_connections``, lowered if the open-file
            limit is too low for it).
    """

    used: int
    headroom_used: int
    addresses: int
    max_connections: int


class ConnectionLimits:
    """The slots of the WebSocket port (see the module's theory of operation).

    Args:
        max_connections: Sockets at once.
        max_per_ip: Sockets at once from one address.
        headroom: Extra sockets for plain HTTP beyond *max_connections*.
    """

    def __init__(self, max_connections: int, max_per_ip: int, headroom: int = 32) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.headroom = headroom
        self.used = 0
        self.headroom_used = 0
        self.per_ip: dict[str, int] = {}

    def take(self, ip: str | None) -> Slot | Refusal:
        """A slot for a socket just accepted from *ip* (``None`` for a trusted proxy, whose
        client is not known yet), or why there is none."""
        if ip is not None and self.per_ip.get(ip, 0) >= self.max_per_ip:
            return "per_ip"
        if self.used < self.max_connections:
            self.used += 1
            headroom = False
        elif self.headroom_used < self.headroom:
            self.headroom_used += 1
            headroom = True
        else:
            return "full"
        if ip is not None:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return Slot(self, ip, headroom)

    def _uncount(self, ip: str) -> None:
        left = self.per_ip[ip] - 1
        if left:
            self.per_ip[ip] = left
        else:
            del self.per_ip[ip]

    def statistics(self) -> LimitStatistics:
        """The slots in use now."""
        return LimitStatistics(
            used=self.used,
            headroom_used=self.headroom_used,
            addresses=len(self.per_ip),
            max_connections=self.max_connections,
        )


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 30
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def usable_connections(max_connections: int, headroom: int, open_files: int) -> int:
    """*max_connections*, lowered (and logged) if *open_files* cannot hold that many sockets
    besides the headroom and :data:`RESERVED_FILES`."""
    usable = open_files - headroom - RESERVED_FILES
    if usable >= max_connections:
        return max_connections
    usable = max(1, usable)
    logger.warning(
        "the open-file limit (%d) allows %d WebSocket connections, not max_connections=%d: "
        "raise it (ulimit -n, LimitNOFILE=) to allow more",
        open_files,
        usable,
        max_connections,
    )
    return usable
