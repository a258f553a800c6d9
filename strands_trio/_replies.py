"""Questions a backend asks its broker (presence), matched by ``request_id`` to the frames
that answer them; when a connection ends, the questions asked on it fail."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import trio

from ._errors import NotConnectedError, PresenceIncomplete
from .protocol import BrokerMember, PresenceReply, PresenceRequest, encode

__all__ = ["Replies", "Waiting", "ask_presence"]


class Waiting:
    """One question waiting for its reply."""

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: PresenceReply | NotConnectedError | None = None

    async def wait(self) -> PresenceReply | NotConnectedError:
        """The reply, or the error saying that it will not come."""
        await self._done.wait()
        assert self._result is not None
        return self._result

    def reset(self) -> None:
        """Wait for a new reply (the question is asked again)."""
        self._done = trio.Event()
        self._result = None

    def _set(self, result: PresenceReply | NotConnectedError) -> None:
        if not self._done.is_set():
            self._result = result
            self._done.set()


class Replies:
    """The questions waiting for the broker's reply."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiting] = {}

    @contextlib.contextmanager
    def expect(self, request_id: str) -> Iterator[Waiting]:
        """Wait for the reply to *request_id* within the block."""
        waiting = self._waiting[request_id] = Waiting()
        try:
            yield waiting
        finally:
            del self._waiting[request_id]

    def resolve(self, frame: PresenceReply) -> None:
        """A reply came; ignored if nobody waits for it (the caller gave up, or not ours)."""
        waiting = self._waiting.get(frame.request_id)
        if waiting is not None:
            waiting._set(frame)

    def fail_all(self, error: NotConnectedError) -> None:
        """The connection ended: replies to what was asked on it will never come."""
        for waiting in self._waiting.values():
            waiting._set(error)


async def ask_presence(
    replies: Replies,
    send: Callable[[bytes, bool], Awaitable[None]],
    request_id: str,
    room_id: str,
    wait: bool,
) -> list[BrokerMember]:
    """Ask the broker who is in *room_id* with *send*, and wait for the answer in *replies*
    (with *wait*, ask again on the next connection if this one is lost first).

    Raises:
        NotConnectedError: there is no connection (without *wait*), or it was lost first.
        PresenceIncomplete: the broker could not ask its whole cluster.
    """
    frame = encode(PresenceRequest(request_id=request_id, room_id=room_id))
    with replies.expect(request_id) as waiting:
        while True:
            await send(frame, wait)
            reply = await waiting.wait()
            if not (wait and isinstance(reply, NotConnectedError)):
                break
            waiting.reset()  # with wait=True, a lost connection is no answer: ask again
    if isinstance(reply, NotConnectedError):
        raise reply
    members = list(reply.members)
    if not reply.complete:
        raise PresenceIncomplete(
            f"the broker could not ask its whole cluster who is in {room_id!r} "
            "(Redis unreachable): only its own members are known",
            members,
        )
    return members
