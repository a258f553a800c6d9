"""strands-trio: Trio-native backends for the PyStrands real-time broker.

A backend subclasses :class:`StrandsClient` (or decorates functions on a :class:`StrandsApp`),
connects to a broker over TCP and handles its events under Trio's structured concurrency.
"""

from ._app import StrandsApp
from ._client import StrandsClient
from ._config import ClientConfig
from ._errors import (
    BrokerConnectionError,
    LocalProtocolError,
    NotConnectedError,
    PresenceIncomplete,
    ProtocolError,
    RemoteProtocolError,
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
from ._pipeline import CallNext, ExceptionHandler, Guard, Middleware, exception_handler
from ._reflect import (
    Reflector,
    reflector,
    set_metadata,
    use_exception_handlers,
    use_guards,
    use_middleware,
)
from ._router import MessageRoute, Router, make_message_converter
from ._statistics import ClientStatistics
from .context import ConnectionRequestContext, Context

#: The version of strands-trio, as in its package metadata.
__version__ = "0.1.0"

__all__ = [
    "BrokerConnectionError",
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
    "Router",
    "StrandsApp",
    "StrandsClient",
    "StrandsError",
    "__version__",
    "error_message",
    "exception_handler",
    "make_message_converter",
    "reflector",
    "set_metadata",
    "use_exception_handlers",
    "use_guards",
    "use_middleware",
]
