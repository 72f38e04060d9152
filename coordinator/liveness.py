"""Who is dead: nodes silent for too long, counted only while this coordinator listened.

A coordinator that stalls (a blocked event loop, a paused or starved process) hears
no heartbeats meanwhile; the ones queued arrive just after it resumes. Counting that
silence against the nodes would declare every node dead at once and send the whole
cluster to re-join and reload. So an expiry round that comes much later than its
period restarts the count: silence before it is the coordinator's, not the nodes'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.registry_types import NodeRecord, NodeState
from parallax.types import NodeId


@dataclass
class Listening:
    """Since when this coordinator has been hearing heartbeats without a stall.

    `stall_after_s`: a gap between two expiry rounds longer than this (seconds) is a
    stall of the coordinator's own; math.inf never assumes one."""

    stall_after_s: float = math.inf
    since: float = -math.inf
    last_round: float | None = None

    def round(self, now: float) -> float:
        """Note an expiry round at `now`; the time from which silence counts."""
        if self.last_round is not None and now - self.last_round > self.stall_after_s:
            self.since = now
        self.last_round = now
        return self.since


def silent_nodes(
    records: Iterable[NodeRecord], now: float, dead_after_s: float, heard_since: float
) -> list[NodeId]:
    """Nodes not dead yet whose last heartbeat (or `heard_since`, if later) is more
    than `dead_after_s` seconds before `now`."""
    return [
        r.node_id
        for r in records
        if r.state is not NodeState.DEAD and now - max(r.last_heartbeat, heard_since) > dead_after_s
    ]
