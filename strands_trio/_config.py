"""The client's settings: a frozen, validated record, separate from the running client."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import attrs
from attrs import validators as v

from ._backoff import Backoff
from ._validators import COUNT, JITTER, NON_NEGATIVE, OPTIONAL_POSITIVE, POSITIVE
from .protocol import DEFAULT_MAX_LINE_LENGTH

__all__ = ["ClientConfig"]

#: The environment variable holding a broker's backend secret, read by ``strands-trio broker``
#: and ``strands-trio run`` (kept off the command line, where other users could see it).
SECRET_VARIABLE = "STRANDS_BROKER_SECRET"


@attrs.frozen(kw_only=True)
class ClientConfig:
    """How a :class:`~strands_trio.StrandsClient` connects, reconnects and runs handlers.

    Every field has a default suited to production; the reconnect fields keep the asyncio
    peer's names and defaults. Invalid values raise :class:`ValueError` at construction.

    Attributes:
        reconnect: Reconnect when the connection fails or is lost. When ``False``,
            ``run()`` raises :class:`~strands_trio.BrokerConnectionError` instead.
        wait_for_broker: Retry the first connection, with the same backoff, until a broker
            answers. When ``False``, a first connection that fails raises
            :class:`~strands_trio.BrokerConnectionError` (fail fast at start-up, as
            ``strands-trio run`` does); once connected, ``reconnect`` alone applies.
        reconnect_delay: The first delay before reconnecting, in seconds.
        max_reconnect_delay: The longest delay between attempts.
        reconnect_backoff: The factor by which the delay grows after each failed attempt.
        reconnect_jitter: Each delay is multiplied by a random factor in
            ``[1 - reconnect_jitter, 1]`` (``0 <= reconnect_jitter < 1``), so that many
            backends restarted together do not reconnect in step. ``0`` makes the delays exact.
        heartbeat_interval: The broker's heartbeat period (15 s for the reference broker), or
            ``None`` to never treat a silent broker as dead.
        dead_after_heartbeats: A broker that sends nothing, not even a heartbeat, for this many
            heartbeat intervals is treated as dead and the connection is made again.
        max_concurrency: Handlers running at once. Events of one WebSocket client always run
            one at a time and in order; this bounds how many clients' handlers overlap.
        max_pending_events: Events received but not yet handled. When reached, the client
            stops reading from the broker until handlers catch up (TCP then pushes back on the
            broker).
        max_pending_bytes: The bytes those events hold (their message texts, plus a few
            hundred bytes of bookkeeping each). When reached, reading stops as for
            ``max_pending_events``; together they bound the memory slow handlers can make the
            client hold, whatever the size of the messages: about ``max_pending_bytes`` plus
            one ``max_line_length`` frame and the kernel's socket buffer.
        max_outgoing_bytes: Bytes waiting to be written to the broker. When reached, sends
            wait for the writer (backpressure on handlers that send faster than the link).
        max_line_length: The longest frame accepted from the broker, in bytes.
        request_timeout: Seconds ``on_connection_request`` may take before the request is
            rejected (the reference broker would otherwise leave the WebSocket handshake
            hanging forever), or ``None`` for no limit.
        shutdown_timeout: On cancellation, seconds given to queued and running handlers to
            finish and to the writer to flush, before they are cancelled.
        max_threads: Worker threads for synchronous handlers (``StrandsApp``).
        broker_secret: The shared secret of a strands-trio broker started with one: sent
            first on every connection, in an ``authenticate`` frame (an extension; the
            reference broker ignores it). Never shown in the repr.
    """

    reconnect: bool = True
    wait_for_broker: bool = True
    reconnect_delay: float = attrs.field(default=1.0, validator=POSITIVE)
    max_reconnect_delay: float = attrs.field(default=30.0, validator=POSITIVE)
    reconnect_backoff: float = attrs.field(default=2.0, validator=v.ge(1.0))
    reconnect_jitter: float = attrs.field(default=0.1, validator=JITTER)
    heartbeat_interval: float | None = attrs.field(default=15.0, validator=OPTIONAL_POSITIVE)
    dead_after_heartbeats: float = attrs.field(default=3.0, validator=POSITIVE)
    max_concurrency: int = attrs.field(default=64, validator=COUNT)
    max_pending_events: int = attrs.field(default=1024, validator=COUNT)
    max_pending_bytes: int = attrs.field(default=16 << 20, validator=COUNT)
    max_outgoing_bytes: int = attrs.field(default=1 << 20, validator=COUNT)
    max_line_length: int = attrs.field(default=DEFAULT_MAX_LINE_LENGTH, validator=COUNT)
    request_timeout: float | None = attrs.field(default=10.0, validator=OPTIONAL_POSITIVE)
    shutdown_timeout: float = attrs.field(default=5.0, validator=NON_NEGATIVE)
    max_threads: int = attrs.field(default=16, validator=COUNT)
    broker_secret: str | None = attrs.field(default=None, repr=False)

    @property
    def backoff(self) -> Backoff:
        """The reconnect delays as a :class:`Backoff` (the same policy the Redis links use)."""
        return Backoff(
            first=self.reconnect_delay,
            maximum=self.max_reconnect_delay,
            factor=self.reconnect_backoff,
            jitter=self.reconnect_jitter,
        )

    @property
    def silence_timeout(self) -> float:
        """Seconds without any byte from the broker after which it is treated as dead."""
        if self.heartbeat_interval is None:
            return math.inf
        return self.heartbeat_interval * self.dead_after_heartbeats

    def reconnect_delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays before successive reconnection attempts: exponential, capped, jittered."""
        return self.backoff.delays(rng)
