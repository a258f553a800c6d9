"""Decoding lines into frames and encoding frames into lines: the one codec of both sides.

Theory of operation: a :class:`FrameDecoder` is made for a :class:`Role`. A backend decodes
events and a broker decodes actions; both encode with :func:`encode`. ``feed(data)`` splits the
bytes into lines (:class:`LineSplitter`), parses each with orjson, checks the envelope
(``request_id``, ``action``, ``params``) and structures the params into the frame class named by
the action, with the fast converter. Whatever goes wrong with a line (not UTF-8, not JSON, not
an object, an unknown action, a missing field, a wrong type, an over-long line) becomes a
:class:`BadFrame` in the output, in the line's place, and the next line is decoded as usual:
``feed`` never raises because of what the peer sent. Only a line that failed is structured a
second time, with the detailed converter, to say what was wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from json.encoder import encode_basestring as _quote
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from .._errors import LocalProtocolError, RemoteProtocolError
from ..context import Context
from ._convert import describe_error, make_converter, unwrap_metadata
from ._frames import (
    ACTION_TYPES,
    EVENT_TYPES,
    BadFrame,
    Broadcast,
    Disconnected,
    Frame,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    NewMessage,
    Response,
)
from ._lines import DEFAULT_MAX_LINE_LENGTH, LineSplitter, LineTooLong

__all__ = [
    "FrameDecoder",
    "Role",
    "decode_line",
    "encode",
    "encode_broadcast",
    "encode_message_to_connection",
    "encode_message_to_room",
    "encode_new_message",
]

_EXCERPT = 200

_FAST = make_converter(wire=True)
_DETAILED = make_converter(wire=True, detailed_validation=True)
# What structuring raises on bad data without detailed validation.
_STRUCTURE_ERRORS = (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError)


class Role(enum.Enum):
    """Which side of the link a decoder is on, hence which frames it accepts."""

    #: Decodes events (broker to backend).
    BACKEND = "backend"
    #: Decodes actions (backend to broker).
    BROKER = "broker"


_Structure = Callable[[dict[str, Any], type[Any]], Frame]


def _structurers(role: Role) -> dict[str, tuple[_Structure, type[Frame]]]:
    types = EVENT_TYPES if role is Role.BACKEND else ACTION_TYPES
    return {cls.ACTION: (_FAST.get_structure_hook(cls), cls) for cls in types}


_STRUCTURERS = {role: _structurers(role) for role in Role}

# The hot path. Structuring a new_message with the converter costs ~1.9 us here, of a ~6.5 us
# budget per event; these hand-written twins of its hooks ~1.3 us, most of it building the
# attrs objects (benchmarks/codec.py, docs/dependencies.md). They accept only what is plainly
# valid and return None otherwise; the converter then decides, so they never accept what it refuses
# (tests/protocol/test_codec.py checks that both agree on generated data).


_F = TypeVar("_F")


def _slot_constructor(cls: type[_F]) -> Callable[..., _F]:
    """A positional constructor for a frozen, slotted attrs class with two or three fields
    that fills the slots directly: faster than attrs' frozen ``__init__``, which calls
    ``object.__setattr__`` once per field (``benchmarks/codec.py`` measures both). Only for
    fields without default, validator or converter, which is checked here."""
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    for field in fields:
        if field.default is not attrs.NOTHING or field.validator or field.converter:
            raise TypeError(f"{cls.__name__}.{field.name} needs attrs' own __init__")
    setters = [getattr(cls, field.name).__set__ for field in fields]
    new = object.__new__
    if len(setters) == 2:
        set_a, set_b = setters

        def construct2(a: Any, b: Any) -> _F:
            obj = new(cls)
            set_a(obj, a)
            set_b(obj, b)
            return obj

        return construct2
    if len(setters) == 3:
        set_a, set_b, set_c = setters

        def construct3(a: Any, b: Any, c: Any) -> _F:
            obj = new(cls)
            set_a(obj, a)
            set_b(obj, b)
            set_c(obj, c)
            return obj

        return construct3
    raise TypeError(f"{cls.__name__} has {len(setters)} fields; only 2 or 3 are supported")


_new_message = _slot_constructor(NewMessage)  # (request_id, context, message)
_to_room = _slot_constructor(MessageToRoom)  # (request_id, room_id, message)
_to_connection = _slot_constructor(MessageToConnection)  # (request_id, conn_id, message)
_broadcast = _slot_constructor(Broadcast)  # (request_id, message)
_new_connection = _slot_constructor(NewConnection)  # (request_id, context)


def _fast_context(value: Any) -> Context | None:
    if type(value) is not dict:
        return None
    client_id = value.get("client_id")
    room_id = value.get("room_id")
    metadata = value.get("metadata")
    if type(client_id) is not str or type(room_id) is not str:
        return None
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        return None
    elif metadata:
        metadata = unwrap_metadata(metadata, client_id)
    return Context(client_id=client_id, room_id=room_id, metadata=metadata)


def _fast_new_message(params: dict[str, Any], request_id: str) -> NewMessage | None:
    message = params.get("message")
    context = _fast_context(params.get("context"))
    if context is None or type(message) is not str:
        return None
    return _new_message(request_id, context, message)


def _fast_new_connection(params: dict[str, Any], request_id: str) -> NewConnection | None:
    context = _fast_context(params.get("context"))
    return None if context is None else _new_connection(request_id, context)


def _fast_disconnected(params: dict[str, Any], request_id: str) -> Disconnected | None:
    context = _fast_context(params.get("context"))
    if context is None:
        return None
    rooms = params.get("rooms")  # an extension: one of the wrong type is read as None
    return Disconnected(request_id=request_id, context=context, rooms=room_list(rooms))


def room_list(value: Any) -> tuple[str, ...] | None:
    """``Disconnected.rooms`` from its JSON value: a tuple for a list of strings, else
    ``None``."""
    if type(value) is list and all(type(room) is str for room in value):
        return tuple(value)
    return None


# The broker's hot path: the three message actions, as plainly valid as the events above.


def _fast_to_room(params: dict[str, Any], request_id: str) -> MessageToRoom | None:
    room_id, message = params.get("room_id"), params.get("message")
    if type(room_id) is not str or type(message) is not str:
        return None
    return _to_room(request_id, room_id, message)


def _fast_to_connection(params: dict[str, Any], request_id: str) -> MessageToConnection | None:
    conn_id, message = params.get("conn_id"), params.get("message")
    if type(conn_id) is not str or type(message) is not str:
        return None
    return _to_connection(request_id, conn_id, message)


def _fast_broadcast(params: dict[str, Any], request_id: str) -> Broadcast | None:
    message = params.get("message")
    return _broadcast(request_id, message) if type(message) is str else None


def _reference_response(params: dict[str, Any], request_id: str) -> Response:
    """A ``response`` as the reference broker reads it (WIRE.md): its params are untyped, and
    only ``accepted`` equal to JSON ``false`` rejects; a missing, ``null``, numeric or string
    ``accepted`` accepts. Ids and metadata of the wrong type count as missing (the broker then
    refuses the client and says why)."""
    client_id, room_id = params.get("client_id"), params.get("room_id")
    metadata, reason, code = params.get("metadata"), params.get("reason"), params.get("code")
    return Response(
        request_id=request_id,
        accepted=params.get("accepted") is not False,
        client_id=client_id if type(client_id) is str else None,
        room_id=room_id if type(room_id) is str else None,
        metadata=metadata if type(metadata) is dict else None,
        reason=reason if type(reason) is str else None,
        code=code if type(code) is int else None,
    )


_FastPath = Callable[[dict[str, Any], str], Frame | None]
_FAST_PATHS: dict[Role, dict[str, _FastPath]] = {
    Role.BACKEND: {
        NewMessage.ACTION: _fast_new_message,
        NewConnection.ACTION: _fast_new_connection,
        Disconnected.ACTION: _fast_disconnected,
    },
    Role.BROKER: {
        MessageToConnection.ACTION: _fast_to_connection,
        MessageToRoom.ACTION: _fast_to_room,
        Broadcast.ACTION: _fast_broadcast,
        Response.ACTION: _reference_response,
    },
}

_ENVELOPE = ("request_id", "action", "params")


def decode_line(line: bytes | bytearray, role: Role = Role.BACKEND) -> Frame:
    """Decode one line (without its ``\\n``) into a frame.

    Raises:
        RemoteProtocolError: the line is not a valid frame for *role*; the message says why.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"not JSON: {exc}") from None
    return _decode_parsed(obj, role, _FAST_PATHS[role])


def _decode_parsed(obj: Any, role: Role, fast_paths: dict[str, _FastPath]) -> Frame:
    """The hot path if it applies, else the converter."""
    if type(obj) is dict:
        action = obj.get("action")
        params = obj.get("params")
        request_id = obj.get("request_id")
        if type(action) is str and type(params) is dict and type(request_id) is str:
            fast = fast_paths.get(action)
            if fast is not None:
                frame = fast(params, request_id)
                if frame is not None:
                    return frame
    return _decode_object(obj, role)


def _decode_object(obj: Any, role: Role) -> Frame:
    """Decode a parsed line with the converter, or say exactly what is wrong with it."""
    if type(obj) is not dict:
        raise RemoteProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    if role is Role.BROKER and not all(key in obj for key in _ENVELOPE):
        # The reference matches the envelope's keys without regard to case (Go's JSON).
        folded = {key.lower(): value for key, value in obj.items() if type(key) is str}
        if all(key in folded for key in _ENVELOPE):
            return _decode_parsed(folded, role, _FAST_PATHS[role])
    action = obj.get("action")
    entry = _STRUCTURERS[role].get(action) if type(action) is str else None
    if entry is None:
        raise RemoteProtocolError(f"unknown action {action!r} @ $.action")
    request_id = obj.get("request_id")
    if type(request_id) is not str:
        raise RemoteProtocolError("expected a string @ $.request_id")
    params = obj.get("params", {})
    if type(params) is not dict:
        raise RemoteProtocolError(f"expected an object, got {type(params).__name__} @ $.params")
    params["request_id"] = request_id
    structure, cls = entry
    try:
        return structure(params, cls)
    except _STRUCTURE_ERRORS:
        pass
    try:  # only failures pay for the detailed pass
        _DETAILED.structure(params, cls)
    except Exception as exc:  # whatever it is, it is the peer's data that caused it
        reason = describe_error(exc).replace("@ $.", "@ $.params.")
    else:  # pragma: no cover - the two converters disagree: a bug, but still the peer's line
        reason = "invalid params"
    raise RemoteProtocolError(f"{action}: {reason}")


class FrameDecoder:
    """Turn the bytes a peer sends into frames, whatever their chunking.

    Args:
        role: :attr:`Role.BACKEND` to decode events, :attr:`Role.BROKER` to decode actions.
        max_line_length: The longest frame accepted, in bytes (default 1 MiB). A longer one is
            skipped and reported as a :class:`BadFrame` without ever being held whole.
    """

    __slots__ = ("_role", "_splitter")

    def __init__(
        self, role: Role = Role.BACKEND, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    ) -> None:
        self._role = role
        self._splitter = LineSplitter(max_line_length)

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held (at most ``max_line_length``)."""
        return self._splitter.buffered

    def feed(self, data: bytes | bytearray) -> list[Frame | BadFrame]:
        """Add *data*; return the frames (and bad frames) it completes, in order."""
        out: list[Frame | BadFrame] = []
        append = out.append
        role = self._role
        fast_paths = _FAST_PATHS[role]
        loads, decode = orjson.loads, _decode_parsed
        for line in self._splitter.feed(data):
            if isinstance(line, LineTooLong):
                append(BadFrame(reason=f"line longer than {line.limit} bytes", line=line.excerpt))
                continue
            try:
                append(decode(loads(line), role, fast_paths))
            except orjson.JSONDecodeError as exc:
                append(BadFrame(reason=f"not JSON: {exc}", line=bytes(line[:_EXCERPT])))
            except RemoteProtocolError as exc:
                append(BadFrame(reason=str(exc), line=bytes(line[:_EXCERPT])))
        return out

    def feed_eof(self) -> list[BadFrame]:
        """The peer closed the stream: report an unfinished last frame, if there is one."""
        rest = self._splitter.feed_eof()
        if rest is None:
            return []
        return [BadFrame(reason="connection closed in the middle of a frame", line=rest[:_EXCERPT])]


_OPTIONS = orjson.OPT_APPEND_NEWLINE


def encode(frame: Frame) -> bytes:
    """Encode *frame* as one line of JSON, ``\\n`` included.

    Raises:
        LocalProtocolError: the frame cannot be sent: an accepted :class:`Response` without a
            ``client_id`` or ``room_id`` (non-empty strings) or with metadata that is not a
            dict, or params that JSON cannot carry (an arbitrary object, a lone surrogate).
    """
    if type(frame) is Response and frame.accepted:
        if not (type(frame.client_id) is str and frame.client_id):
            raise LocalProtocolError(
                f"an accepted response needs a client_id, got {frame.client_id!r}"
            )
        if not (type(frame.room_id) is str and frame.room_id):
            raise LocalProtocolError(f"an accepted response needs a room_id, got {frame.room_id!r}")
        if not (frame.metadata is None or type(frame.metadata) is dict):
            raise LocalProtocolError(
                f"metadata must be a dict, got {type(frame.metadata).__name__}"
            )
    try:
        return orjson.dumps(
            {
                "request_id": frame.request_id,
                "action": frame.ACTION,
                "params": _FAST.unstructure(frame),
            },
            option=_OPTIONS,
        )
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise LocalProtocolError(f"cannot encode {frame.ACTION}: {exc}") from exc


# The send hot path: the same JSON as encode(MessageToRoom(...)) and friends, without building
# a frame and unstructuring it. Strings are quoted by the stdlib json module's C escaper into
# one small str: with replies held until the writer joins them, orjson.dumps costs ~1.6 us per
# reply (its 1 KiB initial buffer per call goes through malloc), this ~0.4 us
# (benchmarks/codec.py).
# tests/protocol/test_codec.py checks that both encodings decode to the same frames.


def encode_message_to_room(request_id: str, room_id: str, message: str) -> bytes:
    """``encode(MessageToRoom(request_id=..., room_id=..., message=...))``, faster.

    Raises:
        LocalProtocolError: a string holds a lone surrogate (not UTF-8).
    """
    return _line(
        f'{{"request_id":{_quote(request_id)},"action":"message_to_room",'
        f'"params":{{"room_id":{_quote(room_id)},"message":{_quote(message)}}}}}\n'
    )


def encode_message_to_connection(request_id: str, conn_id: str, message: str) -> bytes:
    """``encode(MessageToConnection(request_id=..., conn_id=..., message=...))``, faster.

    Raises:
        LocalProtocolError: as :func:`encode_message_to_room`.
    """
    return _line(
        f'{{"request_id":{_quote(request_id)},"action":"message_to_connection",'
        f'"params":{{"conn_id":{_quote(conn_id)},"message":{_quote(message)}}}}}\n'
    )


def encode_broadcast(request_id: str, message: str) -> bytes:
    """``encode(Broadcast(request_id=..., message=...))``, faster.

    Raises:
        LocalProtocolError: as :func:`encode_message_to_room`.
    """
    return _line(
        f'{{"request_id":{_quote(request_id)},"action":"broadcast",'
        f'"params":{{"message":{_quote(message)}}}}}\n'
    )


def encode_new_message(request_id: str, context_json: str, message: str) -> bytes:
    """``encode(NewMessage(request_id=..., context=..., message=...))`` for a context already
    encoded as JSON text (``orjson.dumps(context.to_json()).decode()``): a broker encodes each
    client's context once, not once per message.

    Raises:
        LocalProtocolError: as :func:`encode_message_to_room`.
    """
    return _line(
        f'{{"request_id":{_quote(request_id)},"action":"new_message",'
        f'"params":{{"context":{context_json},"message":{_quote(message)}}}}}\n'
    )


def _line(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"cannot encode a string as UTF-8: {exc}") from exc
