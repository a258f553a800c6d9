"""Messages between the nodes of a cluster: what this node publishes for the others' clients,
what it receives for its own, and the room channels it listens to.

Theory of operation. An action from a backend reaches this node's clients directly (the hub
did that), then the hub hands it here and it is published:

- a room message on the room's channel ``P room:<room>``; a broadcast on ``P all``;
- a private message, a close, or a room join or leave (``join_room``, ``leave_room``) for a
  client that is not here, with the ``SEND`` script: it
  looks the client's node up in ``P clients``, checks that node's ``alive`` key, and
  publishes on that node's channel ``P node:<node>``, in one round trip and to one node.

:meth:`Relay.on_message` is the subscriber's callback (quick, synchronous): it skips this
node's own envelopes by their first bytes (each client gets each message once: from the hub
on the origin node, from the channel on the others), and hands room messages, broadcasts,
private messages and closes to the hub's ``deliver_*`` and ``close_client``; the forwarding
envelopes (``ev``, ``resp``, ``gone``) go to ``_forwarding.py``. The deliveries are only
queued; :meth:`Relay.on_idle`, the subscriber's call when no other message is waiting, writes
to the clients once per burst (every 64 messages of a long one), as a backend's batch of
actions is written once: a node then costs the same per delivery whether the message came
from its own backend or from another node.

A node subscribes to a room's channel while it has members in the room, so nodes without
members get none of its messages: the hub says when a room's first client arrives and its last
leaves (:meth:`Relay.room_created`, :meth:`Relay.room_emptied`), and the task
:meth:`Relay.serve_subscriptions` sends ``SUBSCRIBE``/``UNSUBSCRIBE`` for what changed
meanwhile (a room that came and went in between costs nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import attrs
import orjson
import trio

from ...redis import LivePubSub, Message
from . import _scripts as scripts
from ._channels import Channels
from ._writer import Writer

__all__ = ["EnvelopeSink", "Relay", "RelayHub", "RelayStatistics"]

logger = logging.getLogger("strands_trio.broker.cluster")

#: Messages from other nodes delivered before the clients are written to, at most: a burst
#: that arrived together is written once per client (:meth:`Relay.on_idle`), a long one in
#: slices.
_FLUSH_EVERY = 64


class RelayHub(Protocol):
    """What the relay needs of the hub (its public side)."""

    def deliver_to_room(self, room_id: str, text: str, *, flush: bool = True) -> bool: ...

    def deliver_to_client(self, client_id: str, text: str, *, flush: bool = True) -> bool: ...

    def deliver_to_all(self, text: str, *, flush: bool = True) -> None: ...

    def flush(self) -> None: ...

    def close_client(self, client_id: str, code: int, reason: str) -> bool: ...

    def join_room(self, client_id: str, room_id: str) -> bool: ...

    def leave_room(self, client_id: str, room_id: str) -> bool: ...

    def count_unknown_target(self) -> None: ...


class EnvelopeSink(Protocol):
    """Who takes the forwarding envelopes (``ev``, ``resp``, ``gone``) of this node's
    channel."""

    def on_envelope(self, kind: str, envelope: dict[str, Any]) -> None: ...


_FORWARDING = frozenset(("ev", "resp", "gone"))


@attrs.frozen(kw_only=True)
class RelayStatistics:
    """The relay's figures (:meth:`Relay.statistics`).

    Attributes:
        published: Room messages, broadcasts, private messages and closes published.
        received: Messages received from other nodes.
        unknown_targets: Private messages and closes for a client no live node has.
        bad_messages: Messages on the cluster's channels that could not be understood.
        rooms: Room channels asked for now.
    """

    published: int
    received: int
    unknown_targets: int
    bad_messages: int
    rooms: int


class Relay:
    """Publishes this node's actions for the other nodes and delivers theirs here (see the
    module's theory of operation).

    Args:
        hub: This node's hub.
        channels: This node's channel names and envelopes.
        writer: The queue to Redis.
        forwarding: Who takes the forwarding envelopes.
        on_progress: Called when a round of subscriptions is done (for ``settle``).
    """

    def __init__(
        self,
        hub: RelayHub,
        channels: Channels,
        writer: Writer,
        forwarding: EnvelopeSink,
        on_progress: Callable[[], None],
    ) -> None:
        self._hub = hub
        self._channels = channels
        self._writer = writer
        self._forwarding = forwarding
        self._on_progress = on_progress
        self._prefix = channels.prefix
        self._rooms = 0
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._subscribing = False
        self._wake = trio.Event()
        self._published = self._received = self._unknown = self._bad = 0
        self._unflushed = 0  # messages delivered to the hub and not flushed yet

    # ------------------------------------------------------------------ to other nodes

    def room_message(self, room_id: str, message: str, *, local_members: bool) -> None:
        """Publish a room message (already delivered to this node's members)."""
        on_published = self._on_published if local_members else self._on_room_published
        envelope = self._channels.envelope(m=message)
        self._writer.publish(("PUBLISH", self._channels.of_room(room_id), envelope), on_published)

    def broadcast(self, message: str) -> None:
        """Publish a broadcast (already delivered to this node's clients)."""
        envelope = self._channels.envelope(m=message)
        self._writer.publish(("PUBLISH", self._channels.all, envelope), self._on_published)

    def private_message(self, client_id: str, message: str) -> None:
        """Send a message to a client of another node."""
        self._send(client_id, self._channels.envelope(c=client_id, m=message))

    def close_client(self, client_id: str, code: int, reason: str) -> None:
        """Close a client of another node."""
        self._send(
            client_id, self._channels.envelope(k="close", c=client_id, code=code, reason=reason)
        )

    def room_action(self, client_id: str, room_id: str, *, join: bool) -> None:
        """Make a client of another node join (or leave) a room."""
        kind = "join" if join else "leave"
        self._send(client_id, self._channels.envelope(k=kind, c=client_id, r=room_id))

    def _send(self, client_id: str, envelope: bytes) -> None:
        command = scripts.call(scripts.SEND, self._prefix, client_id, envelope)
        self._writer.publish(command, self._on_sent)

    def _on_published(self, reply: Any) -> None:
        self._published += 1

    def _on_room_published(self, reply: Any) -> None:
        self._published += 1
        if reply == 0:  # no node has a member in that room, this one neither
            self._hub.count_unknown_target()

    def _on_sent(self, reply: Any) -> None:
        if type(reply) is int and reply > 0:
            self._published += 1
        else:  # unknown client, dead node, or its node not listening
            self._unknown += 1
            self._hub.count_unknown_target()

    # ------------------------------------------------------------------ from other nodes

    def on_message(self, message: Message) -> None:
        """The subscriber's callback: one message from a cluster channel."""
        data = message.data
        channels = self._channels
        if data.startswith(channels.own):
            return
        try:
            envelope = orjson.loads(data)
            text = envelope.get("m")
        except (orjson.JSONDecodeError, AttributeError):
            envelope = text = None
        channel = message.channel
        room_id = channels.room_of(channel)
        if room_id is not None and type(text) is str:
            self._received += 1
            self._hub.deliver_to_room(room_id, text, flush=False)
            self._unflushed += 1
        elif channel == channels.all and type(text) is str:
            self._received += 1
            self._hub.deliver_to_all(text, flush=False)
            self._unflushed += 1
        elif channel == channels.node and type(envelope) is dict:
            self._received += 1
            self._on_node_envelope(envelope, text)
        else:
            self._bad_message(channel, data)
        if self._unflushed >= _FLUSH_EVERY:  # a long burst: write what piled up so far
            self.on_idle()

    def _on_node_envelope(self, envelope: dict[str, Any], text: Any) -> None:
        kind = envelope.get("k")
        if kind in _FORWARDING:
            self._forwarding.on_envelope(kind, envelope)
            return
        client_id = envelope.get("c")
        if type(client_id) is not str:
            self._bad_message(self._channels.node, orjson.dumps(envelope))
            return
        hub = self._hub
        if kind == "close":
            code, reason = envelope.get("code"), envelope.get("reason")
            if type(code) is not int or type(reason) is not str:
                return
            if not hub.close_client(client_id, code, reason):
                hub.count_unknown_target()
        elif kind == "join" or kind == "leave":
            room_id = envelope.get("r")
            if type(room_id) is not str:
                self._bad_message(self._channels.node, orjson.dumps(envelope))
                return
            apply = hub.join_room if kind == "join" else hub.leave_room
            if not apply(client_id, room_id):  # it left meanwhile: no ghost membership
                hub.count_unknown_target()
        elif type(text) is str:
            if hub.deliver_to_client(client_id, text, flush=False):
                self._unflushed += 1
            else:
                hub.count_unknown_target()

    def on_idle(self) -> None:
        """The subscriber's other callback: the burst of messages that arrived together is
        over; the clients it reached are written to, once each."""
        if self._unflushed:
            self._unflushed = 0
            self._hub.flush()

    def _bad_message(self, channel: bytes, data: bytes) -> None:
        self._bad += 1
        logger.warning("skipped a bad cluster message on %r: %r", channel, data[:200])

    # ------------------------------------------------------------------ room channels

    def room_created(self, room_id: str) -> None:
        """This node has its first member of *room_id*: listen to its channel."""
        self._rooms += 1
        if room_id in self._to_unsubscribe:
            self._to_unsubscribe.discard(room_id)
        else:
            self._to_subscribe.add(room_id)
        self._wake.set()

    def room_emptied(self, room_id: str) -> None:
        """This node's last member of *room_id* left: stop listening to its channel."""
        self._rooms -= 1
        if room_id in self._to_subscribe:
            self._to_subscribe.discard(room_id)
        else:
            self._to_unsubscribe.add(room_id)
        self._wake.set()

    @property
    def subscribed(self) -> bool:
        """Whether every room subscription asked for so far has been confirmed (or will be
        made on the subscriber's next connection)."""
        return not (self._subscribing or self._to_subscribe or self._to_unsubscribe)

    async def serve_subscriptions(self, pubsub: LivePubSub) -> NoReturn:
        """Subscribe to and unsubscribe from room channels as rooms come and go, until
        cancelled."""
        of_room = self._channels.of_room
        while True:
            if not (self._to_subscribe or self._to_unsubscribe):
                self._wake = trio.Event()
                await self._wake.wait()
            add, self._to_subscribe = self._to_subscribe, set()
            drop, self._to_unsubscribe = self._to_unsubscribe, set()
            self._subscribing = True
            if add:
                await pubsub.subscribe(*(of_room(room) for room in add))
            if drop:
                await pubsub.unsubscribe(*(of_room(room) for room in drop))
            self._subscribing = False
            self._on_progress()

    # ------------------------------------------------------------------ figures

    def statistics(self) -> RelayStatistics:
        """The relay's figures now."""
        return RelayStatistics(
            published=self._published,
            received=self._received,
            unknown_targets=self._unknown,
            bad_messages=self._bad,
            rooms=self._rooms,
        )
