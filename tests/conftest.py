"""Shared fixtures: a fake broker per test, and a backend that records what it is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from strands_trio import ClientConfig, ConnectionRequestContext, Context, StrandsClient
from strands_trio.testing import FakeBroker, open_fake_broker

#: Exact reconnection delays (1, 2, 4, ... s) so tests can assert virtual times.
EXACT = ClientConfig(reconnect_jitter=0)


@pytest.fixture
async def broker() -> AsyncIterator[FakeBroker]:
    """A running in-memory broker, without heartbeats (tests send them when they want)."""
    async with open_fake_broker(heartbeat_interval=None) as broker:
        yield broker


class Recording(StrandsClient):
    """A backend that records every callback, answers requests from a header, and echoes
    messages to their room."""

    def __init__(self, broker: FakeBroker, config: ClientConfig = EXACT, **kwargs: Any) -> None:
        kwargs.setdefault("connect", broker.open_backend_stream)
        super().__init__(config=config, **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.message_arrived = trio.Event()
        self._changed = trio.Event()

    def record(self, *call: Any) -> None:
        self.calls.append(call)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_call(self, call: tuple[Any, ...]) -> None:
        """Return once *call* has been recorded."""
        while call not in self.calls:
            await self._changed.wait()

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool | None:
        self.record("request", request.url, request.remote_addr)
        user = request.header("x-user")
        if user is None:
            return False
        request.context.client_id = user
        request.context.metadata = {"user": user}
        return None  # answers request.accepted, True by default

    async def on_new_connection(self, context: Context) -> None:
        self.record("connected", context.client_id, context.metadata)

    async def on_message(self, message: str, context: Context) -> None:
        self.record("message", context.client_id, message, context.metadata)
        self.message_arrived.set()
        await self.send_room_message(context.room_id, f"{context.client_id}: {message}")

    async def on_disconnect(self, context: Context) -> None:
        self.record("disconnected", context.client_id)

    async def on_error(self, error: str, context: Context | ConnectionRequestContext) -> None:
        self.record("error", error, context)
