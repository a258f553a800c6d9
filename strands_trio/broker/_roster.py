"""Who is connected to this broker node: each client as the hub keeps it, by id and by room.

The hub owns one :class:`Roster` and reads its two dicts directly on hot paths (a message to a
client is one dict look-up, a message to a room one look-up and a loop over its members);
connecting and leaving go through :meth:`Roster.add` and :meth:`Roster.remove`, joining and
leaving more rooms through :meth:`Roster.join` and :meth:`Roster.leave`, which keep the two in
step. A client is in its connect-time room (``room_id``) and in the rooms it joined
(``Roster.joined_by``, which holds only the clients that joined some: a client of one room
costs nothing more, and its entry no extra slot); each room's dict holds each member once, so
a room message reaches each member once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ..context import Context
from ..protocol import BrokerMember, PresenceReply, PresenceRequest
from ._ports import Admission, BackendPort, ClientLink

__all__ = ["ClientEntry", "Roster"]


class ClientEntry:
    """One connected client, as the hub keeps it."""

    __slots__ = (
        "backend",
        "client_id",
        "context",
        "context_json",
        "dirty",
        "link",
        "pending",
        "room_id",
    )

    def __init__(self, admission: Admission, link: ClientLink, metadata: dict[str, Any]) -> None:
        self.client_id = admission.client_id
        self.room_id = admission.room_id
        # The context every event of this client carries.
        self.context = Context(
            client_id=admission.client_id, room_id=admission.room_id, metadata=metadata
        )
        self.context_json = orjson.dumps(self.context.to_json()).decode()
        self.link = link
        self.backend: BackendPort | None = admission.backend
        #: Bytes of this client's events its backend has not written yet.
        self.pending = 0
        #: Whether the link has deliveries not flushed yet.
        self.dirty = False


class Roster:
    """The clients connected here, by id and by room (a room exists while it has members)."""

    def __init__(self) -> None:
        self.clients: dict[str, ClientEntry] = {}
        #: Room id to its members, in joining order (a dict used as an ordered set).
        self.rooms: dict[str, dict[ClientEntry, None]] = {}
        #: The rooms each client joined besides its connect-time room, in joining order
        #: (only the clients that joined some).
        self.joined_by: dict[ClientEntry, dict[str, None]] = {}
        #: Memberships of joined rooms (besides each client's connect-time room).
        self.joined = 0

    def add(self, client: ClientEntry) -> bool:
        """Register *client* (its id must be free); whether its room was created for it."""
        self.clients[client.client_id] = client
        room = self.rooms.setdefault(client.room_id, {})
        room[client] = None
        return len(room) == 1

    def remove(self, client: ClientEntry) -> tuple[bool, bool]:
        """Forget *client* if it is the one registered under its id: whether it was, and
        whether its room is now empty (and gone)."""
        if self.clients.get(client.client_id) is not client:
            return False, False
        del self.clients[client.client_id]
        room = self.rooms.get(client.room_id)
        if room is not None:
            room.pop(client, None)
            if room:
                return True, False
            del self.rooms[client.room_id]
        return True, True

    def join(self, client: ClientEntry, room_id: str) -> bool | None:
        """Put *client* (registered) in *room_id* too: ``None`` if it was in it already,
        else whether the room was created for it."""
        joined = self.joined_by.get(client)
        if room_id == client.room_id or (joined is not None and room_id in joined):
            return None
        if joined is None:
            joined = self.joined_by[client] = {}
        joined[room_id] = None
        self.joined += 1
        room = self.rooms.setdefault(room_id, {})
        room[client] = None
        return len(room) == 1

    def leave(self, client: ClientEntry, room_id: str) -> bool | None:
        """Take *client* out of a room it joined: ``None`` if it had not joined it (its
        connect-time room cannot be left), else whether the room is now empty (and gone)."""
        joined = self.joined_by.get(client)
        if joined is None or room_id not in joined:
            return None
        del joined[room_id]
        if not joined:
            del self.joined_by[client]
        self.joined -= 1
        room = self.rooms.get(room_id)
        if room is not None:
            room.pop(client, None)
            if room:
                return False
            del self.rooms[room_id]
        return True

    def leave_joined(self, client: ClientEntry) -> list[tuple[str, bool]]:
        """Take *client* out of every room it joined (it is leaving): each room, and
        whether it is now empty."""
        joined = self.joined_by.get(client)
        if not joined:
            return []
        out = []
        for room_id in list(joined):
            emptied = self.leave(client, room_id)
            if emptied is not None:
                out.append((room_id, emptied))
        return out

    @property
    def memberships(self) -> int:
        """Room memberships here: one per client for its connect-time room, plus the joined
        ones."""
        return len(self.clients) + self.joined

    def joined_rooms(self) -> Iterator[tuple[str, str]]:
        """``(client_id, room_id)`` of every joined room of the clients connected here."""
        for client, joined in self.joined_by.items():
            for room_id in joined:
                yield client.client_id, room_id

    def rooms_of(self, client: ClientEntry) -> tuple[str, ...]:
        """Every room *client* is in: its connect-time room first, then those it joined."""
        joined = self.joined_by.get(client)
        return (client.room_id, *joined) if joined else (client.room_id,)

    def ids(self) -> Iterator[tuple[str, str]]:
        """``(client_id, room_id)`` of every client connected here."""
        for client in self.clients.values():
            yield client.client_id, client.room_id

    def presence(self, request: PresenceRequest, node: str, complete: bool) -> PresenceReply:
        """The answer to *request* from the clients connected here (on *node*)."""
        room = self.rooms.get(request.room_id, ())
        return PresenceReply(
            request_id=request.request_id,
            room_id=request.room_id,
            members=tuple(BrokerMember(client_id=client.client_id, node=node) for client in room),
            complete=complete,
        )
