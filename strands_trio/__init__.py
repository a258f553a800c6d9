"""strands-trio: Trio-native backends for the PyStrands real-time broker.

A backend subclasses :class:`StrandsClient` (or decorates functions on a :class:`StrandsApp`),
connects to a broker over TCP and handles its events under Trio's structured concurrency.

The names below are imported when first used (:pep:`562`), so that ``import
strands_trio.protocol``, the sans-IO codec, loads neither trio nor the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import StrandsApp
    from ._backoff import Backoff
    from ._brokers import BrokerIdentity, BrokerLink, BrokerLinkListener
    from ._calls import reply_message
    from ._client import StrandsClient
    from ._config import ClientConfig
    from ._errors import (
        BrokerConnectionError,
        LocalProtocolError,
        NotConnectedError,
        PresenceIncomplete,
        ProtocolError,
        RemoteProtocolError,
        RoomsUnsupported,
        StrandsError,
    )
    from ._host import (
        ConnectionHost,
        ConnectionRequestHost,
        ErrorHost,
        EventType,
        EventTypeError,
        ExecutionContext,
        HostContext,
        MessageHost,
        MetadataKey,
        error_message,
    )
    from ._parts import (
        CallNext,
        ExceptionHandler,
        FastMiddleware,
        ForbiddenHook,
        Guard,
        Middleware,
        exception_handler,
    )
    from ._reflect import (
        Reflector,
        reflector,
        set_metadata,
        use_exception_handlers,
        use_guards,
        use_middleware,
    )
    from ._rooms import RoomListener
    from ._router import MessageRoute, Router, make_message_converter
    from ._sender import Sender
    from ._statistics import ClientStatistics
    from .context import ConnectionRequestContext, Context

#: The version of strands-trio, as in its package metadata.
__version__ = "0.1.0"

#: Where each public name lives: imported on first use.
_HOMES: dict[str, str] = {
    "StrandsApp": "._app",
    "Backoff": "._backoff",
    "StrandsClient": "._client",
    "ClientConfig": "._config",
    "BrokerConnectionError": "._errors",
    "LocalProtocolError": "._errors",
    "NotConnectedError": "._errors",
    "PresenceIncomplete": "._errors",
    "ProtocolError": "._errors",
    "RemoteProtocolError": "._errors",
    "RoomsUnsupported": "._errors",
    "StrandsError": "._errors",
    "ConnectionHost": "._host",
    "ConnectionRequestHost": "._host",
    "ErrorHost": "._host",
    "EventType": "._host",
    "EventTypeError": "._host",
    "ExecutionContext": "._host",
    "HostContext": "._host",
    "MessageHost": "._host",
    "MetadataKey": "._host",
    "error_message": "._host",
    "reply_message": "._calls",
    "CallNext": "._parts",
    "ExceptionHandler": "._parts",
    "FastMiddleware": "._parts",
    "ForbiddenHook": "._parts",
    "Guard": "._parts",
    "Middleware": "._parts",
    "exception_handler": "._parts",
    "Reflector": "._reflect",
    "reflector": "._reflect",
    "set_metadata": "._reflect",
    "use_exception_handlers": "._reflect",
    "use_guards": "._reflect",
    "use_middleware": "._reflect",
    "MessageRoute": "._router",
    "Router": "._router",
    "make_message_converter": "._router",
    "RoomListener": "._rooms",
    "Sender": "._sender",
    "ClientStatistics": "._statistics",
    "BrokerIdentity": "._brokers",
    "BrokerLink": "._brokers",
    "BrokerLinkListener": "._brokers",
    "ConnectionRequestContext": ".context",
    "Context": ".context",
}

__all__ = [
    "Backoff",
    "BrokerConnectionError",
    "BrokerIdentity",
    "BrokerLink",
    "BrokerLinkListener",
    "CallNext",
    "ClientConfig",
    "ClientStatistics",
    "ConnectionHost",
    "ConnectionRequestContext",
    "ConnectionRequestHost",
    "Context",
    "ErrorHost",
    "EventType",
    "EventTypeError",
    "ExceptionHandler",
    "ExecutionContext",
    "FastMiddleware",
    "ForbiddenHook",
    "Guard",
    "HostContext",
    "LocalProtocolError",
    "MessageHost",
    "MessageRoute",
    "MetadataKey",
    "Middleware",
    "NotConnectedError",
    "PresenceIncomplete",
    "ProtocolError",
    "Reflector",
    "RemoteProtocolError",
    "RoomListener",
    "RoomsUnsupported",
    "Router",
    "Sender",
    "StrandsApp",
    "StrandsClient",
    "StrandsError",
    "__version__",
    "error_message",
    "exception_handler",
    "make_message_converter",
    "reflector",
    "reply_message",
    "set_metadata",
    "use_exception_handlers",
    "use_guards",
    "use_middleware",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'strands_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next access is a plain look-up
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
