"""The pure two-phase scheduler: plain data in, plain data out; no I/O, no torch.

Phase 1, `allocate`: which node holds which contiguous layer range (or stands by).
Phase 2, `route`: which chain of nodes serves one request.
"""

from coordinator.scheduler.allocate import allocate
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.route import Router, route
from coordinator.scheduler.types import (
    Allocation,
    ClusterState,
    Hop,
    LinkSpec,
    NodeCapacity,
    NodeLoad,
    Route,
    RouteRequest,
)

__all__ = [
    "AllocateOptions",
    "Allocation",
    "ClusterState",
    "Hop",
    "LinkSpec",
    "NodeCapacity",
    "NodeLoad",
    "Route",
    "RouteRequest",
    "Router",
    "allocate",
    "route",
]
