"""The names of a cluster's Redis keys and channels, and the envelopes published on them.

Every key and channel starts with the cluster's prefix ``P`` (the table of keys is in
``_node.py``'s docstring). Each message on a channel is an envelope: an orjson object whose
first field is the origin node, ``{"o": "a", ...}``. orjson keeps the order of the fields, so
this node's own envelopes start with exactly the bytes of :attr:`Channels.own`, which is how
the receiving side skips them without parsing them.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["Channels"]


class Channels:
    """Key and channel names, and envelope encoding, for one node of one cluster.

    Args:
        prefix: The cluster's prefix (``BrokerConfig.cluster_prefix``).
        node_id: This node's id.
    """

    __slots__ = ("all", "node", "node_id", "own", "prefix", "room_prefix")

    def __init__(self, prefix: str, node_id: str) -> None:
        self.prefix = prefix
        self.node_id = node_id
        #: This node's own channel: private messages, closes, forwarded events and answers.
        self.node = self.of_node(node_id)
        #: The channel of broadcasts, every node subscribed.
        self.all = f"{prefix}all".encode()
        #: What a room's channel starts with (the room id follows).
        self.room_prefix = f"{prefix}room:".encode()
        #: What this node's envelopes start with.
        self.own = b'{"o":' + orjson.dumps(node_id) + b","

    def of_node(self, node: str) -> bytes:
        """The channel of *node*."""
        return f"{self.prefix}node:{node}".encode()

    def of_room(self, room_id: str) -> bytes:
        """The channel of the room *room_id*."""
        return self.room_prefix + room_id.encode()

    def room_of(self, channel: bytes) -> str | None:
        """The room whose channel *channel* is, or ``None`` if it is no room's."""
        if channel.startswith(self.room_prefix):
            return channel[len(self.room_prefix) :].decode(errors="replace")
        return None

    def key(self, name: str) -> str:
        """The key *name* of the cluster (``nodes``, ``clients``, ...)."""
        return self.prefix + name

    def envelope(self, **fields: Any) -> bytes:
        """An envelope from this node carrying *fields*."""
        return orjson.dumps({"o": self.node_id, **fields})

    def raw_envelope(self, kind: str, line: bytes) -> bytes:
        """An envelope of kind *kind* whose ``d`` is *line*, a JSON object already encoded
        (an event or an action, re-used without decoding it)."""
        return self.own + b'"k":' + orjson.dumps(kind) + b',"d":' + line + b"}"
