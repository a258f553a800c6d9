"""The write side of one WebSocket connection: queued frames, written at once when the socket
takes them, else by a drain task.

Theory of operation. Whoever has something for the client (the hub delivering a message, the
protocol answering a ping or a close, an HTTP answer) calls :meth:`Output.queue`, which never
waits; :meth:`Output.flush` then writes everything queued with one non-blocking ``send``, so a
burst of messages to one client costs one system call and no task switch. Only when the
kernel's buffer is full (the client reads slowly), or the transport cannot write without
waiting (TLS), does a *drain* task start, in the nursery given, to write the rest as the
socket allows; it ends when nothing is left. The rest of a frame that a write cut in two goes
first and is never dropped, so the client never sees half a frame.

Whole frames not yet handed to a write can be dropped (:meth:`Output.drop_queued`: a client
closed for not reading does not get what piled up). A half-close asked for
(:meth:`Output.half_close`) is sent once everything before it is written.

Resource handling: :meth:`Output.close` cancels the drain task (its scope is shielded from
everything else, so that a broker shutting down still writes its close frames).
"""

from __future__ import annotations

import trio

from ._transport import Transport

__all__ = ["Output"]


class Output:
    """The bytes waiting to be written to one client (see the module's theory of operation).

    Args:
        transport: Where to write.
        drains: Where drain tasks run.
    """

    __slots__ = (
        "_closed",
        "_drain_scope",
        "_draining",
        "_drains",
        "_eof_pending",
        "_frames",
        "_idle_lot",
        "_transport",
        "broken",
        "lost",
        "size",
    )

    def __init__(self, transport: Transport, drains: trio.Nursery) -> None:
        self._transport = transport
        self._drains = drains
        self._frames: list[bytes] = []
        self._eof_pending = False
        self._draining = False
        self._closed = False
        self._drain_scope: trio.CancelScope | None = None
        self._idle_lot = trio.lowlevel.ParkingLot()
        #: Bytes queued or being written.
        self.size = 0
        #: Whether writing failed (the peer is gone); what was queued is then dropped.
        self.broken = False
        #: Frames never written: queued when writing failed or the output was closed.
        self.lost = 0

    @property
    def queued(self) -> int:
        """Frames queued and not yet handed to a write."""
        return len(self._frames)

    def queue(self, data: bytes) -> None:
        """Add *data* (one frame, or an HTTP answer) after what is queued."""
        self._frames.append(data)
        self.size += len(data)

    def drop_queued(self) -> int:
        """Drop the frames not yet handed to a write (what a write is in the middle of stays);
        the number dropped."""
        frames = self._frames
        dropped = len(frames)
        self.size -= sum(map(len, frames))
        frames.clear()
        return dropped

    def half_close(self) -> None:
        """Send the end of the stream once everything queued is written."""
        self._eof_pending = True

    def flush(self) -> None:
        """Write what is queued: now if the socket takes it, else from a drain task."""
        frames = self._frames
        if self._draining or self.broken:
            return
        if not frames:
            self._end_if_asked()
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        count = len(frames)
        frames.clear()
        try:
            written = self._transport.send_nowait(data)
        except OSError:
            self.lost += count
            self._broke()
            return
        if written == len(data):
            self.size = 0
            self._end_if_asked()
            return
        self.size = len(data) - written
        self._draining = True
        self._drains.start_soon(self._drain, memoryview(data)[written:])

    def _end_if_asked(self) -> None:
        if self._eof_pending:
            self._eof_pending = False
            self._transport.shutdown_write()

    async def _drain(self, head: memoryview) -> None:
        frames, transport = self._frames, self._transport
        with trio.CancelScope(shield=True) as self._drain_scope:  # ended by close()
            if self._closed:  # closed before this task even started
                self._draining = False
                return
            try:
                await transport.send_all(head)  # the rest of a frame already begun
                self.size -= len(head)
                while frames:
                    data = frames[0] if len(frames) == 1 else b"".join(frames)
                    taken = len(frames)
                    frames.clear()
                    try:
                        await transport.send_all(data)
                    except (OSError, ValueError):
                        self.lost += taken
                        raise
                    self.size -= len(data)
                    if self._idle_lot:
                        self._idle_lot.unpark_all()
                self._end_if_asked()
            except (OSError, ValueError):  # ValueError: a socket closed under us
                self._broke()
            finally:
                self._draining = False
                self._drain_scope = None
                self._idle_lot.unpark_all()

    def _broke(self) -> None:
        self.broken = True
        self.size = 0
        self.lost += len(self._frames)
        self._frames.clear()
        self._idle_lot.unpark_all()

    async def wait_below(self, at_most: int) -> None:
        """Wait until at most *at_most* bytes are waiting to be written (or writing failed)."""
        while self.size > at_most and not self.broken:
            await self._idle_lot.park()

    def close(self) -> None:
        """Stop writing (cancelling the drain task, if any); what is queued is lost."""
        self._closed = True
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        self.lost += len(self._frames)
        self._frames.clear()
