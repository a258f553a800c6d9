"""One connection to Redis, shared by many tasks: the part both ``Redis`` and ``PubSub`` use.

Theory of operation. Callers never touch the stream. Two tasks own it, for as long as the
connection lives (:meth:`Link.serve`, run in a nursery by ``open_redis``/``open_pubsub``):

    caller tasks ──submit()──> _unsent ──writer──> send_all ──> Redis
         ^                        │ (moved at write time)
         └──reply──── _inflight <─┘ <──reader── receive_some + hiredis.Reader <── Redis

- :meth:`Link.submit` encodes nothing itself (the caller packed the command with
  ``hiredis.pack_command``): it appends a :class:`Call` to ``_unsent`` and wakes the writer.
  It never waits, so many tasks submitting at once fill one batch.
- The *writer* takes the whole batch, moves its calls to ``_inflight`` in order and writes
  their bytes with one ``send_all``: commands from concurrent tasks are pipelined in as many
  system calls as there are batches, not one per command.
- The *reader* feeds what it receives to ``hiredis.Reader`` and hands each complete reply to
  the reply handler: by default the first call in ``_inflight`` (Redis answers in order), which
  is popped and its task rescheduled with the reply. ``PubSub`` plugs in its own handler.

Cancellation. A caller waits with ``trio.lowlevel.wait_task_rescheduled``; if it is cancelled,
the abort function decides what happens to its command without any I/O:

- still in ``_unsent``: it is *withdrawn*: the writer skips it, Redis never sees it;
- already taken by the writer: it is *abandoned*: it stays in ``_inflight``, the reader reads
  its reply when it comes and throws it away, so the replies of later calls still match.

So a cancelled caller never desynchronises the stream, and never breaks the connection for
the others: only the writer and the reader do I/O, and they are cancelled only when the
connection closes. (Callers writing their own commands would need a lock, and a caller
cancelled in the middle of a ``send_all`` would leave half a command on the wire, which
only closing the connection can repair; docs/redis.md has the figures that say the two tasks
cost little.)

The end. When the stream breaks, Redis closes it, hiredis finds bytes that are not RESP, or
a reply comes that no call is waiting for, the connection is *lost*: every call waiting or
queued fails with a fresh :class:`RedisConnectionError` (the cause attached), both tasks stop,
the stream is closed and every later :meth:`submit` fails at once. Nothing is retried here:
the caller opens a new connection (commands may or may not have run, Redis cannot say).
Leaving :meth:`serve` (the owner cancels it) *closes* the connection the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final

import attrs
import hiredis
import outcome
import trio

from ._errors import RedisConnectionError, RedisReplyError

__all__ = ["Call", "Link", "LinkStatistics", "new_reader"]

#: What ``hiredis.Reader.gets`` returns while no complete reply is buffered. A sentinel,
#: since ``False`` could be a reply.
NOT_ENOUGH: Final = object()

# Call states.
_QUEUED: Final = 0  # in _unsent: withdrawable
_SENT: Final = 1  # in _inflight (being written or written): its reply will come
_DONE: Final = 2  # answered, failed, withdrawn or abandoned: no task to wake


def new_reader() -> hiredis.Reader:
    """A RESP parser that builds our exceptions: error replies become
    :class:`RedisReplyError` values, bytes that are not RESP raise
    :class:`RedisConnectionError`."""
    return hiredis.Reader(
        protocolError=RedisConnectionError,
        replyError=RedisReplyError,
        notEnoughData=NOT_ENOUGH,
    )


class Call:
    """One submission: the bytes of one or more commands, and the task waiting for replies."""

    __slots__ = ("data", "error", "expected", "on_withdrawn", "replies", "state", "task")

    def __init__(self, data: bytes, expected: int) -> None:
        self.data = data
        #: Called if the call is withdrawn (cancelled before it was written): to undo what
        #: its submitter recorded in advance (``PubSub``'s channels).
        self.on_withdrawn: Callable[[], None] | None = None
        #: How many replies complete this call (the default handler); 1 for ``execute``.
        self.expected = expected
        self.replies: list[Any] = []
        #: The first error reply a custom handler attributed to this call (``PubSub``).
        self.error: RedisReplyError | None = None
        self.state = _QUEUED
        self.task: trio.lowlevel.Task | None = None


@attrs.frozen(kw_only=True)
class LinkStatistics:
    """Counters of one connection, kept by :class:`Link`."""

    calls: int
    error_replies: int
    pending: int
    withdrawn: int
    abandoned: int
    writes: int
    connected: bool


class Link:
    """The stream, the two queues and the two tasks of one connection (see the module's
    docstring). Built by ``open_redis``/``open_pubsub`` once connected and logged in."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        reader: hiredis.Reader,
        where: str,
        on_reply: Callable[[Any], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.where = where
        self._stream = stream
        self._reader = reader
        self._on_reply = on_reply or self.answer_head
        self._on_end = on_end
        self._unsent: list[Call] = []
        self._inflight: deque[Call] = deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._writer_parked = False
        self._scope: trio.CancelScope | None = None
        #: Why the connection ended (a message and the error behind it), once it has.
        self._end: tuple[str, BaseException | None] | None = None
        self._ended = trio.Event()
        self._calls = 0
        self._error_replies = 0
        self._withdrawn = 0
        self._abandoned = 0
        self._writes = 0

    # -- the callers' side ---------------------------------------------------------------

    def submit(self, data: bytes, expected: int = 1) -> Call:
        """Queue packed command bytes for the writer; *expected* replies complete the call.

        Raises:
            RedisConnectionError: the connection has ended.
        """
        if self._end is not None:
            raise self.ended_error()
        call = Call(data, expected)
        self._unsent.append(call)
        self._calls += 1
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark()
        return call

    async def wait(self, call: Call) -> Any:
        """Wait for *call*'s reply (its list of replies if it expects several).

        Cancellation withdraws the call if it has not been written yet, and abandons it
        otherwise (its replies are read and dropped).

        Raises:
            RedisReplyError: the reply of a single-reply call is an error.
            RedisConnectionError: the connection ended first.
        """
        call.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if call.state == _QUEUED:
                self._withdrawn += 1
                if call.on_withdrawn is not None:
                    call.on_withdrawn()
            else:
                self._abandoned += 1
            call.state = _DONE
            call.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    # -- the reader's side ---------------------------------------------------------------

    def answer_head(self, reply: Any) -> None:
        """The default reply handler: *reply* belongs to the oldest call written."""
        inflight = self._inflight
        if not inflight:
            raise RedisConnectionError(f"Redis sent a reply to no command: {reply!r:.100}")
        call = inflight[0]
        if call.expected == 1:
            inflight.popleft()
            if isinstance(reply, RedisReplyError):
                self._error_replies += 1
                self.finish(call, outcome.Error(reply))
            else:
                self.finish(call, outcome.Value(reply))
            return
        replies = call.replies
        replies.append(reply)
        if isinstance(reply, RedisReplyError):
            self._error_replies += 1
        if len(replies) == call.expected:
            inflight.popleft()
            call.replies = []
            self.finish(call, outcome.Value(replies))

    def head(self) -> Call:
        """The oldest call written and not answered, for custom reply handlers.

        Raises:
            RedisConnectionError: there is none (Redis sent a reply nothing asked for).
        """
        if not self._inflight:
            raise RedisConnectionError("Redis sent a reply to no command")
        return self._inflight[0]

    def pop_head(self, result: outcome.Outcome[Any]) -> None:
        """Complete the oldest call written with *result* (for custom reply handlers)."""
        self.finish(self._inflight.popleft(), result)

    def count_error_reply(self) -> None:
        self._error_replies += 1

    def finish(self, call: Call, result: outcome.Outcome[Any]) -> None:
        task = call.task
        if task is None:
            return  # abandoned: its caller was cancelled after it was written
        call.task = None
        call.state = _DONE
        trio.lowlevel.reschedule(task, result)

    # -- the connection's life -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is usable (it has neither been lost nor closed)."""
        return self._end is None

    @property
    def lost(self) -> bool:
        """Whether the connection ended by itself (rather than closed by its owner)."""
        return self._end is not None and self._end[1] is not None

    async def wait_ended(self) -> None:
        """Return once the connection has been lost or closed."""
        await self._ended.wait()

    def ended_error(self) -> RedisConnectionError:
        """A fresh exception saying why the connection ended, its cause attached."""
        assert self._end is not None
        message, cause = self._end
        error = RedisConnectionError(message)
        error.__cause__ = cause
        return error

    def statistics(self) -> LinkStatistics:
        pending = len(self._inflight) + sum(1 for c in self._unsent if c.state == _QUEUED)
        return LinkStatistics(
            calls=self._calls,
            error_replies=self._error_replies,
            pending=pending,
            withdrawn=self._withdrawn,
            abandoned=self._abandoned,
            writes=self._writes,
            connected=self.connected,
        )

    async def serve(
        self,
        started: object = None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the writer and the reader until the connection is lost (then return) or this
        is cancelled (the connection is closed); close the stream either way. *started* is
        what ``task_status.started()`` is given once both tasks run.

        Resource handling: the stream belongs to this method from the moment it is called.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._guarded, self._write_loop)
                nursery.start_soon(self._guarded, self._read_loop)
                task_status.started(started)
        finally:
            self._lose(f"the connection to Redis at {self.where} is closed", None)
            await trio.aclose_forcefully(self._stream)

    async def _guarded(self, loop: Callable[[], Any]) -> None:
        try:
            await loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, RedisConnectionError) as exc:
            self._lose(f"the connection to Redis at {self.where} was lost: {exc}", exc)

    async def _write_loop(self) -> None:
        stream = self._stream
        while True:
            if not self._unsent:
                self._writer_parked = True
                await self._writer_lot.park()
                continue
            batch, self._unsent = self._unsent, []
            chunks = []
            for call in batch:
                if call.state == _QUEUED:
                    call.state = _SENT
                    self._inflight.append(call)
                    chunks.append(call.data)
                    call.data = b""
            if chunks:
                self._writes += 1
                await stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def _read_loop(self) -> None:
        stream, reader, on_reply = self._stream, self._reader, self._on_reply
        while True:
            data = await stream.receive_some()
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            reader.feed(data)  # type: ignore[arg-type]  # hiredis takes any buffer
            while (reply := reader.gets()) is not NOT_ENOUGH:
                on_reply(reply)

    def _lose(self, message: str, cause: BaseException | None) -> None:
        """End the connection (once): fail every call waiting or queued, stop both tasks."""
        if self._end is not None:
            return
        self._end = (message, cause)
        waiting = [c for c in self._unsent if c.state == _QUEUED]
        waiting.extend(self._inflight)
        self._unsent.clear()
        self._inflight.clear()
        for call in waiting:
            self.finish(call, outcome.Error(self.ended_error()))
        if self._scope is not None:
            self._scope.cancel()
        self._ended.set()
        if self._on_end is not None:
            self._on_end()
