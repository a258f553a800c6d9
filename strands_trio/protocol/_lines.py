"""Incremental splitting of a byte stream into ``\\n``-terminated lines, with a length limit.

Theory of operation: :meth:`LineSplitter.feed` takes whatever a read returned, however it is
chunked (half a line, many lines, a line and a half), and returns the lines it completes. Only
the new bytes are scanned for ``\\n``; the unfinished last line waits in a ``bytearray`` (so a
line that trickles in byte by byte costs linear time, not quadratic). A line longer than
``max_line_length`` is never buffered whole: as soon as it passes the limit it is reported once
as :class:`LineTooLong` and its remaining bytes are skipped up to the next ``\\n``, where
splitting resumes. So memory held here never exceeds the limit, whatever the peer sends.
"""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_MAX_LINE_LENGTH", "LineSplitter", "LineTooLong"]

#: 1 MiB: far above any real frame (headers of a WebSocket handshake, a chat message), far below
#: what would hurt a backend's memory.
DEFAULT_MAX_LINE_LENGTH = 1 << 20

_EXCERPT = 200


@attrs.frozen
class LineTooLong:
    """A line passed the limit; it is dropped. ``excerpt`` is its first bytes, for the log."""

    excerpt: bytes
    limit: int


class LineSplitter:
    """Split a byte stream into lines (without the ``\\n``), refusing over-long ones.

    Args:
        max_line_length: The longest line accepted, in bytes, not counting the ``\\n``.

    Raises:
        ValueError: ``max_line_length`` is not positive.
    """

    __slots__ = ("_discarding", "_max", "_partial")

    def __init__(self, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        if max_line_length < 1:
            raise ValueError(f"max_line_length must be at least 1, got {max_line_length}")
        self._max = max_line_length
        self._partial = bytearray()
        # True while skipping the rest of a line that was already reported as too long.
        self._discarding = False

    @property
    def max_line_length(self) -> int:
        """The limit given at construction."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held in memory (never more than the limit)."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray) -> list[bytes | bytearray | LineTooLong]:
        """Add *data*; return the lines it completes, in order, empty lines left out.

        Lines are of the type of *data* (``bytes`` or ``bytearray``)."""
        pieces: list[bytes | bytearray] = data.split(b"\n")  # type: ignore[assignment]
        tail = pieces.pop()  # the bytes after the last "\n": an unfinished line
        out: list[bytes | bytearray | LineTooLong] = []
        if pieces:
            if self._discarding:
                self._discarding = False
                pieces[0] = b""  # the end of a line reported already
            elif self._partial:
                self._partial += pieces[0]
                pieces[0] = bytes(self._partial)
                self._partial.clear()
            limit = self._max
            for line in pieces:
                if len(line) > limit:
                    out.append(LineTooLong(bytes(line[:_EXCERPT]), limit))
                elif line:
                    out.append(line)
        if self._discarding:
            return out
        if tail:
            self._partial += tail
            if len(self._partial) > self._max:
                out.append(LineTooLong(bytes(self._partial[:_EXCERPT]), self._max))
                self._partial = bytearray()
                self._discarding = True
        return out

    def feed_eof(self) -> bytes | None:
        """The stream ended: return the unfinished line, if any, and forget it."""
        rest, self._partial, self._discarding = self._partial, bytearray(), False
        return bytes(rest) if rest else None
