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

import numpy as np

from coordinator.scheduler.types import ClusterState, Hop, NodeLoad, Route, RouteRequest
from parallax.errors import NotCovered
from parallax.types import LayerRange

# A node decoding this many sequences at once is about twice as slow per token as an
# idle one (decode is memory-bound below it); load beyond it queues.
SATURATION_BATCH = 16.0
DEFAULT_LAYER_MS = 1.0
SAME_REGION_RTT_MS = 1.0
CROSS_REGION_RTT_MS = 100.0
# Above this many segments (misaligned replicas in a big cluster) a request takes the
# cheapest whole pipeline when one is usable: one vectorised sum instead of a DP pass
# per segment, under a millisecond at a thousand nodes. Only when the whole pipelines
# hold every node: with overlapping spans most nodes sit in no lane, and lanes alone
# would leave them idle (the simulator showed half a 64-node pool unused).
DP_MAX_SEGMENTS = 24
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
    """Index of one `ClusterState`; reuse it for many requests against the same state.

    The per-request work is vectorised with numpy: costs of every node at once, then
    one pass over the segments (at most num_layers of them)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.nodes: Sequence[NodeLoad] = sorted(state.nodes, key=lambda n: n.node_id)
        L = state.num_layers
        cuts = {0, L}
        for n in self.nodes:
            cuts.update(x for x in (n.range.start, n.range.end) if 0 <= x <= L)
        self.cuts = sorted(cuts)
        self.segments = list(zip(self.cuts, self.cuts[1:], strict=False))
        covering: list[list[int]] = [[] for _ in self.segments]
        seg_at = {a: j for j, (a, _b) in enumerate(self.segments)}
        for i, n in enumerate(self.nodes):
            j = seg_at.get(n.range.start)
            while j is not None and j < len(self.segments) and self.segments[j][1] <= n.range.end:
                covering[j].append(i)
                j += 1
        self.covering = [np.array(c, dtype=np.int64) for c in covering]
        self.seg_len = [b - a for a, b in self.segments]
        self.regions = sorted({n.region for n in self.nodes})
        rindex = {r: k for k, r in enumerate(self.regions)}
        self.region_of = np.array([rindex[n.region] for n in self.nodes], dtype=np.int64)
        rtt = region_rtts(state)
        self.rtt = np.array([[rtt[(a, b)] for b in self.regions] for a in self.regions])
        self.base_ms = np.array(
            [n.layer_latency_ms if n.layer_latency_ms > 0 else DEFAULT_LAYER_MS for n in self.nodes]
        )
        self.running = np.array([n.running for n in self.nodes], dtype=float)
        # Sequences a node serves before its per-token time grows: its capacity times its
        # idle latency (Little's law), or a typical batch when capacity is unknown.
        self.saturation = np.array(
            [
                max(1.0, n.layer_tokens_per_s * base / 1e3)
                if n.layer_tokens_per_s > 0
                else SATURATION_BATCH
                for n, base in zip(self.nodes, self.base_ms, strict=True)
            ]
        )
        self.kv_free = np.array([n.kv_free_tokens for n in self.nodes], dtype=float)
        self.kv_known = np.array([n.kv_capacity_tokens > 0 for n in self.nodes])
        self.ids = [n.node_id for n in self.nodes]
        self._blank = np.full(len(self.nodes), math.inf)
        self._index_lanes()

    def _index_lanes(self) -> None:
        """Whole pipelines (nodes meeting end to start from 0 to L), for big clusters:
        pricing every lane at once is one vectorised sum, where the segment DP needs a
        pass per segment."""
        L = self.state.num_layers
        by_start: dict[int, list[int]] = {}
        for i, n in enumerate(self.nodes):
            by_start.setdefault(n.range.start, []).append(i)
        used: set[int] = set()
        lanes: list[list[int]] = []
        for first in by_start.get(0, []):
            lane, at = [first], self.nodes[first].range.end
            region = self.nodes[first].region
            while at < L:
                nxt = [i for i in by_start.get(at, []) if i not in used and i not in lane]
                if not nxt:
                    break
                same = [i for i in nxt if self.nodes[i].region == region]
                lane.append((same or nxt)[0])
                at = self.nodes[lane[-1]].range.end
            if at >= L:
                lanes.append(lane)
                used.update(lane)
        self.lanes = lanes
        self.lanes_hold_all = len(used) == len(self.nodes)
        flat = [i for lane in lanes for i in lane]
        self.lane_nodes = np.array(flat, dtype=np.int64)
        self.lane_len = np.array([len(self.nodes[i].range) for i in flat], dtype=float)
        self.lane_starts = np.cumsum([0] + [len(x) for x in lanes[:-1]]).astype(np.int64)
        self.lane_link_ms = np.array(
            [
                sum(
                    self.rtt[self.region_of[a], self.region_of[b]]
                    for a, b in zip(lane, lane[1:], strict=False)
                )
                for lane in lanes
            ]
        )

    def best_lane(self, cpl: np.ndarray) -> int | None:
        if not self.lanes:
            return None
        per_node = cpl[self.lane_nodes] * self.lane_len
        cost = np.add.reduceat(per_node, self.lane_starts) + self.lane_link_ms
        k = int(np.argmin(cost))
        return k if np.isfinite(cost[k]) else None

    def uncovered(self) -> list[LayerRange]:
        return [
            LayerRange(a, b)
            for (a, b), c in zip(self.segments, self.covering, strict=True)
            if not len(c)
        ]

    def layer_costs(self, request: RouteRequest) -> np.ndarray:
        need = request.prompt_tokens + request.max_tokens
        cost = self.base_ms * (1.0 + self.running / self.saturation)
        cost = cost + np.where(self.kv_known & (self.kv_free < need), KV_FULL_PENALTY_MS, 0.0)
        if request.avoid:
            cost[[i for i, nid in enumerate(self.ids) if nid in request.avoid]] = math.inf
        return cost

    def route(self, request: RouteRequest) -> Route:
        gaps = self.uncovered()
        if gaps:
            raise NotCovered(
                "no node holds layers "
                + ", ".join(map(str, gaps))
                + f" of {self.state.num_layers}; wait for nodes to join or re-allocate"
            )
        cpl = self.layer_costs(request)
        if len(self.segments) > DP_MAX_SEGMENTS and self.lanes_hold_all:
            lane = self.best_lane(cpl)
            if lane is not None:
                n = self.nodes
                return Route(
                    tuple(Hop(n[i].node_id, n[i].address, n[i].range) for i in self.lanes[lane])
                )
        n_regions = len(self.regions)
        prev_cost = np.full(len(self.nodes), math.inf)
        prev_c = np.empty(0, dtype=np.int64)
        back: list[tuple[np.ndarray, np.ndarray]] = []
        for j, cand in enumerate(self.covering):
            step = self.seg_len[j] * cpl[cand]
            if j == 0:
                total, src = step, cand.copy()
            else:
                cont = prev_cost[cand]
                vals = prev_cost[prev_c]
                regs = self.region_of[prev_c]
                best_val = np.full(n_regions, math.inf)
                best_src = np.zeros(n_regions, dtype=np.int64)
                if n_regions == 1:
                    k = int(np.argmin(vals))
                    best_val[0], best_src[0] = vals[k], prev_c[k]
                else:
                    for r in range(n_regions):
                        m = np.where(regs == r, vals, math.inf)
                        k = int(np.argmin(m))
                        best_val[r], best_src[r] = m[k], prev_c[k]
                via = best_val[:, None] + self.rtt[:, self.region_of[cand]]
                pick = np.argmin(via, axis=0)
                switch = via[pick, np.arange(len(cand))]
                stay = cont <= switch
                total = np.where(stay, cont, switch) + step
                src = np.where(stay, cand, best_src[pick])
            if not np.isfinite(total).any():
                a, b = self.segments[j]
                raise NotCovered(
                    f"every node holding layers [{a},{b}) is excluded for request "
                    f"{request.request_id}; retry when another replica is up"
                )
            prev_cost = self._blank.copy()
            prev_cost[cand] = total
            prev_c = cand[np.isfinite(total)]
            back.append((cand, src))
        finals = prev_c
        last = int(min(finals.tolist(), key=lambda i: (prev_cost[i], i)))
        picks = [last]
        for j in range(len(self.segments) - 1, 0, -1):
            cand, src = back[j]  # cand is sorted: node indices in id order
            picks.append(int(src[np.searchsorted(cand, picks[-1])]))
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
