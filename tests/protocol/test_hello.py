"""The ``hello`` extension: exact bytes both ways, a lenient decoder, and our broker sending it
first on every link (after ``authenticate`` when it has a secret), a new instance per start."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from strands_trio import __version__
from strands_trio.broker import BrokerConfig, Hub
from strands_trio.broker._backends import BackendServer
from strands_trio.protocol import BadFrame, FrameDecoder, Hello, Role, decode_line, encode

LINE = b'{"request_id":"hello","action":"hello","params":{"broker":"b:8081","instance":"i1","version":"0.1.0"}}\n'


def test_hello_encodes_and_decodes_exactly() -> None:
    """A hello is one line of these exact bytes, and decodes back to itself."""
    hello = Hello(broker="b:8081", instance="i1", version="0.1.0")
    assert encode(hello) == LINE
    assert decode_line(LINE[:-1]) == hello


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"broker": "b", "instance": "i"}, Hello(broker="b", instance="i")),
        ({"broker": "b", "instance": "i", "future": [1]}, Hello(broker="b", instance="i")),
    ],
)
def test_the_decoder_is_lenient(params: dict[str, object], expected: Hello) -> None:
    """Without version, or with fields it does not know, a hello is still a hello."""
    line = json.dumps({"request_id": "hello", "action": "hello", "params": params})
    assert decode_line(line.encode()) == expected


def test_a_bad_hello_is_a_bad_frame_and_the_next_line_decodes() -> None:
    """A hello with a broker that is not a string is skipped as a BadFrame saying where."""
    decoder = FrameDecoder(Role.BACKEND)
    bad = b'{"request_id":"hello","action":"hello","params":{"broker":3,"instance":"i"}}\n'
    frames = decoder.feed(bad + LINE)
    assert isinstance(frames[0], BadFrame)
    assert "$.params.broker" in frames[0].reason
    assert frames[1] == Hello(broker="b:8081", instance="i1", version="0.1.0")


async def _first_line(server: BackendServer, *, secret: str | None = None) -> dict[str, object]:
    broker_end, backend_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_link, broker_end, "raw")
        if secret is not None:
            line = {"request_id": "a", "action": "authenticate", "params": {"secret": secret}}
            await backend_end.send_all(json.dumps(line).encode() + b"\n")
        data = b""
        while b"\n" not in data:
            data += await backend_end.receive_some()
        nursery.cancel_scope.cancel()
    first: dict[str, object] = json.loads(data.partition(b"\n")[0])
    return first


async def test_our_broker_says_hello_first_after_authenticate() -> None:
    """The first line on a link is the hello: the node id as name when set, the instance of
    this start, our version; with a secret, only once the backend authenticated."""
    secret = "a secret of 16 chars or more"
    config = BrokerConfig(ws_port=0, tcp_port=0, node_id="n1", backend_secret=secret)
    server = BackendServer(Hub(config), config)
    with trio.fail_after(5):
        first = await _first_line(server, secret=secret)
    assert first == {
        "request_id": "hello",
        "action": "hello",
        "params": {"broker": "n1", "instance": server.instance, "version": __version__},
    }


async def test_a_new_start_is_a_new_instance_under_the_same_name() -> None:
    """Two broker starts with the same config share the name, never the instance; without a
    node id the name is backend_host:tcp_port."""
    config = BrokerConfig(ws_port=0, tcp_port=9123, heartbeat_interval=None)
    one, two = BackendServer(Hub(config), config), BackendServer(Hub(config), config)
    with trio.fail_after(5):
        a, b = await _first_line(one), await _first_line(two)
    assert a["params"]["broker"] == b["params"]["broker"] == "127.0.0.1:9123"  # type: ignore[index]
    assert a["params"]["instance"] != b["params"]["instance"]  # type: ignore[index]
