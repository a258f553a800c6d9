"""The codec: the reference transcript decodes to the right frames, every WIRE.md quirk is
handled, bad lines become BadFrames without stopping the stream, and encoding is exact."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strands_trio import ConnectionRequestContext, Context, LocalProtocolError, RemoteProtocolError
from strands_trio.protocol import (
    BadFrame,
    Broadcast,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    Frame,
    FrameDecoder,
    Heartbeat,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    NewMessage,
    Response,
    Role,
    decode_line,
    encode,
    encode_broadcast,
    encode_message_to_connection,
    encode_message_to_room,
    encode_new_message,
    unwrap_metadata,
)
from strands_trio.protocol._codec import _DETAILED, _FAST_PATHS

TRANSCRIPT = Path(__file__).parent.parent / "data" / "reference-broker-transcript.txt"


def transcript(direction: str) -> list[bytes]:
    return [
        line[2:].encode()
        for line in TRANSCRIPT.read_text().splitlines()
        if line.startswith(direction + " ")
    ]


def decode_all(lines: list[bytes], role: Role = Role.BACKEND) -> list[Frame | BadFrame]:
    return FrameDecoder(role).feed(b"".join(line + b"\n" for line in lines))


ALICE = Context(
    client_id="alice-1", room_id="chat", metadata={"role": "admin", "username": "alice"}
)


def test_reference_transcript_events() -> None:
    """Every event of the real capture decodes, in order, to the frame a handler expects."""
    frames = decode_all(transcript("<"))
    assert [type(frame) for frame in frames] == [
        ErrorEvent,
        ErrorEvent,
        Heartbeat,
        ConnectionRequest,
        ConnectionRequest,
        NewConnection,
        NewMessage,
        Disconnected,
        Heartbeat,
    ]
    request = frames[3]
    assert request == ConnectionRequest(
        request_id="f4da6adf-c152-40c6-9941-e9f25022f8fc",
        headers=request.headers,  # type: ignore[union-attr]
        url="/ws/chat",
        remote_addr="127.0.0.1:52626",
    )
    assert request.headers["Authorization"] == ["Bearer bad"]  # type: ignore[union-attr]
    assert frames[6] == NewMessage(
        request_id="a0231063-d493-4782-ade4-3e2d97253949", context=ALICE, message="hello"
    )
    assert frames[8] == Heartbeat()


def test_quirk_1_nested_metadata_is_unwrapped() -> None:
    """The reference broker's copy of the whole response params becomes the metadata the
    backend set, in every context-bearing event."""
    frames = decode_all(transcript("<"))
    for frame in frames[5:8]:
        assert frame.context == ALICE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        # the reference broker, with and without metadata in the response
        ({"accepted": True, "client_id": "c", "room_id": "r", "metadata": {"k": 1}}, {"k": 1}),
        ({"accepted": True, "client_id": "c", "room_id": "r"}, {}),
        ({"accepted": True, "client_id": "c", "room_id": "r", "metadata": None}, {}),
        # a broker that sends the backend's own metadata: left alone
        ({"k": 1}, {"k": 1}),
        ({}, {}),
        # look-alikes that are the backend's own data: left alone
        ({"accepted": True, "client_id": "other", "room_id": "r", "metadata": {}}, None),
        ({"accepted": True, "client_id": "c", "room_id": "r", "metadata": {}, "x": 1}, None),
        ({"accepted": "yes", "client_id": "c", "room_id": "r", "metadata": {}}, None),
        ({"accepted": True, "client_id": "c", "room_id": "r", "metadata": [1]}, None),
    ],
)
def test_unwrap_metadata(metadata: dict[str, Any], expected: dict[str, Any] | None) -> None:
    """Only the exact shape of the reference broker's nesting is unwrapped."""
    assert unwrap_metadata(metadata, "c") == (metadata if expected is None else expected)


def test_quirk_2_error_with_a_request_context() -> None:
    """An error queued while no backend was connected carries the connection request: it is
    delivered as a ConnectionRequestContext, never accepted."""
    error = decode_all(transcript("<"))[0]
    assert isinstance(error, ErrorEvent)
    assert error.error == "no backend available to handle connection request"
    request = error.context
    assert isinstance(request, ConnectionRequestContext)
    assert request.url == "/ws/chat"
    assert request.remote_addr == "127.0.0.1:52612"
    assert request.header("authorization") == "Bearer bad"
    assert request.accepted is False
    assert request.context == Context(client_id="", room_id="")


def test_error_with_a_client_context() -> None:
    """An error about a connected client carries its Context, metadata unwrapped."""
    line = orjson.dumps(
        {
            "request_id": "e",
            "action": "error",
            "params": {
                "error": "write failed",
                "context": {
                    "client_id": "c",
                    "room_id": "r",
                    "metadata": {
                        "accepted": True,
                        "client_id": "c",
                        "room_id": "r",
                        "metadata": {"a": 1},
                    },
                },
            },
        }
    )
    assert decode_line(line) == ErrorEvent(
        request_id="e",
        error="write failed",
        context=Context(client_id="c", room_id="r", metadata={"a": 1}),
    )


def test_reference_transcript_actions() -> None:
    """The backend's side of the capture decodes as actions, for the broker role."""
    assert decode_all(transcript(">"), Role.BROKER) == [
        Response(request_id="f4da6adf-c152-40c6-9941-e9f25022f8fc", accepted=False),
        Response(
            request_id="32ee9e73-c72b-44c6-bb70-a8e9550f99ed",
            accepted=True,
            client_id="alice-1",
            room_id="chat",
            metadata={"username": "alice", "role": "admin"},
        ),
        MessageToRoom(request_id="r-room", room_id="chat", message="room:hello"),
        MessageToConnection(request_id="r-priv", conn_id="alice-1", message="private:hello"),
        Broadcast(request_id="r-bc", message="all:hello"),
    ]


BAD_LINES = [
    (b"garbage", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'"text"', "expected a JSON object, got str"),
    (b'{"action": "teleport", "request_id": "1", "params": {}}', "unknown action 'teleport'"),
    (b'{"action": ["x"], "request_id": "1", "params": {}}', "unknown action"),
    (b'{"request_id": "1", "params": {}}', "unknown action None"),
    (b'{"action": "heartbeat", "request_id": 7, "params": {}}', "expected a string @ $.request_id"),
    (b'{"action": "new_message", "request_id": "1", "params": []}', "@ $.params"),
    (
        b'{"action": "new_message", "request_id": "1", "params": {"context": {"client_id": "c", "room_id": "r"}}}',
        "required field missing @ $.params.message",
    ),
    (
        b'{"action": "new_message", "request_id": "1", "params": {"message": 5, "context": {"client_id": "c", "room_id": "r"}}}',
        "expected str @ $.params.message",
    ),
    (
        b'{"action": "new_connection", "request_id": "1", "params": {"context": {"client_id": 5, "room_id": "r"}}}',
        "expected str @ $.params.context.client_id",
    ),
    (
        b'{"action": "disconnected", "request_id": "1", "params": {"context": {"client_id": "c", "room_id": "r", "metadata": [1]}}}',
        "$.params.context.metadata",
    ),
    (
        b'{"action": "connection_request", "request_id": "1", "params": {"headers": {"A": "b"}, "url": "/", "remote_addr": "x"}}',
        "$.params.headers",
    ),
    (
        b'{"action": "error", "request_id": "1", "params": {"error": "e", "context": "nope"}}',
        "$.params.context",
    ),
    # a backend's action is not an event
    (b'{"action": "broadcast", "request_id": "1", "params": {"message": "m"}}', "unknown action"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_line_raises_remote_protocol_error(line: bytes, reason: str) -> None:
    """decode_line says what is wrong, as "reason @ $.path" where a field is at fault."""
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)):
        decode_line(line)


def test_bad_lines_between_good_ones_are_reported_in_place() -> None:
    """Garbage between frames becomes BadFrames in the stream's order; the good frames on
    either side are decoded as usual."""
    good = transcript("<")[2]  # a heartbeat
    stream = b"\n".join([good, *[line for line, _ in BAD_LINES], good]) + b"\n"
    frames = FrameDecoder().feed(stream)
    assert frames[0] == Heartbeat()
    assert frames[-1] == Heartbeat()
    bad = frames[1:-1]
    assert all(isinstance(frame, BadFrame) for frame in bad)
    for frame, (line, reason) in zip(bad, BAD_LINES, strict=True):
        assert reason in frame.reason  # type: ignore[union-attr]
        assert frame.line == line[:200]  # type: ignore[union-attr]


def test_over_long_frame_and_eof_mid_frame() -> None:
    """An over-long frame and a frame cut by EOF are reported; what follows still decodes."""
    decoder = FrameDecoder(max_line_length=100)
    heartbeat = transcript("<")[2]
    frames = decoder.feed(
        b'{"action":"' + b"x" * 200 + b'"}\n' + heartbeat + b"\n" + heartbeat[:10]
    )
    assert isinstance(frames[0], BadFrame)
    assert frames[0].reason == "line longer than 100 bytes"
    assert frames[1] == Heartbeat()
    assert decoder.buffered == 10
    assert decoder.feed_eof() == [
        BadFrame(reason="connection closed in the middle of a frame", line=heartbeat[:10])
    ]
    assert decoder.feed_eof() == []


@pytest.mark.parametrize(
    ("frame", "line"),
    [
        (
            Response(request_id="r1", accepted=False),
            b'{"request_id":"r1","action":"response","params":{"accepted":false}}\n',
        ),
        (
            Response(
                request_id="r2", accepted=True, client_id="c", room_id="r", metadata={"k": [1]}
            ),
            b'{"request_id":"r2","action":"response","params":'
            b'{"accepted":true,"client_id":"c","room_id":"r","metadata":{"k":[1]}}}\n',
        ),
        (
            MessageToRoom(request_id="m", room_id="chat", message='say "hi"\n'),
            b'{"request_id":"m","action":"message_to_room","params":'
            b'{"room_id":"chat","message":"say \\"hi\\"\\n"}}\n',
        ),
        (
            MessageToConnection(request_id="p", conn_id="alice", message="\u00e9t\u00e9"),
            '{"request_id":"p","action":"message_to_connection","params":'
            '{"conn_id":"alice","message":"\u00e9t\u00e9"}}\n'.encode(),
        ),
        (
            Broadcast(request_id="b", message=""),
            b'{"request_id":"b","action":"broadcast","params":{"message":""}}\n',
        ),
        (Heartbeat(), b'{"request_id":"heartbeat","action":"heartbeat","params":{}}\n'),
        (
            NewMessage(request_id="n", context=Context(client_id="c", room_id="r"), message="m"),
            b'{"request_id":"n","action":"new_message","params":'
            b'{"context":{"client_id":"c","room_id":"r","metadata":{}},"message":"m"}}\n',
        ),
        (
            ErrorEvent(
                request_id="e",
                error="no backend",
                context=ConnectionRequestContext(
                    headers={"A": ["b"]}, url="/ws/x", remote_addr="1.2.3.4:5"
                ),
            ),
            b'{"request_id":"e","action":"error","params":{"error":"no backend",'
            b'"context":{"headers":{"A":["b"]},"url":"/ws/x","remote_addr":"1.2.3.4:5"}}}\n',
        ),
    ],
)
def test_encode_exact_bytes(frame: Frame, line: bytes) -> None:
    """Each frame encodes to one exact line, request_id outside params, newline included."""
    assert encode(frame) == line


@pytest.mark.parametrize(
    "frame",
    [
        Response(request_id="r", accepted=True, client_id="c"),
        Response(request_id="r", accepted=True, client_id="", room_id="r"),
        Response(
            request_id="r", accepted=True, client_id="c", room_id="r", metadata={"o": object()}
        ),
        Response(request_id="r", accepted=True, client_id="c", room_id="r", metadata="x"),  # type: ignore[arg-type]
        Response(request_id="r", accepted=True, client_id=5, room_id="r"),  # type: ignore[arg-type]
        MessageToRoom(request_id="r", room_id="x", message="\ud800"),
    ],
)
def test_encode_refuses_what_the_protocol_cannot_carry(frame: Frame) -> None:
    """A frame the broker could not use raises LocalProtocolError, not a broken line."""
    with pytest.raises(LocalProtocolError):
        encode(frame)


CONTEXT = Context(client_id="ann", room_id="lobby", metadata={"role": "admin", "n": [1, 2]})
CONTEXT_JSON = orjson.dumps(CONTEXT.to_json()).decode()


@given(
    request_id=st.text(max_size=20),
    target=st.text(max_size=20),
    message=st.text(max_size=200),
)
def test_fast_encoders_match_encode(request_id: str, target: str, message: str) -> None:
    """The send path's encoders produce the same JSON as encoding the frame, or refuse the
    same strings (lone surrogates)."""
    pairs = [
        (
            encode_message_to_room,
            (request_id, target, message),
            MessageToRoom(request_id=request_id, room_id=target, message=message),
        ),
        (
            encode_message_to_connection,
            (request_id, target, message),
            MessageToConnection(request_id=request_id, conn_id=target, message=message),
        ),
        (
            encode_broadcast,
            (request_id, message),
            Broadcast(request_id=request_id, message=message),
        ),
        (
            encode_new_message,
            (request_id, CONTEXT_JSON, message),
            NewMessage(request_id=request_id, context=CONTEXT, message=message),
        ),
    ]
    for fast, args, frame in pairs:
        try:
            expected = orjson.loads(encode(frame))
        except LocalProtocolError:
            with pytest.raises(LocalProtocolError):
                fast(*args)  # type: ignore[operator]
            continue
        line = fast(*args)  # type: ignore[operator]
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert orjson.loads(line) == expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_metadata = st.dictionaries(st.text(max_size=8), _json, max_size=4)
_contexts = st.builds(
    Context, client_id=st.text(max_size=10), room_id=st.text(max_size=10), metadata=_metadata
)
_text = st.text(max_size=30).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))

FRAMES = st.one_of(
    st.builds(
        ConnectionRequest,
        request_id=_text,
        headers=st.dictionaries(_text, st.lists(_text, max_size=3), max_size=4),
        url=_text,
        remote_addr=_text,
    ),
    st.builds(NewConnection, request_id=_text, context=_contexts),
    st.builds(NewMessage, request_id=_text, context=_contexts, message=_text),
    st.builds(Disconnected, request_id=_text, context=_contexts),
    st.builds(ErrorEvent, request_id=_text, error=_text, context=_contexts),
    st.builds(Heartbeat, request_id=_text),
)
ACTIONS = st.one_of(
    st.builds(Response, request_id=_text, accepted=st.just(False)),
    st.builds(
        Response,
        request_id=_text,
        accepted=st.just(True),
        client_id=_text.filter(bool),
        room_id=_text.filter(bool),
        metadata=_metadata,
    ),
    st.builds(MessageToRoom, request_id=_text, room_id=_text, message=_text),
    st.builds(MessageToConnection, request_id=_text, conn_id=_text, message=_text),
    st.builds(Broadcast, request_id=_text, message=_text),
)


def _strip_nesting_lookalikes(frame: Frame) -> bool:
    context = getattr(frame, "context", None)
    return not (
        isinstance(context, Context)
        and unwrap_metadata(context.metadata, context.client_id) is not context.metadata
    )


@given(FRAMES.filter(_strip_nesting_lookalikes))
def test_event_round_trip(frame: Frame) -> None:
    """Any event encodes to one line that decodes back to an equal event."""
    assert FrameDecoder(Role.BACKEND).feed(encode(frame)) == [frame]


@given(ACTIONS)
def test_action_round_trip(frame: Frame) -> None:
    """Any action encodes to one line that decodes back to an equal action."""
    assert FrameDecoder(Role.BROKER).feed(encode(frame)) == [frame]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=20), st.sampled_from(list(Role)))
def test_random_bytes_never_raise_and_memory_stays_bounded(chunks: list[bytes], role: Role) -> None:
    """Whatever bytes arrive, feed() returns frames or BadFrames, never raises, and holds at
    most max_line_length bytes."""
    decoder = FrameDecoder(role, max_line_length=256)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, BadFrame) or hasattr(item, "ACTION")
        assert decoder.buffered <= 256
    decoder.feed_eof()


_context_like = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "client_id": st.one_of(st.text(max_size=3), st.integers()),
            "room_id": st.one_of(st.text(max_size=3), st.none()),
        },
        optional={"metadata": st.one_of(_metadata, _json)},
    ),
)


@settings(max_examples=500)
@given(
    action=st.sampled_from(sorted(_FAST_PATHS[Role.BACKEND])),
    params=st.fixed_dictionaries(
        {}, optional={"context": _context_like, "message": st.one_of(st.text(max_size=5), _json)}
    ),
)
def test_fast_path_agrees_with_the_converter(action: str, params: dict[str, Any]) -> None:
    """The hand-written hot path either declines or builds exactly what the detailed
    converter builds from the same params; it never accepts what the converter refuses."""
    fast = _FAST_PATHS[Role.BACKEND][action](dict(params), "rid")
    cls = {
        NewMessage.ACTION: NewMessage,
        NewConnection.ACTION: NewConnection,
        Disconnected.ACTION: Disconnected,
    }[action]
    try:
        expected = _DETAILED.structure({**params, "request_id": "rid"}, cls)
    except Exception:
        assert fast is None
        return
    assert fast is None or fast == expected


_ACTION_CLASSES = {cls.ACTION: cls for cls in (MessageToConnection, MessageToRoom, Broadcast)}


@settings(max_examples=500)
@given(
    action=st.sampled_from(sorted(_ACTION_CLASSES)),
    params=st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(st.text(max_size=5), _json) for key in ("conn_id", "room_id", "message")
        },
    ),
)
def test_broker_fast_paths_agree_with_the_converter(action: str, params: dict[str, Any]) -> None:
    """The broker's hot path for the three message actions declines or builds exactly what
    the detailed converter builds; it never accepts what the converter refuses."""
    fast = _FAST_PATHS[Role.BROKER][action](dict(params), "rid")
    try:
        expected = _DETAILED.structure({**params, "request_id": "rid"}, _ACTION_CLASSES[action])
    except Exception:
        assert fast is None
        return
    assert fast is None or fast == expected


@pytest.mark.parametrize(
    ("params", "accepted"),
    [
        ({"accepted": False}, False),
        ({"accepted": True, "client_id": "c", "room_id": "r"}, True),
        ({"client_id": "c", "room_id": "r"}, True),  # no accepted at all
        ({"accepted": None, "client_id": "c", "room_id": "r"}, True),
        ({"accepted": 0, "client_id": "c", "room_id": "r"}, True),
        ({"accepted": "no", "client_id": "c", "room_id": "r"}, True),
    ],
)
def test_broker_reads_a_response_as_the_reference_does(
    params: dict[str, Any], accepted: bool
) -> None:
    """Only JSON false rejects (WIRE.md): a response whose accepted is missing, null, a number
    or a string accepts, as the reference broker does."""
    line = orjson.dumps({"request_id": "r", "action": "response", "params": params})
    response = decode_line(line, Role.BROKER)
    assert isinstance(response, Response)
    assert response.accepted is accepted


def test_broker_matches_envelope_keys_without_case() -> None:
    """Go's JSON decoder matches field names without regard to case: Request_ID and ACTION
    work against the reference, so they work against ours."""
    line = b'{"Request_ID": "r", "ACTION": "broadcast", "Params": {"message": "hi"}}'
    assert decode_line(line, Role.BROKER) == Broadcast(request_id="r", message="hi")


def test_query_reason_and_code_are_extensions() -> None:
    """``query`` on a connection request and ``reason``/``code`` on a response are sent only
    when set, and read leniently: one of the wrong type is dropped, never the frame."""
    bare = ConnectionRequest(request_id="r", headers={}, url="/ws/x", remote_addr="a:1")
    assert b"query" not in encode(bare)
    sent = ConnectionRequest(request_id="r", headers={}, url="/ws/x", remote_addr="a:1", query="")
    assert b'"query":""' in encode(sent)
    assert decode_line(encode(sent).rstrip(b"\n")) == sent
    line = encode(bare).replace(b'"remote_addr"', b'"query":7,"remote_addr"').rstrip(b"\n")
    assert decode_line(line) == bare
    refusal = Response(request_id="r", accepted=False, reason="token expired", code=401)
    assert decode_line(encode(refusal).rstrip(b"\n"), Role.BROKER) == refusal
    assert encode(Response(request_id="r", accepted=False)) == (
        b'{"request_id":"r","action":"response","params":{"accepted":false}}\n'
    )
    odd = (
        b'{"request_id":"r","action":"response","params":{"accepted":false,"reason":1,"code":"x"}}'
    )
    assert decode_line(odd, Role.BROKER) == Response(request_id="r", accepted=False)
