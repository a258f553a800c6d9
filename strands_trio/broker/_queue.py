"""The events kept while no backend is connected (WIRE.md quirk 3), for the next one.

Bounded in count (``queue_size``, the reference's ``--queue-size``) and in bytes
(``queue_bytes``): past either, the oldest event is dropped, counted and logged (an event larger
than the byte bound is still kept alone). :meth:`EventQueue.drain` hands them, in order, to the
backend that connects next.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator

__all__ = ["EventQueue"]

logger = logging.getLogger("strands_trio.broker")


class EventQueue:
    """Encoded events waiting for a backend.

    Args:
        max_events: Events kept at most.
        max_bytes: Bytes kept at most.
    """

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._events: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        #: Events queued since the start.
        self.queued = 0
        #: Events dropped because the queue was full (lost).
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: bytes) -> None:
        """Keep *event*, dropping the oldest ones past the bounds."""
        events = self._events
        events.append(event)
        self._bytes += len(event)
        self.queued += 1
        while len(events) > self._max_events or (self._bytes > self._max_bytes and len(events) > 1):
            self._bytes -= len(events.popleft())
            self.dropped += 1
            logger.warning(
                "no backend: the event queue is full (%d events or %d bytes), dropped the "
                "oldest event",
                self._max_events,
                self._max_bytes,
            )

    def drain(self) -> Iterator[bytes]:
        """Take the events out, oldest first."""
        events = self._events
        while events:
            event = events.popleft()
            self._bytes -= len(event)
            yield event
