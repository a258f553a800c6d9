"""Ctrl-C on a backend run with ``trio.run(client.run)`` ends with one clean
``KeyboardInterrupt`` traceback, not a chain of exception groups (one per nursery inside)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker

from .._net import read_all, reap

ROOT = Path(__file__).resolve().parents[2]

PROGRAMS = {
    "client": (
        "import sys, trio\n"
        "from strands_trio import StrandsClient\n"
        "trio.run(StrandsClient('127.0.0.1', int(sys.argv[1])).run)\n"
    ),
    "app.serve": (
        "import sys, trio\n"
        "from strands_trio import StrandsApp\n"
        "trio.run(StrandsApp().serve, '127.0.0.1', int(sys.argv[1]))\n"
    ),
}


async def interrupted(program: str, port: int, ready: trio.Event | None = None) -> str:
    """Run *program* with *port*, send it SIGINT once *ready* is set (or, when it is None,
    once it has written a warning that it cannot connect), and return its stderr."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", program, str(port)],
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        before = b""
        if ready is not None:
            await ready.wait()
        else:
            while b"cannot connect to the broker" not in before:
                chunk = await process.stderr.receive_some()
                assert chunk, before
                before += chunk
        process.send_signal(signal.SIGINT)
        errors = (before + await read_all(process.stderr)).decode()
        assert await process.wait() != 0
        return errors
    finally:
        await reap(process)


def assert_one_keyboard_interrupt(errors: str) -> None:
    assert errors.count("Traceback (most recent call last)") == 1, errors
    assert errors.rstrip().endswith("KeyboardInterrupt"), errors
    assert "ExceptionGroup" not in errors, errors
    assert "+-+" not in errors, errors
    assert "During handling" not in errors, errors


@pytest.mark.parametrize("kind", PROGRAMS)
async def test_ctrl_c_while_connected(nursery: trio.Nursery, kind: str) -> None:
    """SIGINT to a connected backend: one KeyboardInterrupt traceback, no groups."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None)
    broker: BrokerAddress = await nursery.start(serve_broker, config)
    connected = trio.Event()

    async def wait_for_backend() -> None:
        await broker.hub.wait_backends(1)
        connected.set()

    nursery.start_soon(wait_for_backend)
    with trio.fail_after(20):
        assert_one_keyboard_interrupt(await interrupted(PROGRAMS[kind], broker.tcp_port, connected))


async def test_ctrl_c_while_waiting_for_the_broker() -> None:
    """SIGINT to a backend retrying a broker that is not there: the same single traceback
    after the warnings of its attempts (wait_for_broker is the default)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # a port nobody listens on
    with trio.fail_after(20):
        errors = await interrupted(PROGRAMS["client"], port)
    assert_one_keyboard_interrupt(errors[errors.index("Traceback") :])
