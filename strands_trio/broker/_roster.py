"""Who is connected to this broker node: each client as the hub keeps it, by id and by room.

The hub owns one :class:`Roster` and reads its two dicts directly on hot paths (a message to a
client is one dict look-up); joining and leaving go through :meth:`Roster.add` and
:meth:`Roster.remove`, which keep the two in step.
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
