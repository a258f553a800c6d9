"""strands-trio's broker: the PyStrands wire protocol on Trio and websockets' sans-IO core.

``serve_broker(config, task_status=...)`` runs a broker that any backend written for the
reference broker works with (see ``docs/broker.md``); ``strands-trio broker`` runs it from the
command line.
"""

from ._backends import BackendStatistics
from ._config import BrokerConfig
from ._front import FrontStatistics
from ._handshake import Handshake
from ._hub import Hub, HubStatistics
from ._limits import LimitStatistics
from ._ports import (
    Admission,
    BackendPort,
    ClientLink,
    ClusterPort,
    ClusterStatistics,
    Delivery,
    Owner,
)
from ._server import BrokerAddress, BrokerStatistics, ListenError, serve_broker

__all__ = [
    "Admission",
    "BackendPort",
    "BackendStatistics",
    "BrokerAddress",
    "BrokerConfig",
    "BrokerStatistics",
    "ClientLink",
    "ClusterPort",
    "ClusterStatistics",
    "Delivery",
    "FrontStatistics",
    "Handshake",
    "Hub",
    "HubStatistics",
    "LimitStatistics",
    "ListenError",
    "Owner",
    "serve_broker",
]
