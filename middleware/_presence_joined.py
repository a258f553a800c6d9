"""How :class:`~strands_trio.middleware.RedisPresence` keeps the rooms a client joined
(``join_room``) besides its connect-time room, and how a query merges what Redis answered
with this instance's changes not written yet.

Theory of operation. A joined room is one more entry, recorded, written, reaped and removed
as a client's entry is, under the *key* ``<client id> NUL <room>`` instead of the client id:
in Redis (the room's hash, the instance's hash, the ``left:`` mark) and in the store's memory
(what it owns, what is dirty). The entry's JSON is a :class:`Member` with the real client id
and the joined room, so a query lists the client under its own id. A client's ``leave`` (its
disconnection) leaves the rooms this instance joined it to; the others are left by whichever
instance gets the ``disconnected`` event, which lists every room the client was in (``rooms``,
an extension of strands-trio's broker), through :meth:`Presence.__call__
<strands_trio.middleware.Presence>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._presence_store import Member

__all__ = ["joined_key", "merge_changes", "split_key"]

_SEP = "\x00"


def joined_key(client_id: str, room: str) -> str:
    """The key of *client_id*'s entry for a room it joined."""
    return f"{client_id}{_SEP}{room}"


def split_key(key: str) -> tuple[str, str | None]:
    """``(client id, joined room)`` of an entry's key; the room is ``None`` for the entry of
    a client's connect-time room."""
    client_id, sep, room = key.partition(_SEP)
    return (client_id, room) if sep else (key, None)


def merge_changes(
    found: dict[str, Member],
    changes: Mapping[str, tuple[str, str, float]],
    owned: Mapping[str, tuple[Member, bytes]],
    healing: Mapping[str, Member],
    room: str,
    instance_id: str,
    leave: str,
) -> None:
    """Apply this instance's latest change of each entry (*changes*: key -> (kind, room,
    when)) over *found*, the members of *room* Redis answered (client id -> member), read
    against the state now (*owned*, *healing*): the connect-time entries first, then the
    joined ones, which a client's move out of *room* does not end."""
    joined_changes = []
    for key, (kind, changed_room, _) in changes.items():
        client_id, joined = split_key(key)
        if joined is not None:
            joined_changes.append((key, client_id, kind, changed_room))
            continue
        entry: Any = owned.get(key)
        here = entry[0] if entry is not None else healing.get(key)
        if here is not None:
            if here.room != room:
                mine = found.get(client_id)
                if mine is not None and mine.instance == instance_id:
                    del found[client_id]  # moved to another room
                    also = owned.get(joined_key(client_id, room))
                    if also is not None:  # but joined to this one here too
                        found[client_id] = also[0]
            elif entry is not None:
                found[client_id] = here
            else:
                found.setdefault(client_id, here)  # healing: an owner may have it
        elif kind == leave and changed_room == room:
            found.pop(client_id, None)
    for key, client_id, kind, changed_room in joined_changes:
        if changed_room != room:
            continue
        entry = owned.get(key)
        if entry is not None:
            found[client_id] = entry[0]
        elif kind == leave:
            home = owned.get(client_id)
            if home is None or home[0].room != room:
                found.pop(client_id, None)
