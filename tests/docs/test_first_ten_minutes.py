"""The first ten minutes: every Python block of README.md and docs/quickstart.md is a whole
program (an entire file of docs/examples, imports included) and runs as shown.

How a block is run: written to a file and started as ``__main__`` in a subprocess, exactly as
a reader who saved it would, except that its ``localhost:8081`` is redirected to a real broker
of this test on a free port (with its defaults: the query reaches the backend in the ``query``
field). Once the backend is connected, a WebSocket client with a browser's token in the query
string chats through it, one with a bad token is closed with 4401, and SIGINT (Ctrl-C) stops the program: a ``trio.run(...)`` program with one
``KeyboardInterrupt`` traceback, an ``app.run()`` one gracefully with status 0. A block that is
not a whole example file, or does not run, fails; none is skipped.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker

from .._net import open_client, read_all, reap

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "quickstart.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

#: Runs the program named by argv[2] as __main__, with localhost:8081 redirected to argv[1].
REDIRECT = """\
import runpy, sys, trio
port, program = int(sys.argv[1]), sys.argv[2]
real = trio.open_tcp_stream
async def redirected(host, p, **kwargs):
    if (host, p) == ("localhost", 8081):
        host, p = "127.0.0.1", port
    return await real(host, p, **kwargs)
trio.open_tcp_stream = redirected
sys.argv = [program]
runpy.run_path(program, run_name="__main__")
"""


def blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.name}#{number}", block)
        for page in PAGES
        for number, block in enumerate(BLOCK.findall(page.read_text()), 1)
    ]


def test_pages_have_blocks() -> None:
    """Both pages have Python blocks (so the parametrized test below cannot pass empty)."""
    names = {name.partition("#")[0] for name, _ in blocks()}
    assert names == {"README.md", "quickstart.md"}


@pytest.mark.parametrize(("name", "block"), blocks(), ids=[name for name, _ in blocks()])
def test_block_is_a_whole_example_file(name: str, block: str) -> None:
    """Each block is an entire file of docs/examples (imports, __main__ and all)."""
    files = [path.read_text().strip() for path in (ROOT / "docs" / "examples").glob("*.py")]
    assert block.strip() in files, f"{name} is not a whole file of docs/examples:\n{block}"


@pytest.mark.parametrize(("name", "block"), blocks(), ids=[name for name, _ in blocks()])
async def test_block_runs_as_shown(
    name: str, block: str, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The block, saved and run, serves a browser's token through a real broker, refuses a
    bad one, and Ctrl-C stops it cleanly."""
    program = tmp_path / "backend.py"
    program.write_text(block)
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None)
    broker: BrokerAddress = await nursery.start(serve_broker, config)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", REDIRECT, str(broker.tcp_port), str(program)],
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            await broker.hub.wait_backends(1)
            async with trio.open_nursery() as clients:
                ann = await open_client(clients, broker.ws_port, "/ws/lobby?token=key-of-ann")
                await ann.send_message("hello")
                assert await ann.get_message() == "ann: hello"
                forged = await open_client(clients, broker.ws_port, "/ws/lobby?token=forged")
                with pytest.raises(ConnectionClosed) as refused:
                    await forged.get_message()
                assert refused.value.reason.code == 4401  # Auth: a bad credential
                clients.cancel_scope.cancel()
            process.send_signal(signal.SIGINT)
            assert process.stderr is not None
            errors = (await read_all(process.stderr)).decode()
            status = await process.wait()
    finally:
        await reap(process)
    assert "ExceptionGroup" not in errors, errors
    if "trio.run(" in block:
        assert status != 0
        assert errors.count("Traceback (most recent call last)") == 1, errors
        assert errors.rstrip().endswith("KeyboardInterrupt"), errors
    else:
        assert status == 0, errors
        assert "Traceback" not in errors, errors
