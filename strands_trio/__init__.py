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
    ProtocolError,
    RemoteProtocolError,
    StrandsError,
)
from ._statistics import ClientStatistics
from .context import ConnectionRequestContext, Context

__version__ = "0.1.0"

__all__ = [
    "BrokerConnectionError",
    "ClientConfig",
    "ClientStatistics",
    "ConnectionRequestContext",
    "Context",
    "LocalProtocolError",
    "NotConnectedError",
    "ProtocolError",
    "RemoteProtocolError",
    "StrandsApp",
    "StrandsClient",
    "StrandsError",
    "__version__",
]
