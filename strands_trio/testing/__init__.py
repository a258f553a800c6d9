"""Helpers for testing a strands-trio backend with pytest-trio, without a real broker.

:class:`FakeBroker` is an in-memory broker that behaves like the reference one (quirks
included); :class:`FakeWebSocket` is a simulated browser client of it.
:class:`MiddlewareHarness` runs events through middleware and guards around recording
handlers, without a broker. See ``docs/testing.md``.
"""

from ..protocol import canonical_header
from ._fake_broker import (
    ConnectionRejected,
    FakeBroker,
    FakeWebSocket,
    open_fake_broker,
)
from ._harness import MiddlewareHarness, Outcome

__all__ = [
    "ConnectionRejected",
    "FakeBroker",
    "FakeWebSocket",
    "MiddlewareHarness",
    "Outcome",
    "canonical_header",
    "open_fake_broker",
]
