"""The broker's end of one backend connection: the buffer of events toward it, and its writer.

Theory of operation. :meth:`BackendLink.send` appends an encoded event without blocking and
without dropping it; :meth:`BackendLink.write_loop`, the link's writer task, joins what has
accumulated into writes of at most :data:`WRITE_BATCH` bytes (so that a burst of events costs
a few system calls, and the stall watchdog sees progress at least that often). The buffer is
bounded by those who fill it: it is :attr:`~BackendLink.full` at ``max_buffer`` bytes, and the
hub then makes the clients that send to this backend wait (:meth:`~BackendLink.wait_progress`)
until a write makes room. Each event may have an *owner* (the client it came from), whose
``pending`` counts its bytes until they are written, or until the link closes
(:meth:`~BackendLink.close`), whatever happens first: the hub's per-client share.
"""

from __future__ import annotations

import trio

from ._ports import Owner

__all__ = ["WRITE_BATCH", "BackendLink"]

#: The most written to a backend in one ``send_all``.
WRITE_BATCH = 256 * 1024


class BackendLink:
    """The broker's end of one backend connection (a :class:`~._ports.BackendPort`).

    Args:
        name: For log lines (``ip:port#n``).
        max_buffer: Bytes queued at which the link is :attr:`full`.
    """

    __slots__ = (
        "_chunks",
        "_in_flight",
        "_in_flight_owners",
        "_max_buffer",
        "_owners",
        "_progress_lot",
        "_size",
        "_writer_lot",
        "alive",
        "input_scope",
        "name",
        "scope",
        "written_bytes",
    )

    def __init__(self, name: str, max_buffer: int) -> None:
        self.name = name
        self._max_buffer = max_buffer
        self._chunks: list[bytes] = []
        self._owners: list[Owner | None] = []
        self._size = 0
        self._in_flight: list[bytes] = []
        self._in_flight_owners: list[Owner | None] = []
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._progress_lot = trio.lowlevel.ParkingLot()
        #: Whether the link takes events (authenticated, not dropped, not closed).
        self.alive = False
        #: Bytes written to the backend so far.
        self.written_bytes = 0
        self.scope = trio.CancelScope()
        self.input_scope = trio.CancelScope()

    @property
    def full(self) -> bool:
        """Whether the bytes waiting have reached ``max_backend_buffer``."""
        return self._size >= self._max_buffer

    @property
    def buffered(self) -> int:
        """Bytes queued or being written."""
        return self._size

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or being written."""
        return not self._size

    def send(self, data: bytes, owner: Owner | None = None) -> None:
        """Queue one encoded event, without blocking and without dropping it (the hub makes
        clients wait while the link is :attr:`full`); *owner*'s ``pending`` counts its bytes
        until they are written. Ignored once the link is closed."""
        if not self.alive:
            return
        self._chunks.append(data)
        self._owners.append(owner)
        size = len(data)
        self._size += size
        if owner is not None:
            owner.pending += size
        if self._writer_lot:
            self._writer_lot.unpark()

    async def wait_progress(self) -> None:
        """Return at the next write to the backend, or when the link closes."""
        if self.alive:
            await self._progress_lot.park()
        else:
            await trio.lowlevel.checkpoint()

    async def write_loop(self, stream: trio.abc.SendStream) -> None:
        """Write what is queued until cancelled.

        Raises:
            trio.BrokenResourceError: the backend is gone.
        """
        chunks, owners = self._chunks, self._owners
        while True:
            if not chunks:
                await self._writer_lot.park()
                continue
            count = size = 0
            for chunk in chunks:
                count += 1
                size += len(chunk)
                if size >= WRITE_BATCH:
                    break
            batch = self._in_flight = chunks[:count]
            batch_owners = self._in_flight_owners = owners[:count]
            del chunks[:count], owners[:count]
            await stream.send_all(batch[0] if count == 1 else b"".join(batch))
            if not self.alive:  # closed meanwhile: close() gave the owners their bytes back
                return
            self._in_flight = []
            self._in_flight_owners = []
            self._size -= size
            self.written_bytes += size
            _credit(batch_owners, batch)
            if self._progress_lot:
                self._progress_lot.unpark_all()

    async def flush(self) -> None:
        """Wait until everything queued has been written (or the link closed)."""
        while self._size and self.alive:
            await self._progress_lot.park()

    def close(self) -> int:
        """Stop taking events, wake whoever waits, and forget what was not written; the
        number of events lost."""
        self.alive = False
        lost = len(self._chunks) + len(self._in_flight)
        _credit(self._owners, self._chunks)
        _credit(self._in_flight_owners, self._in_flight)
        self._chunks.clear()
        self._owners.clear()
        self._in_flight = []
        self._in_flight_owners = []
        self._size = 0
        self._progress_lot.unpark_all()
        return lost


def _credit(owners: list[Owner | None], chunks: list[bytes]) -> None:
    """Give each owner back the bytes of its chunks (written, or lost with the link)."""
    for owner, chunk in zip(owners, chunks, strict=True):
        if owner is not None:
            owner.pending -= len(chunk)
