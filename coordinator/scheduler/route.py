"""Phase 2: pick a chain of nodes for one request over live load and RTTs.

The layers are cut at every node boundary into segments; a chain assigns one node
to each segment, and consecutive segments on one node merge into one hop. So a hop
may use a suffix or prefix of a node's range, and chains stitch across replicas
whose boundaries do not line up.

Cost of a chain, in ms per token: for each hop, its layers x the node's per-layer
step time inflated by its load, plus the RTT between consecutive nodes. A dynamic
programme over segments finds the cheapest chain. Pairwise RTTs are folded into a
region x region matrix so one decision is O(nodes x regions): about a millisecond at
a thousand nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from coordinator.scheduler.types import ClusterState, Hop, NodeLoad, Route, RouteRequest
from parallax.errors import NotCovered
from parallax.types import LayerRange

# A node decoding this many sequences at once is about twice as slow per token as an
# idle one (decode is memory-bound below it); load beyond it queues.
SATURATION_BATCH = 16.0
DEFAULT_LAYER_MS = 1.0
SAME_REGION_RTT_MS = 1.0
CROSS_REGION_RTT_MS = 100.0
# Added per layer on a node that reports too little free KV: used only if nothing else is.
KV_FULL_PENALTY_MS = 1e6


def region_rtts(state: ClusterState) -> dict[tuple[str, str], float]:
    """Mean measured RTT per region pair, with defaults where nothing was measured."""
    region = {n.node_id: n.region for n in state.nodes}
    samples: dict[tuple[str, str], list[float]] = {}
    for (a, b), ms in state.rtt_ms.items():
        if a in region and b in region and a != b:
            samples.setdefault((region[a], region[b]), []).append(ms)
    regions = sorted(set(region.values()))
    out: dict[tuple[str, str], float] = {}
    for ra in regions:
        for rb in regions:
            got = samples.get((ra, rb), []) + samples.get((rb, ra), [])
            default = SAME_REGION_RTT_MS if ra == rb else CROSS_REGION_RTT_MS
            out[(ra, rb)] = fmean(got) if got else default
    return out


class Router:
    """Index of one `ClusterState`; reuse it for many requests against the same state."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.nodes: Sequence[NodeLoad] = sorted(state.nodes, key=lambda n: n.node_id)
        cuts = {0, state.num_layers}
        for n in self.nodes:
            cuts.update(x for x in (n.range.start, n.range.end) if 0 <= x <= state.num_layers)
        self.cuts = sorted(cuts)
        self.segments = list(zip(self.cuts, self.cuts[1:], strict=False))
        self.covering: list[list[int]] = [[] for _ in self.segments]
        seg_at = {a: j for j, (a, _b) in enumerate(self.segments)}
        for i, n in enumerate(self.nodes):
            j = seg_at.get(n.range.start)
            while j is not None and j < len(self.segments) and self.segments[j][1] <= n.range.end:
                self.covering[j].append(i)
                j += 1
        self.rtt = region_rtts(state)
        self.regions = sorted({n.region for n in self.nodes})

    def uncovered(self) -> list[LayerRange]:
        return [
            LayerRange(a, b)
            for (a, b), c in zip(self.segments, self.covering, strict=True)
            if not c
        ]

    def layer_cost(self, n: NodeLoad, need_tokens: int) -> float:
        per_layer = n.layer_latency_ms if n.layer_latency_ms > 0 else DEFAULT_LAYER_MS
        cost = per_layer * (1.0 + n.running / SATURATION_BATCH)
        if n.kv_capacity_tokens > 0 and n.kv_free_tokens < need_tokens:
            cost += KV_FULL_PENALTY_MS
        return cost

    def route(self, request: RouteRequest) -> Route:
        gaps = self.uncovered()
        if gaps:
            raise NotCovered(
                "no node holds layers "
                + ", ".join(map(str, gaps))
                + f" of {self.state.num_layers};"
                " wait for nodes to join or re-allocate"
            )
        avoid = request.avoid
        need = request.prompt_tokens + request.max_tokens
        cpl = [math.inf if n.node_id in avoid else self.layer_cost(n, need) for n in self.nodes]
        prev: dict[int, float] = {}
        back: list[dict[int, int | None]] = []
        for j, (a, b) in enumerate(self.segments):
            best_in_region: dict[str, tuple[float, int]] = {}
            for i, c in prev.items():
                r = self.nodes[i].region
                if r not in best_in_region or c < best_in_region[r][0]:
                    best_in_region[r] = (c, i)
            cur: dict[int, float] = {}
            froms: dict[int, int | None] = {}
            for i in self.covering[j]:
                if cpl[i] == math.inf:
                    continue
                base, src = (prev[i], i) if i in prev else (math.inf, None)
                if j == 0:
                    base, src = 0.0, None
                reg = self.nodes[i].region
                for r, (c, m) in best_in_region.items():
                    v = c + self.rtt[(r, reg)]
                    if v < base:
                        base, src = v, m
                if base < math.inf:
                    cur[i] = base + (b - a) * cpl[i]
                    froms[i] = src
            if not cur:
                raise NotCovered(
                    f"every node holding layers [{a},{b}) is excluded for request "
                    f"{request.request_id}; retry when another replica is up"
                )
            prev = cur
            back.append(froms)
        last = min(prev, key=lambda i: (prev[i], i))
        picks = [last]
        for j in range(len(self.segments) - 1, 0, -1):
            src = back[j][picks[-1]]
            picks.append(src if src is not None else picks[-1])
        picks.reverse()
        return Route(hops=self._hops(picks))

    def _hops(self, picks: list[int]) -> tuple[Hop, ...]:
        hops: list[Hop] = []
        for i, (a, b) in zip(picks, self.segments, strict=True):
            n = self.nodes[i]
            if hops and hops[-1].node_id == n.node_id:
                hops[-1] = Hop(n.node_id, n.address, LayerRange(hops[-1].range.start, b))
            else:
                hops.append(Hop(n.node_id, n.address, LayerRange(a, b)))
        return tuple(hops)


def route(request: RouteRequest, state: ClusterState) -> Route:
    """The cheapest complete chain for `request`; raises NotCovered if none exists."""
    return Router(state).route(request)
