"""Connection requests waiting for a backend's answer: the hub's admissions.

Theory of operation. :meth:`Admissions.ask` sends a ``connection_request`` to the backend the
hub picked and waits for the ``response`` with the same ``request_id``, at most
``request_timeout`` seconds (``None``: forever, as the reference broker). The answer comes from
the backend link's reader through :meth:`Admissions.answer`; a backend that leaves refuses what
it had not answered (:meth:`Admissions.backend_gone`), at once. The verdict is an
:class:`~._ports.Admission`: accepted with the client's id, room and metadata, or refused with
the HTTP status and the close code to refuse the handshake with (``_refusals.py``), and why: the
backend's own ``reason`` and ``code`` when it gave them. Only strands-trio's broker sends the
``query`` field (``send_query``); ``FakeBroker``'s reference mode does not. As in the reference
broker, only a ``response`` whose ``accepted`` is JSON ``false`` rejects (the codec reads it
so); an acceptance without ``client_id`` and ``room_id``, which the reference leaves open and
silent, is refused here and counted.
"""

from __future__ import annotations

import logging
import math
import uuid

import trio

from ..protocol import ConnectionRequest, Response, encode
from ._handshake import Handshake
from ._ports import Admission, BackendPort
from ._refusals import BAD_ANSWER, NO_BACKEND, TIMED_OUT, close_code_for

__all__ = ["Admissions"]

logger = logging.getLogger("strands_trio.broker")

_COUNTS = ("requests", "accepted", "rejected", "timed_out", "bad_responses", "unanswerable")


class _Pending:
    __slots__ = ("backend", "done", "response")

    def __init__(self, backend: BackendPort) -> None:
        self.backend = backend
        self.done = trio.Event()
        self.response: Response | None = None


class Admissions:
    """The connection requests in flight (see the module's theory of operation).

    Args:
        request_timeout: Seconds a backend has to answer, or ``None`` for no limit.
        send_query: Send the handshake's query string (the ``query`` extension field).
    """

    def __init__(self, request_timeout: float | None, *, send_query: bool = True) -> None:
        self._timeout = math.inf if request_timeout is None else request_timeout
        self._send_query = send_query
        self._pending: dict[str, _Pending] = {}
        #: What was counted: ``requests`` sent, ``accepted``, ``rejected``, ``timed_out``,
        #: ``bad_responses`` (acceptances without ids), ``unanswerable`` (answers to no
        #: request waiting).
        self.counts = dict.fromkeys(_COUNTS, 0)

    @property
    def waiting(self) -> int:
        """Requests waiting for their answer now."""
        return len(self._pending)

    async def ask(self, backend: BackendPort, handshake: Handshake) -> Admission:
        """Ask *backend* about *handshake* and wait for its verdict. Never raises for a
        backend's failings: a timeout, a backend leaving before it answered or an unusable
        answer are refusals (503/4504, 503/4503, 403/4500)."""
        self.counts["requests"] += 1
        request_id = str(uuid.uuid4())
        pending = self._pending[request_id] = _Pending(backend)
        try:
            backend.send(
                encode(
                    ConnectionRequest(
                        request_id=request_id,
                        headers=handshake.headers,
                        url=handshake.url,
                        remote_addr=handshake.remote_addr,
                        query=handshake.query if self._send_query else None,
                    )
                )
            )
            with trio.move_on_after(self._timeout) as timer:
                await pending.done.wait()
        finally:
            del self._pending[request_id]
        return self._verdict(pending, timer.cancelled_caught, handshake.remote_addr)

    def _verdict(self, pending: _Pending, timed_out: bool, remote_addr: str) -> Admission:
        counts, backend, response = self.counts, pending.backend, pending.response
        if response is None and timed_out:  # an answer in the last tick counts
            counts["timed_out"] += 1
            logger.warning(
                "backend %s did not answer %s within %g s: refused with 503",
                backend.name,
                remote_addr,
                self._timeout,
            )
            return Admission(
                accepted=False,
                status=503,
                close_code=TIMED_OUT,
                reason="the backend did not answer in time",
            )
        if response is None:
            return Admission(
                accepted=False,
                status=503,
                close_code=NO_BACKEND,
                reason="the backend went away before answering",
            )
        if not response.accepted:
            counts["rejected"] += 1
            return Admission(
                accepted=False,
                status=403,
                close_code=close_code_for(response.code),
                reason=response.reason or "refused by the backend",
            )
        if not (response.client_id and response.room_id):
            counts["bad_responses"] += 1
            logger.warning(
                "backend %s accepted %s without client_id and room_id", backend.name, remote_addr
            )
            return Admission(
                accepted=False,
                status=403,
                close_code=BAD_ANSWER,
                reason="the backend accepted without client_id and room_id",
            )
        counts["accepted"] += 1
        return Admission(
            accepted=True,
            client_id=response.client_id,
            room_id=response.room_id,
            metadata=response.metadata or {},
            backend=backend if backend.alive else None,
        )

    def answer(self, response: Response) -> bool:
        """Hand *response* to the request waiting for it; ``False`` (counted) if none is."""
        pending = self._pending.get(response.request_id)
        if pending is None or pending.done.is_set():
            self.counts["unanswerable"] += 1
            return False
        pending.response = response
        pending.done.set()
        return True

    def fail(self, request_id: str) -> None:
        """Refuse the request *request_id* (503), if it is waiting: its backend is gone."""
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.done.set()

    def backend_gone(self, backend: BackendPort) -> None:
        """*backend* left: refuse every request it had not answered."""
        for pending in self._pending.values():
            if pending.backend is backend and not pending.done.is_set():
                pending.done.set()
