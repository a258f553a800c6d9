"""The write side of one broker connection: an outbox of encoded frames and the task that
writes it.

Theory of operation: senders append encoded frames to ``_chunks`` without waiting, unless the
bytes waiting have reached ``max_bytes``, in which case they wait for the writer (backpressure).
The writer task joins everything waiting into one buffer and writes it with a single
``send_all``; frames sent while that write is in progress are joined into the next one. So a
burst of replies costs a few system calls, not one per frame, and at most ``2 * max_bytes``
are held (one buffer being written, one filling).

When the connection ends, :meth:`close` reports how many frames were never written (or were
being written when the link broke) so the client can log and count them.
"""

from __future__ import annotations

import trio

__all__ = ["Outbox"]


class Outbox:
    """Frames waiting to be written to one stream, and the task that writes them."""

    __slots__ = (
        "_chunks",
        "_closed",
        "_flushed_lot",
        "_frames",
        "_in_flight",
        "_max_bytes",
        "_size",
        "_space_lot",
        "_writer_lot",
        "_writer_parked",
        "frames_written",
        "writes",
    )

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._frames = 0
        self._in_flight = 0
        self._closed = False
        self._writer_parked = False
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._flushed_lot = trio.lowlevel.ParkingLot()
        #: Frames written so far, and the ``send_all`` calls that wrote them.
        self.frames_written = 0
        self.writes = 0

    @property
    def closed(self) -> bool:
        """Whether the connection this outbox writes to has ended."""
        return self._closed

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or being written."""
        return not self._chunks and not self._in_flight

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet handed to the writer."""
        return self._size

    @property
    def full(self) -> bool:
        """Whether the bytes waiting have reached the limit (senders should wait)."""
        return self._size >= self._max_bytes

    async def send(self, frame: bytes) -> None:
        """Queue one encoded frame, waiting first while the outbox is full.

        Raises:
            trio.ClosedResourceError: the connection has ended (before or while waiting).
        """
        await self.wait_for_space()
        self.send_nowait(frame)

    def send_nowait(self, frame: bytes) -> None:
        """Queue one encoded frame, even past the limit (check :attr:`full` afterwards).

        Raises:
            trio.ClosedResourceError: the connection has ended.
        """
        if self._closed:
            raise trio.ClosedResourceError("the connection this outbox writes to has ended")
        self._chunks.append(frame)
        self._size += len(frame)
        self._frames += 1
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark()

    async def wait_for_space(self) -> None:
        """Wait while the outbox is full (and open)."""
        while self._size >= self._max_bytes and not self._closed:
            await self._space_lot.park()

    async def flush(self) -> None:
        """Wait until everything queued so far has been written (or the outbox closed)."""
        while (self._chunks or self._in_flight) and not self._closed:
            await self._flushed_lot.park()

    async def write_loop(self, stream: trio.abc.SendStream) -> None:
        """Write queued frames to *stream* until cancelled or the stream breaks.

        Raises:
            trio.BrokenResourceError: the peer is gone (propagated from ``send_all``).
        """
        chunks = self._chunks
        while True:
            if not chunks:
                if self._flushed_lot:
                    self._flushed_lot.unpark_all()
                self._writer_parked = True
                await self._writer_lot.park()
                continue
            data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
            self._in_flight = self._frames
            chunks.clear()
            self._size = self._frames = 0
            if self._space_lot:
                self._space_lot.unpark_all()
            await stream.send_all(data)
            self.frames_written += self._in_flight
            self.writes += 1
            self._in_flight = 0

    def close(self) -> int:
        """Refuse further sends and wake every waiter; return the frames never written."""
        self._closed = True
        lost = self._frames + self._in_flight
        self._chunks.clear()
        self._size = self._frames = self._in_flight = 0
        self._space_lot.unpark_all()
        self._flushed_lot.unpark_all()
        return lost
