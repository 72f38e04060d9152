"""Phase 2: pick a chain of nodes for one request over live load and RTTs.

A chain is a list of hops that covers layers [0, L) once, in order; a hop runs a
contiguous part of one node's range, so it may use a prefix or suffix of the node's
range, and chains stitch across replicas whose boundaries do not line up.

Cost of a chain, in ms per token: for each hop, its layers x the node's per-layer
step time inflated by its load (`1 + running / saturation`; plus a large penalty per
layer on a node that reports too little free KV for the request, and +inf on a node
the request must avoid), plus the RTT between consecutive nodes. Pairwise RTTs are
folded into a region x region matrix.

The router finds the cheapest chain: a shortest path over (cut, region) states, cuts
being the range boundaries. A hop from cut p to cut q in region r costs its layers x
the per-layer cost of the cheapest node of r that holds them all; that table, for
every p, q and r, comes from the cheapest member of each (range, region) group. The
search relaxes one more hop per round from the states the last round improved,
skipping states that cannot beat the best complete chain found so far, so a decision
takes about as many rounds as the best chain has hops: a few tenths of a millisecond
at a thousand nodes. It is exact up to float32 rounding (chains within about 1e-5 of
each other's cost are ties). `RouteIndex` holds what changes only with the topology.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from statistics import fmean

import numpy as np

from coordinator.scheduler.route_index import COST_DTYPE, RouteIndex, TopologyKey, topology_key
from coordinator.scheduler.types import HOP_WAIT_STEPS, ClusterState, Hop, Route, RouteRequest
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
INDEXES_KEPT = 4  # topologies whose index `route` keeps for the next request
# The wait is per node, which breaks the shared per-layer minimum behind the fast hop
# table: up to this many (range, region) groups the table is built group by group
# (about 3 us each); beyond, the wait is left out and routing stays sub-millisecond.
EXACT_WAIT_GROUPS = 128


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


def _prefix_min(a: np.ndarray) -> np.ndarray:
    """Running minimum along axis 0 by doubling: log2(len) elementwise passes, where
    `np.minimum.accumulate` walks the axis one row at a time."""
    b = np.empty_like(a)
    d = 1
    while d < len(a):
        np.minimum(a[d:], a[:-d], out=b[d:])
        b[:d] = a[:d]
        a, b, d = b, a, 2 * d
    return a


class Router:
    """The loads of one `ClusterState` over the index of its topology; reuse it for
    many requests against the same state, and `with_loads` for a newer state."""

    def __init__(self, state: ClusterState, index: RouteIndex | None = None) -> None:
        # A given index must be of this state's topology (`index.matches(state)`).
        t = _table_for(state, index)
        self.index = ix = t.index
        self.state = state
        self.nodes, self.ids, self.rtt = t.nodes, ix.ids, t.rtt
        running = t.running
        if state.running_floor:
            running = running.copy()
            for nid, k in state.running_floor.items():
                i = ix.position.get(nid)
                if i is not None and k > running[i]:
                    running[i] = k
        self.load_ms = t.base * (1.0 + running / t.saturation)
        self.kv_free, self.kv_known = t.kv_free, t.kv_known
        # Layers' worth of per-layer cost a hop onto each node waits (id order).
        self.with_wait = len(ix.group_starts) <= EXACT_WAIT_GROUPS
        held = (ix.cuts[ix.hi] - ix.cuts[ix.lo]).astype(float)
        self.wait_layers = HOP_WAIT_STEPS * held if self.with_wait else np.zeros(len(held))

    @property
    def segments(self) -> list[tuple[int, int]]:
        """Layers cut at every range boundary."""
        return self.index.segments

    def with_loads(self, state: ClusterState) -> Router:
        """A router for `state`, reusing this index when the topology is the same."""
        same = state.nodes is self.state.nodes or self.index.matches(state)
        return Router(state, self.index if same else None)

    def uncovered(self) -> list[LayerRange]:
        return list(self.index.gaps)

    def layer_costs(self, request: RouteRequest) -> np.ndarray:
        """Per-layer ms of every node (id order) for this request."""
        need = request.prompt_tokens + request.max_tokens
        cost = self.load_ms + np.where(self.kv_known & (self.kv_free < need), KV_FULL_PENALTY_MS, 0)
        if request.avoid:
            pos = self.index.position
            cost[[pos[nid] for nid in request.avoid if nid in pos]] = math.inf
        return cost

    def hop_costs(self, cpl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`W[p, q, r]`: ms of a hop over cuts [p, q) on the cheapest node of region r
        holding all of it (its wait included); +inf where none does or q <= p. And a
        floor per segment for the search: its layers on the cheapest node holding it,
        without RTT or wait, a lower bound on what any chain pays for it."""
        ix = self.index
        K, R = len(ix.cuts), len(ix.regions)
        cheapest = np.minimum.reduceat(cpl[ix.order], ix.group_starts)
        if self.with_wait:
            return self._hop_costs_with_wait(cheapest)
        w = np.full((K, K, R), math.inf, dtype=COST_DTYPE)  # [K-1-hi, lo, region]
        w[K - 1 - ix.g_hi, ix.g_lo, ix.g_region] = cheapest
        w = _prefix_min(w)[::-1]  # [q, lo, r]: cheapest with hi >= q
        w = _prefix_min(np.ascontiguousarray(w.transpose(1, 0, 2)))  # [p, q, r]: lo <= p
        w = w * ix.span + ix.forbid
        seg = np.arange(K - 1)
        return w, w[seg, seg + 1].min(axis=1)

    def _hop_costs_with_wait(self, cheapest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`hop_costs` group by group: c x (layers of the hop + layers of the wait)."""
        ix = self.index
        K, R = len(ix.cuts), len(ix.regions)
        w = np.full((K, K, R), math.inf, dtype=COST_DTYPE)
        per_layer = np.full(K - 1, math.inf)
        span = ix.span[:, :, 0]
        waits = HOP_WAIT_STEPS * (ix.cuts[ix.g_hi] - ix.cuts[ix.g_lo])
        groups = zip(
            cheapest.tolist(), ix.g_lo.tolist(), ix.g_hi.tolist(), ix.g_region.tolist(), strict=True
        )
        for (c, lo, hi, r), wait in zip(groups, waits.tolist(), strict=True):
            block = w[lo : hi + 1, lo : hi + 1, r]
            np.minimum(block, c * (span[lo : hi + 1, lo : hi + 1] + wait), out=block)
            np.minimum(per_layer[lo:hi], c, out=per_layer[lo:hi])
        return w + ix.forbid, per_layer * np.diff(ix.cuts)

    def route(self, request: RouteRequest) -> Route:
        ix = self.index
        if ix.gaps:
            raise NotCovered(
                "no node holds layers "
                + ", ".join(map(str, ix.gaps))
                + f" of {ix.num_layers}; wait for nodes to join or re-allocate"
            )
        cpl = self.layer_costs(request)
        w, floor = self.hop_costs(cpl)
        best = self._search(w, floor)
        if not np.isfinite(best[-1]).any():
            raise NotCovered(self._excluded(cpl, request))
        return Route(self._hops(self._backtrack(w, best), cpl))

    def _entry(self, best: np.ndarray) -> np.ndarray:
        """`E[p, r]`: cheapest chain over [0, cut p) plus the RTT into region r."""
        e = (best[:, :, None] + self.rtt).min(axis=1)
        e[0] = 0.0  # the first hop: no RTT in
        return e

    def _search(self, w: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """`best[q, r]`: cheapest chain over [0, cut q) whose last hop is in region r.

        Bellman-Ford in rounds, a round one hop more, from the cuts whose cost the
        last round improved. A state is dropped when its cost plus a lower bound on
        the rest of the chain (each later segment on its cheapest node, no RTT) is no
        better than the best complete chain so far: it cannot improve on that. Costs
        are positive, so rounds stop once the best chain's hops are all relaxed."""
        best = w[0].copy()
        rest = np.append(np.cumsum(floor[::-1])[::-1], 0.0)[:, None]
        rows = np.flatnonzero(np.isfinite(best[:-1]).any(axis=1))
        while len(rows):
            entry = (best[rows, :, None] + self.rtt).min(axis=1)
            entry[entry + rest[rows] >= best[-1].min()] = math.inf
            new = (w[rows] + entry[:, None, :]).min(axis=0)
            rows = np.flatnonzero((new[:-1] < best[:-1]).any(axis=1))
            np.minimum(best, new, out=best)
        return best

    def _backtrack(self, w: np.ndarray, best: np.ndarray) -> list[tuple[int, int, int]]:
        """(start cut, end cut, region) of every hop, first to last."""
        entry = self._entry(best)
        q, r = len(best) - 1, int(np.argmin(best[-1]))
        hops = []
        while True:
            p = int(np.argmin(entry[:, r] + w[:, q, r]))
            hops.append((p, q, r))
            if p == 0:
                return hops[::-1]
            q, r = p, int(np.argmin(best[p] + self.rtt[:, r]))

    def _hops(self, picks: list[tuple[int, int, int]], cpl: np.ndarray) -> tuple[Hop, ...]:
        ix, hops = self.index, list[Hop]()
        for p, q, r in picks:
            fits = (ix.lo <= p) & (ix.hi >= q) & (ix.region_of == r)
            a, b = int(ix.cuts[p]), int(ix.cuts[q])
            cost = cpl * ((b - a) + self.wait_layers)  # as the hop table priced it
            n = self.nodes[int(np.argmin(np.where(fits, cost, math.inf)))]
            if hops and hops[-1].node_id == n.node_id:
                a = hops.pop().range.start
            hops.append(Hop(n.node_id, n.address, LayerRange(a, b)))
        return tuple(hops)

    def _excluded(self, cpl: np.ndarray, request: RouteRequest) -> str:
        ix = self.index
        usable = np.isfinite(cpl) & (ix.lo < ix.hi)
        depth = np.zeros(len(ix.cuts), dtype=np.int64)
        np.add.at(depth, ix.lo[usable], 1)
        np.add.at(depth, ix.hi[usable], -1)
        j = int(np.argmin(np.cumsum(depth)[:-1] > 0))
        return (
            f"every node holding layers [{ix.cuts[j]},{ix.cuts[j + 1]}) is excluded for "
            f"request {request.request_id}; retry when another replica is up"
        )


_indexes: OrderedDict[TopologyKey, RouteIndex] = OrderedDict()
_indexes_lock = threading.Lock()


class _Table:
    """What a router reads from one `nodes` tuple and `rtt_ms` map, in the index's id
    order: kept per state object, since a gateway routes many requests against the
    same registry state and re-reading a thousand nodes costs more than routing."""

    def __init__(self, state: ClusterState, index: RouteIndex) -> None:
        self.pinned = (state.nodes, state.rtt_ms)  # keeps the ids in the cache key alive
        self.index = ix = index
        self.nodes = [state.nodes[i] for i in ix.perm]
        rtt = region_rtts(state)
        self.rtt = np.array(
            [[rtt[(a, b)] for b in ix.regions] for a in ix.regions], dtype=COST_DTYPE
        ).reshape(len(ix.regions), len(ix.regions))
        n = np.array(
            [
                (
                    x.layer_latency_ms,
                    x.running,
                    x.layer_tokens_per_s,
                    x.kv_free_tokens,
                    x.kv_capacity_tokens,
                )
                for x in self.nodes
            ],
            dtype=float,
        ).reshape(-1, 5)
        self.base = np.where(n[:, 0] > 0, n[:, 0], DEFAULT_LAYER_MS)
        # Sequences a node serves before its per-token time grows: its capacity times its
        # idle latency (Little's law), or a typical batch when capacity is unknown.
        self.saturation = np.where(
            n[:, 2] > 0, np.maximum(1.0, n[:, 2] * self.base / 1e3), SATURATION_BATCH
        )
        self.running = n[:, 1]
        self.kv_free = n[:, 3]
        self.kv_known = n[:, 4] > 0


_tables: OrderedDict[tuple[int, int], _Table] = OrderedDict()


def _table_for(state: ClusterState, index: RouteIndex | None) -> _Table:
    key = (id(state.nodes), id(state.rtt_ms))
    with _indexes_lock:
        table = _tables.get(key)
        if table is not None:
            _tables.move_to_end(key)
            return table
    table = _Table(state, index if index is not None else index_for(state))
    with _indexes_lock:
        _tables[key] = table
        while len(_tables) > INDEXES_KEPT:
            _tables.popitem(last=False)
    return table


def index_for(state: ClusterState) -> RouteIndex:
    """The index of `state`'s topology, kept across calls: a memo, built only when the
    nodes, their ranges or regions change (not their loads)."""
    key = topology_key(state)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is not None:
            _indexes.move_to_end(key)
            return index
    index = RouteIndex(state, key)
    with _indexes_lock:
        _indexes[key] = index
        while len(_indexes) > INDEXES_KEPT:
            _indexes.popitem(last=False)
    return index


def route(request: RouteRequest, state: ClusterState) -> Route:
    """The cheapest complete chain for `request`; raises NotCovered if none exists."""
    return Router(state, index_for(state)).route(request)
