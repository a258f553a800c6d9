"""The rooms a client joins besides its connect-time room: the hub's ``join_room`` and
``leave_room`` actions, applied to this node's clients.

Theory of operation. The :class:`~._roster.Roster` keeps the memberships (each room's dict
holds each member once); :class:`Memberships` applies the actions to it, counts them, and
tells the cluster node (if any) of each membership that begins or ends here, so that the node
listens to the room's channel and registers the membership in Redis (``cluster/``). An action
for a client that is not connected here returns ``False``: the hub then hands it to the
cluster node, which sends it to the client's node, or counts it as an unknown target. A client
that leaves (disconnects, or is replaced) leaves every room it joined first
(:meth:`Memberships.leave_all`), so no membership outlives its client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..protocol import JoinRoom, LeaveRoom
from ._ports import ClusterPort
from ._roster import ClientEntry, Roster

__all__ = ["Memberships"]

logger = logging.getLogger("strands_trio.broker")


class Memberships:
    """The joined rooms of this node's clients (see the module's theory of operation).

    Args:
        roster: The hub's roster.
        count_unknown: Counts an action for a client no node has (the hub's
            ``unknown_targets``).
    """

    def __init__(self, roster: Roster, count_unknown: Callable[[], None]) -> None:
        self._roster = roster
        self._count_unknown = count_unknown
        #: The cluster node told of memberships that begin and end here (``None``: none).
        self.cluster: ClusterPort | None = None
        #: Joins that put a client in a room.
        self.joins = 0
        #: Leaves that took a client out of a room it had joined.
        self.leaves = 0
        #: Joins of a room the client was in and leaves of a room it had not joined (or of
        #: its connect-time room, which a client leaves only by disconnecting).
        self.noops = 0

    def on_join(self, backend: object, action: JoinRoom) -> None:
        """A backend's ``join_room`` action."""
        if not self.join(action.conn_id, action.room_id):
            self._elsewhere(action.conn_id, action.room_id, join=True)

    def on_leave(self, backend: object, action: LeaveRoom) -> None:
        """A backend's ``leave_room`` action."""
        if not self.leave(action.conn_id, action.room_id):
            self._elsewhere(action.conn_id, action.room_id, join=False)

    def _elsewhere(self, client_id: str, room_id: str, *, join: bool) -> None:
        if self.cluster is not None:  # on another node, or unknown: the node finds out
            self.cluster.room_action(client_id, room_id, join=join)
            return
        self._count_unknown()
        logger.info(
            "%s of room %r for client %r, which is not connected: ignored",
            "join_room" if join else "leave_room",
            room_id,
            client_id,
        )

    def join(self, client_id: str, room_id: str) -> bool:
        """Put the client *client_id* in *room_id* if it is connected here; whether it is."""
        client = self._roster.clients.get(client_id)
        if client is None:
            return False
        created = self._roster.join(client, room_id)
        if created is None:
            self.noops += 1
            logger.debug("client %r is in room %r already: join ignored", client_id, room_id)
            return True
        self.joins += 1
        if self.cluster is not None:
            self.cluster.room_joined(client_id, room_id, room_created=created)
        return True

    def leave(self, client_id: str, room_id: str) -> bool:
        """Take the client *client_id* out of *room_id* if it is connected here; whether it
        is."""
        client = self._roster.clients.get(client_id)
        if client is None:
            return False
        emptied = self._roster.leave(client, room_id)
        if emptied is None:
            self.noops += 1
            if room_id == client.room_id:
                logger.info(
                    "client %r cannot leave %r, the room it connected to: leave ignored "
                    "(a client leaves its connect-time room by disconnecting)",
                    client_id,
                    room_id,
                )
            return True
        self.leaves += 1
        if self.cluster is not None:
            self.cluster.room_left(client_id, room_id, room_emptied=emptied)
        return True

    def counts(self) -> dict[str, int]:
        """The figures of :class:`~._hub_statistics.HubStatistics` kept here."""
        return {
            "memberships": self._roster.memberships,
            "room_joins": self.joins,
            "room_leaves": self.leaves,
            "room_noops": self.noops,
        }

    def leave_all(self, client: ClientEntry) -> None:
        """*client* is leaving: take it out of every room it joined (not counted as leaves)."""
        left = self._roster.leave_joined(client)
        cluster = self.cluster
        if cluster is not None:
            for room_id, emptied in left:
                cluster.room_left(client.client_id, room_id, room_emptied=emptied)
