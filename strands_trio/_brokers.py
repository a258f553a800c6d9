"""Which broker a backend's link is to, and who hears when a link comes up or goes down.

Theory of operation. strands-trio's broker sends a ``hello`` frame first on every backend link
(:class:`~strands_trio.protocol.Hello`): its stable name and a random *instance* id, new at
every start. The engine hands each connection's first frames to a :class:`LinkWatch`, which
reads the identity from a leading ``hello`` (:class:`BrokerIdentity`), or records ``None`` when
the first frame is anything else (the reference broker sends no hello), and announces the link
as a :class:`BrokerLink` *before* the connection's first event is dispatched; when the
connection ends it announces the link down. The engine checks one flag per read, not per
event: the hot path pays nothing.

Who hears: every app-level middleware with an ``on_broker_link(link)`` method
(:func:`link_listeners` finds them when the pipeline is built). The method is synchronous and
runs in the engine's read loop, so it must not block: :class:`~strands_trio.middleware.Presence`
uses it to drop the members a restarted broker no longer has. One that raises is logged and the
others are still told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from .protocol import Hello

__all__ = ["BrokerIdentity", "BrokerLink", "BrokerLinkListener", "LinkWatch", "link_listeners"]

logger = logging.getLogger("strands_trio.client")


@attrs.frozen(kw_only=True)
class BrokerIdentity:
    """Who a broker said it is, in the ``hello`` frame that opened the link.

    Attributes:
        name: Its stable name (cluster ``node_id``, else ``host:tcp_port``): the same after
            a restart.
        instance: A random id, new at every start of the broker.
        version: Its strands-trio version (``""`` if it did not say).
    """

    name: str
    instance: str
    version: str = ""


@attrs.frozen(kw_only=True)
class BrokerLink:
    """A link to a broker that came up, or went down (``up`` false).

    Attributes:
        up: Whether the link is up (false: this is the news of its end).
        where: The broker's address as this backend connects to it (``host:port``).
        number: This link's number in the backend process (1 for the first connection, 2
            after the first reconnection ...).
        identity: Who the broker said it is; ``None`` if it sent no ``hello`` (the reference
            broker): it then cannot tell a reconnection from a restart.
    """

    up: bool
    where: str
    number: int
    identity: BrokerIdentity | None


@runtime_checkable
class BrokerLinkListener(Protocol):
    """A middleware that wants to hear of link changes implements this method."""

    def on_broker_link(self, link: BrokerLink) -> None:
        """Told when a link comes up (before its first event) and when it goes down. Runs
        in the read loop: it must not block; raising is logged and ignored."""


#: What the engine calls with each link change.
LinkHook = Callable[[BrokerLink], None]


def link_listeners(middleware: Sequence[Any]) -> LinkHook | None:
    """One hook telling every listener in *middleware* (outermost first), or ``None`` if no
    middleware listens (then the engine calls nothing)."""
    hooks = [m.on_broker_link for m in middleware if isinstance(m, BrokerLinkListener)]
    if not hooks:
        return None

    def tell(link: BrokerLink) -> None:
        for hook in hooks:
            try:
                hook(link)
            except Exception:
                logger.exception("on_broker_link of %r raised; the others are still told", hook)

    return tell


class LinkWatch:
    """The engine's record of its links: numbers them, reads the identity from the first
    frame, and tells *hook* of each change.

    Args:
        where: The broker's address, for :attr:`BrokerLink.where`.
        hook: Told of each change; ``None`` for nobody.
    """

    __slots__ = ("_number", "current", "hook", "pending", "where")

    def __init__(self, where: str, hook: LinkHook | None) -> None:
        self.where = where
        #: Told of each change (the engine sets it from the jobs it runs).
        self.hook = hook
        self._number = 0
        #: The link up now, once its first frame said who the broker is.
        self.current: BrokerLink | None = None
        #: Whether a connection is up whose first frame has not come yet.
        self.pending = False

    def opened(self) -> None:
        """A connection is up; its first frame will say who the broker is."""
        self._number += 1
        self.pending = True

    def first(self, frames: list[Any]) -> list[Any]:
        """Read the identity from the connection's first *frames* (not empty), announce the
        link, and return the frames to dispatch (without the ``hello``)."""
        self.pending = False
        head = frames[0]
        identity = None
        if type(head) is Hello:
            identity = BrokerIdentity(
                name=head.broker, instance=head.instance, version=head.version
            )
            frames = frames[1:]
            logger.info(
                "the broker at %s is strands-trio %s, named %s, running as instance %s",
                self.where,
                head.version or "(version not given)",
                head.broker,
                head.instance,
            )
        self.current = BrokerLink(up=True, where=self.where, number=self._number, identity=identity)
        self._tell(self.current)
        return frames

    def closed(self) -> None:
        """The connection ended: announce the link down, if it was announced up."""
        self.pending = False
        link, self.current = self.current, None
        if link is not None:
            self._tell(attrs.evolve(link, up=False))

    def _tell(self, link: BrokerLink) -> None:
        if self.hook is not None:
            self.hook(link)
