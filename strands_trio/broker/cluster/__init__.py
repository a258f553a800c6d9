"""The broker cluster: broker nodes that reach each other's clients through Redis.

``serve_broker`` composes a :class:`ClusterNode` with its hub when ``BrokerConfig.redis_url``
is set; importing this package imports the Redis client (hiredis). The design is in
``docs/cluster.md`` and in ``_node.py``'s theory of operation.
"""

from .._ports import ClusterStatistics
from ._node import ClusterNode

__all__ = ["ClusterNode", "ClusterStatistics"]
