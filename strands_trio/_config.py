"""The client's settings: a frozen, validated record, separate from the running client."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import attrs

from .protocol import DEFAULT_MAX_LINE_LENGTH

__all__ = ["ClientConfig"]

#: The environment variable holding a broker's backend secret, read by ``strands-trio broker``
#: and ``strands-trio run`` (kept off the command line, where other users could see it).
SECRET_VARIABLE = "STRANDS_BROKER_SECRET"


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


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
            ``[1 - reconnect_jitter, 1]``, so that many backends restarted together do not
            reconnect in step. ``0`` makes the delays exact.
        heartbeat_interval: The broker's heartbeat period (15 s for the reference broker), or
            ``None`` to never treat a silent broker as dead.
        dead_after_heartbeats: A broker that sends nothing, not even a heartbeat, for this many
            heartbeat intervals is treated as dead and the connection is made again.
        max_concurrency: Handlers running at once. Events of one WebSocket client always run
            one at a time and in order; this bounds how many clients' handlers overlap.
        max_pending_events: Events received but not yet handled. When reached, the client
            stops reading from the broker until handlers catch up (TCP then pushes back on the
            broker), so slow handlers cannot grow memory.
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
    reconnect_delay: float = attrs.field(default=1.0, validator=_positive)
    max_reconnect_delay: float = attrs.field(default=30.0, validator=_positive)
    reconnect_backoff: float = attrs.field(default=2.0)
    reconnect_jitter: float = attrs.field(default=0.1, validator=_fraction)
    heartbeat_interval: float | None = attrs.field(default=15.0, validator=_positive)
    dead_after_heartbeats: float = attrs.field(default=3.0, validator=_positive)
    max_concurrency: int = attrs.field(default=64, validator=_at_least_one)
    max_pending_events: int = attrs.field(default=1024, validator=_at_least_one)
    max_outgoing_bytes: int = attrs.field(default=1 << 20, validator=_at_least_one)
    max_line_length: int = attrs.field(default=DEFAULT_MAX_LINE_LENGTH, validator=_at_least_one)
    request_timeout: float | None = attrs.field(default=10.0, validator=_positive)
    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    max_threads: int = attrs.field(default=16, validator=_at_least_one)
    broker_secret: str | None = attrs.field(default=None, repr=False)

    @reconnect_backoff.validator
    def _check_backoff(self, _: attrs.Attribute[float], value: float) -> None:
        if not (value >= 1 and math.isfinite(value)):
            raise ValueError(f"reconnect_backoff must be a number >= 1, got {value!r}")

    @property
    def silence_timeout(self) -> float:
        """Seconds without any byte from the broker after which it is treated as dead."""
        if self.heartbeat_interval is None:
            return math.inf
        return self.heartbeat_interval * self.dead_after_heartbeats

    def reconnect_delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays before successive reconnection attempts: exponential, capped, jittered."""
        uniform = (rng or random).uniform
        delay = self.reconnect_delay
        while True:
            capped = min(delay, self.max_reconnect_delay)
            yield (
                capped * uniform(1 - self.reconnect_jitter, 1) if self.reconnect_jitter else capped
            )
            delay = capped * self.reconnect_backoff
