"""Testing one middleware alone with MiddlewareHarness, and the whole app with a broker."""

import json

import pytest

from strands_trio.testing import ConnectionRejected, MiddlewareHarness, open_fake_broker

from .custom_middleware import Maintenance, app, maintenance


async def test_maintenance_alone() -> None:
    switch = Maintenance()
    harness = MiddlewareHarness([switch])
    assert (await harness.connection_request()).accepted
    switch.on = True
    outcome = await harness.connection_request()
    assert not outcome.accepted
    assert not outcome.reached  # the handler never saw it
    assert (await harness.message("still served")).reached
    assert switch.refused == 1


async def test_the_app() -> None:
    async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
        fr = await broker.connect("/ws/", headers={"Accept-Language": "fr-CH"})
        await fr.send('{"type": "greet"}')
        assert await fr.receive() == "bonjour"

        de = await broker.connect("/ws/", headers={"Accept-Language": "de"})
        await de.send('{"type": "greet"}')
        assert json.loads(await de.receive())["code"] == "unsupported"

        await fr.send('{"type": "poll"}')
        assert json.loads(await fr.receive())["code"] == "forbidden"

        maintenance.on = True
        try:
            with pytest.raises(ConnectionRejected):
                await broker.connect("/ws/")
        finally:
            maintenance.on = False
        assert maintenance.refused == 1
