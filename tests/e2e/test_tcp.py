"""End to end over real loopback TCP: our client against a TCP broker, the reference
transcript replayed byte for byte, and the blocking app.run() stopped by a signal."""

from __future__ import annotations

import signal
import sys
import textwrap
from functools import partial
from pathlib import Path

import orjson
import trio
import trio.testing

from strands_trio import ConnectionRequestContext, StrandsClient
from strands_trio.testing import FakeBroker

from ..conftest import Recording

TRANSCRIPT = Path(__file__).parent.parent / "data" / "reference-broker-transcript.txt"


async def test_conversation_over_tcp(broker: FakeBroker, nursery: trio.Nursery) -> None:
    """A client connected over TCP to 127.0.0.1 handles a request, a message and a
    disconnection, and its reply arrives."""
    port = await nursery.start(broker.serve_tcp)
    with trio.fail_after(10):
        async with Recording(
            broker, host="127.0.0.1", port=port, connect=None
        ).connected() as client:
            ws = await broker.connect("/ws/tcp", headers={"X-User": "tess"})
            await ws.send("over tcp")
            assert await ws.receive() == "tess: over tcp"
            await ws.close()
            await client.wait_for_call(("disconnected", "tess"))
            assert client.statistics().connections == 1


class TranscriptBackend(StrandsClient):
    """Answers the transcript's two requests as its probe backend did."""

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        if request.header("authorization") != "Bearer good":
            return False
        request.context.client_id = "alice-1"
        request.context.room_id = "chat"
        request.context.metadata = {"username": "alice", "role": "admin"}
        return True

    async def on_message(self, message: str, context: object) -> None:
        assert context.metadata == {"username": "alice", "role": "admin"}  # type: ignore[attr-defined]
        await self.send_room_message("chat", f"room:{message}")
        await self.send_private_message("alice-1", f"private:{message}")
        await self.broadcast_message(f"all:{message}")


async def test_reference_transcript_replayed_over_tcp(nursery: trio.Nursery) -> None:
    """Fed the reference broker's captured lines over TCP, the client answers with the
    actions the capture shows (same request ids, params and order; message request ids are
    our own)."""
    lines = TRANSCRIPT.read_text().splitlines()
    events = [line[2:].encode() + b"\n" for line in lines if line.startswith("< ")]
    expected = [orjson.loads(line[2:]) for line in lines if line.startswith("> ")]
    received: list[dict[str, object]] = []
    done = trio.Event()

    async def broker(stream: trio.SocketStream) -> None:
        buffer = b""
        for event in events:
            await stream.send_all(event)
            await trio.sleep(0.01)  # the capture's order: each event after the previous answers
        while len(received) < len(expected):
            buffer += await stream.receive_some()
            *complete, buffer = buffer.split(b"\n")
            received.extend(orjson.loads(line) for line in complete)
        done.set()

    listeners = await nursery.start(partial(trio.serve_tcp, broker, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        async with TranscriptBackend("127.0.0.1", port).connected():
            await done.wait()
    for ours, theirs in zip(received, expected, strict=True):
        assert ours["action"] == theirs["action"]
        assert ours["params"] == theirs["params"]
        if ours["action"] == "response":
            assert ours["request_id"] == theirs["request_id"]


async def test_app_run_stops_cleanly_on_sigint(nursery: trio.Nursery, tmp_path: Path) -> None:
    """app.run() in its own process serves until SIGINT, then closes the connection and
    exits with status 0, without a traceback."""
    connected, closed = trio.Event(), trio.Event()

    async def broker(stream: trio.SocketStream) -> None:
        connected.set()
        while await stream.receive_some():
            pass
        closed.set()

    listeners = await nursery.start(partial(trio.serve_tcp, broker, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    script = tmp_path / "backend.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from strands_trio import StrandsApp
            app = StrandsApp()
            app.run("127.0.0.1", {port})
            print("stopped cleanly")
            """
        )
    )
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script)], stdout=out, stderr=err
        )
    try:
        with trio.fail_after(20):
            await connected.wait()
            process.send_signal(signal.SIGINT)
            await closed.wait()
            await process.wait()
    finally:
        process.kill()
    assert process.returncode == 0, stderr.read_text()
    assert stdout.read_text().strip() == "stopped cleanly"
    assert "Traceback" not in stderr.read_text()
