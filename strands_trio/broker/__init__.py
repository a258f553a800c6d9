"""strands-trio's broker: the PyStrands wire protocol on Trio and trio-websocket.

``serve_broker(config, task_status=...)`` runs a broker that any backend written for the
reference broker works with (see ``docs/broker.md``); ``strands-trio broker`` runs it from the
command line.
"""

from ._config import BrokerConfig
from ._hub import Admission, BrokerStatistics, ClientLink, ClusterStatistics, Hub
from ._server import BrokerAddress, serve_broker

__all__ = [
    "Admission",
    "BrokerAddress",
    "BrokerConfig",
    "BrokerStatistics",
    "ClientLink",
    "ClusterStatistics",
    "Hub",
    "serve_broker",
]
