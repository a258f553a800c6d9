"""The broker wire protocol, sans-IO: frames, the codec, and the line splitter.

Nothing in this package imports trio or does any I/O: it turns bytes into frames and frames
into bytes, for the client and the broker alike. See ``docs/protocol.md`` for the protocol and
how the reference broker's quirks are handled here.
"""

from .._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._codec import (
    FrameDecoder,
    Role,
    decode_line,
    encode,
    encode_broadcast,
    encode_message_to_connection,
    encode_message_to_room,
    encode_new_message,
)
from ._convert import make_converter, unwrap_metadata
from ._facts import NO_BACKEND, canonical_header
from ._frames import (
    Action,
    Authenticate,
    BadFrame,
    Broadcast,
    BrokerMember,
    CloseConnection,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    Event,
    Frame,
    Heartbeat,
    Hello,
    JoinRoom,
    LeaveRoom,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    NewMessage,
    PresenceReply,
    PresenceRequest,
    Response,
)
from ._lines import DEFAULT_MAX_LINE_LENGTH, LineSplitter, LineTooLong

__all__ = [
    "DEFAULT_MAX_LINE_LENGTH",
    "NO_BACKEND",
    "Action",
    "Authenticate",
    "BadFrame",
    "Broadcast",
    "BrokerMember",
    "CloseConnection",
    "ConnectionRequest",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "Frame",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "JoinRoom",
    "LeaveRoom",
    "LineSplitter",
    "LineTooLong",
    "LocalProtocolError",
    "MessageToConnection",
    "MessageToRoom",
    "NewConnection",
    "NewMessage",
    "PresenceReply",
    "PresenceRequest",
    "ProtocolError",
    "RemoteProtocolError",
    "Response",
    "Role",
    "canonical_header",
    "decode_line",
    "encode",
    "encode_broadcast",
    "encode_message_to_connection",
    "encode_message_to_room",
    "encode_new_message",
    "make_converter",
    "unwrap_metadata",
]
