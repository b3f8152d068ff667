"""With REDIS_URL: several server processes act as one (docs/cluster.md).

The same room contracts as rooms/, over Redis: a lease with a fencing token per room (its owner
runs the turns), an inbound stream (messages and stops from any process), an outbound stream
(every event once, read by one reader per process), and the shared roster and history."""

from __future__ import annotations

from .node import ClusterNode
from .room import ClusterRoom
from .store import RedisThreadStore

__all__ = ["ClusterNode", "ClusterRoom", "RedisThreadStore"]
