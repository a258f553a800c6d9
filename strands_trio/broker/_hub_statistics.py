"""What the hub counts: :class:`HubStatistics`, and the metrics ``/metrics`` shows of it."""

from __future__ import annotations

import attrs

from ._prometheus import Metric, counter, gauge

__all__ = ["HubStatistics", "hub_metrics"]


@attrs.frozen(kw_only=True)
class HubStatistics:
    """What the hub holds now and has counted (:meth:`Hub.statistics`).

    Attributes:
        connections: WebSocket clients connected now.
        rooms: Rooms with at least one client.
        backends: Backends ready for events.
        queued: Events waiting for a backend.
        pending_requests: Connection requests waiting for an answer.
        requests: Connection requests sent to a backend.
        accepted: Connection requests accepted.
        rejected: Connection requests rejected by a backend.
        timed_out: Connection requests no backend answered in time.
        no_backend: Connection requests refused for want of a backend.
        bad_responses: Acceptances without a client or room id (refused).
        messages_in: Messages from clients.
        messages_out: Messages handed to clients' links.
        events_queued: Events put in the no-backend queue.
        queue_dropped: Queued events dropped because the queue was full (lost).
        unknown_targets: Actions for unknown clients, rooms or requests.
        replaced: Clients closed because another connected with their id.
        flow_pauses: Times a client's reading paused for its backend (flow control).
        memberships: Room memberships now: one per client for its connect-time room, plus
            the rooms clients joined (``join_room``).
        room_joins: ``join_room`` actions that put a client in a room.
        room_leaves: ``leave_room`` actions that took a client out of a room.
        room_noops: ``join_room`` of a room the client was in, ``leave_room`` of a room it
            had not joined (ignored).
    """

    connections: int
    rooms: int
    backends: int
    queued: int
    pending_requests: int
    requests: int
    accepted: int
    rejected: int
    timed_out: int
    no_backend: int
    bad_responses: int
    messages_in: int
    messages_out: int
    events_queued: int
    queue_dropped: int
    unknown_targets: int
    replaced: int
    flow_pauses: int
    memberships: int = 0
    room_joins: int = 0
    room_leaves: int = 0
    room_noops: int = 0


def hub_metrics(s: HubStatistics) -> list[Metric]:
    """The hub's part of ``GET /metrics``, from its figures *s*."""
    return [
        gauge("connections", "WebSocket clients connected", s.connections),
        gauge("rooms", "Rooms with at least one client", s.rooms),
        gauge("room_memberships", "Clients in rooms, counting each room a client is in",
              s.memberships),
        gauge("backends", "Backends connected", s.backends),
        gauge("queue_depth", "Events waiting for a backend", s.queued),
        gauge("pending_requests", "Connection requests waiting for a backend",
              s.pending_requests),
        counter("connection_requests", "Connection requests sent to backends", s.requests),
        counter("connections_accepted", "Connection requests accepted", s.accepted),
        counter("connections_rejected", "Connection requests rejected by a backend",
                s.rejected),
        counter("request_timeouts", "Connection requests no backend answered in time",
                s.timed_out),
        counter("no_backend", "Connection requests refused for want of a backend",
                s.no_backend),
        counter("messages_in", "Messages from WebSocket clients", s.messages_in),
        counter("messages_out", "Messages delivered to WebSocket clients", s.messages_out),
        counter("queue_dropped", "Queued events dropped because the queue was full",
                s.queue_dropped),
        ("events_lost_total", "counter", "Events for backends lost, by reason",
         [('{reason="queue_full"}', s.queue_dropped)]),
        counter("unknown_targets", "Actions for unknown clients, rooms or requests",
                s.unknown_targets),
        counter("clients_replaced", "Clients closed because another took their id",
                s.replaced),
        counter("room_joins", "Clients put in a room by join_room", s.room_joins),
        counter("room_leaves", "Clients taken out of a room by leave_room", s.room_leaves),
        counter("room_noops", "join_room and leave_room actions that changed nothing",
                s.room_noops),
        counter("flow_pauses", "Times a client's reading paused for its backend",
                s.flow_pauses),
    ]  # fmt: skip
