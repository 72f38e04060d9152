"""The topology half of the router: what a request's costs do not change.

Built from node ids, ranges and regions only, so it is rebuilt when nodes join, leave
or move, not when their load changes. It holds the cut positions (every range start
and end), the nodes in id order, and the nodes grouped by (range, region): members of
a group are interchangeable except for their cost, so a request reduces each group to
its cheapest member with one `np.minimum.reduceat` before the search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from coordinator.scheduler.types import ClusterState, NodeLoad
from parallax.types import LayerRange

TopologyKey = tuple[int, tuple[tuple[str, int, int, str], ...]]
# The hop table and the search run in float32: half the memory traffic of float64, and
# a table small enough to stay in cache. Chains closer than about 1e-5 of their cost
# are ties.
COST_DTYPE = np.float32


def topology_key(state: ClusterState) -> TopologyKey:
    """What the index depends on, in the order the state lists its nodes."""
    return state.num_layers, tuple(
        (n.node_id, n.range.start, n.range.end, n.region) for n in state.nodes
    )


class RouteIndex:
    """Cuts, groups and dense (start cut, end cut) helpers for one cluster topology."""

    def __init__(self, state: ClusterState, key: TopologyKey | None = None) -> None:
        self.key = key if key is not None else topology_key(state)
        L = self.num_layers = state.num_layers
        # `perm[i]` is the position in `state.nodes` of the i-th node in id order: states
        # with this topology list their nodes in the same order, so it serves them all.
        self.perm = sorted(range(len(state.nodes)), key=lambda i: state.nodes[i].node_id)
        nodes: Sequence[NodeLoad] = [state.nodes[i] for i in self.perm]
        self.ids = [n.node_id for n in nodes]
        self.position = {nid: i for i, nid in enumerate(self.ids)}
        lo = [min(n.range.start, L) for n in nodes]
        hi = [min(n.range.end, L) for n in nodes]
        self.cuts = np.array(sorted({0, L, *lo, *hi}), dtype=np.int64)
        K = len(self.cuts)
        # Node bounds as cut indices; a node past the last layer covers nothing.
        self.lo = np.searchsorted(self.cuts, lo).astype(np.int64)
        self.hi = np.searchsorted(self.cuts, hi).astype(np.int64)
        self.regions = sorted({n.region for n in nodes})
        rindex = {r: k for k, r in enumerate(self.regions)}
        self.region_of = np.array([rindex[n.region] for n in nodes], dtype=np.int64)
        # Groups: nodes sorted by (lo, hi, region); `group_starts` delimit them in `order`.
        useful = np.flatnonzero(self.lo < self.hi)
        keys = np.stack([self.lo[useful], self.hi[useful], self.region_of[useful]])
        self.order = useful[np.lexsort(keys[::-1])]
        gk = np.stack([self.lo[self.order], self.hi[self.order], self.region_of[self.order]])
        new = np.ones(len(self.order), dtype=bool)
        new[1:] = (gk[:, 1:] != gk[:, :-1]).any(axis=0)
        self.group_starts = np.flatnonzero(new)
        self.g_lo, self.g_hi, self.g_region = gk[:, self.group_starts]
        # Dense helpers over (start cut p, end cut q): layers in [p, q), and +inf where
        # q <= p so no hop runs backwards or is empty.
        span = (self.cuts[None, :] - self.cuts[:, None]).astype(float)
        self.forbid = np.where(span > 0, 0.0, math.inf).astype(COST_DTYPE)[:, :, None]
        self.span = np.where(span > 0, span, 1.0).astype(COST_DTYPE)[:, :, None]
        # Segments no node holds at all.
        depth = np.zeros(K, dtype=np.int64)
        np.add.at(depth, self.lo[useful], 1)
        np.add.at(depth, self.hi[useful], -1)
        held = np.cumsum(depth)[:-1] > 0
        self.gaps = [
            LayerRange(int(self.cuts[j]), int(self.cuts[j + 1])) for j in np.flatnonzero(~held)
        ]

    @property
    def segments(self) -> list[tuple[int, int]]:
        c = self.cuts.tolist()
        return list(zip(c, c[1:], strict=False))

    def matches(self, state: ClusterState) -> bool:
        return topology_key(state) == self.key
