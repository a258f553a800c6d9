"""What a client counts, and the frozen snapshot of it that ``statistics()`` returns."""

from __future__ import annotations

import attrs

__all__ = ["ClientStatistics", "Counters"]


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """A snapshot of what a client has done, from :meth:`StrandsClient.statistics`.

    Counters are cumulative over the client's life, across reconnections and runs.
    """

    #: Whether a connection to the broker is up now.
    connected: bool
    #: Connections made, and attempts that failed.
    connections: int
    connect_failures: int
    #: Frames received from the broker (heartbeats and bad frames included).
    events_received: int
    heartbeats: int
    #: Lines from the broker that could not be decoded (logged and skipped).
    protocol_errors: int
    #: Handler calls that raised (logged; the client went on).
    handler_errors: int
    #: Events queued or being handled now, and handlers running now.
    events_pending: int
    handlers_running: int
    #: The bytes those pending events hold, as bounded by ``ClientConfig.max_pending_bytes``.
    bytes_pending: int = 0
    #: Connection requests accepted and rejected (by a handler, an error or a timeout).
    requests_accepted: int
    requests_rejected: int
    requests_timed_out: int
    #: Frames written to the broker, and the writes that carried them.
    frames_sent: int
    writes: int
    #: Frames that were queued or being written when a connection ended (logged).
    frames_dropped: int
    #: Sends refused with NotConnectedError.
    sends_refused: int
    #: Events received but never handled because a shutdown ran out of time (logged).
    events_dropped: int
    #: Events a guard refused (connection requests rejected, messages dropped).
    events_refused: int = 0
    #: Routed messages whose payload did not fit the route's model (the client was told).
    messages_invalid: int = 0
    #: Messages no route matched, with no fallback handler (the client was told).
    messages_unrouted: int = 0
    #: Replies sent to calls (messages with a ref) after their handler returned.
    replies_sent: int = 0
    #: Replies and errors of calls whose caller had left before they were ready (not sent).
    replies_dropped: int = 0


class Counters:
    """The mutable counters behind :class:`ClientStatistics`."""

    def __init__(self) -> None:
        self.connections = self.connect_failures = 0
        self.events_received = self.heartbeats = self.protocol_errors = 0
        self.handler_errors = 0
        self.requests_accepted = self.requests_rejected = self.requests_timed_out = 0
        self.frames_sent = self.writes = self.frames_dropped = self.sends_refused = 0
        self.events_dropped = self.events_refused = 0
        self.messages_invalid = self.messages_unrouted = 0
        self.replies_sent = self.replies_dropped = 0

    def snapshot(
        self,
        *,
        connected: bool,
        events_pending: int,
        bytes_pending: int,
        handlers_running: int,
        unflushed_frames: int,
        unflushed_writes: int,
    ) -> ClientStatistics:
        """These counts, with the live ones of the running engine (the current connection's
        writes are counted here only when it ends)."""
        counts = dict(vars(self))
        counts["frames_sent"] += unflushed_frames
        counts["writes"] += unflushed_writes
        return ClientStatistics(
            connected=connected,
            events_pending=events_pending,
            bytes_pending=bytes_pending,
            handlers_running=handlers_running,
            **counts,
        )
