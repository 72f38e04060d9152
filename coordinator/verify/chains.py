"""Chains for spot checks: pure functions over the router's `ClusterState`.

A check runs one greedy request down two chains that cover the model and compares
what they generate. `pick_pair` chooses them: chain A runs the node under focus over
its whole range; chain B never uses it and, where the cluster allows, no node of A
either (then any disagreement is between disjoint sets of machines). Where two chains
disagree, `segments` names the layer spans where they use different nodes and `swap`
builds the chains that try one span on another holder (coordinator/verify/attribute.py).

Hops may run any part of a node's range, so every route here is a cheapest cover of
the layers with candidate cuts at range boundaries: a cover that cuts elsewhere can
move each cut to the end of the hop before it without changing the nodes it uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coordinator.scheduler.types import ClusterState, Hop, NodeLoad, Route
from parallax.types import LayerRange, NodeId

# A discouraged node costs this many ordinary hops: taken only where nothing else covers.
DISCOURAGED_COST = 1000
# Nodes that could serve on either side of the focus, each tried on both: 2**this covers.
MAX_SIDE_SWAPS = 6


@dataclass(frozen=True)
class Pair:
    """Two chains to compare; `focus` is the node A runs and B avoids."""

    focus: NodeId
    a: Route
    b: Route

    @property
    def shared(self) -> frozenset[NodeId]:
        return nodes_of(self.a) & nodes_of(self.b)


@dataclass(frozen=True)
class Segment:
    """Layers [start, end) that chain A runs on `a_node` and chain B on `b_node`."""

    start: int
    end: int
    a_node: NodeId
    b_node: NodeId


def nodes_of(route: Route) -> frozenset[NodeId]:
    return frozenset(h.node_id for h in route.hops)


def cover(
    nodes: Sequence[NodeLoad],
    lo: int,
    hi: int,
    *,
    forbid: Iterable[NodeId] = (),
    discourage: Iterable[NodeId] = (),
) -> tuple[Hop, ...] | None:
    """The cheapest hops covering layers [lo, hi) in order (one per hop, a discouraged
    node `DISCOURAGED_COST`), never a forbidden node; None when no cover exists.

    One pass over the candidate cuts in order: `best[n]` is the cheapest way to reach
    any cut inside n's range seen so far, so a cut's cost is a minimum over the nodes
    that reach it. O(cuts x nodes); ties go to the lower node id (deterministic).
    """
    if lo >= hi:
        return ()
    banned, costly = set(forbid), set(discourage)
    usable = sorted(
        (n for n in nodes if n.node_id not in banned and n.range.start < hi and n.range.end > lo),
        key=lambda n: n.node_id,
    )
    cuts = sorted(
        {lo, hi} | {c for n in usable for c in (n.range.start, n.range.end) if lo < c < hi}
    )
    inf = float("inf")
    dist = {lo: 0.0}
    back: dict[int, tuple[int, NodeLoad]] = {}  # cut -> (previous cut, node of the hop)
    best: dict[NodeId, tuple[float, int]] = {}  # node -> (cheapest cut cost, that cut)

    def offer(cut: int, cost: float) -> None:
        for n in usable:
            if n.range.start <= cut < n.range.end and cost < best.get(n.node_id, (inf, 0))[0]:
                best[n.node_id] = (cost, cut)

    offer(lo, 0.0)
    for cut in cuts[1:]:
        choice: tuple[float, int, NodeLoad] | None = None
        for n in usable:
            if n.range.start < cut <= n.range.end and n.node_id in best:
                base, at = best[n.node_id]
                cost = base + (DISCOURAGED_COST if n.node_id in costly else 1)
                if choice is None or cost < choice[0]:
                    choice = (cost, at, n)
        if choice is None:
            continue
        dist[cut] = choice[0]
        back[cut] = (choice[1], choice[2])
        offer(cut, choice[0])
    if hi not in dist:
        return None
    hops: list[Hop] = []
    at = hi
    while at != lo:
        prev, n = back[at]
        hops.append(Hop(n.node_id, n.address, LayerRange(prev, at)))
        at = prev
    return tuple(reversed(hops))


def chain_through(
    state: ClusterState, focus: NodeLoad, *, discourage: Iterable[NodeId] = ()
) -> Route | None:
    """A cheapest chain that runs `focus` over its whole range; no node twice."""
    costly = set(discourage)

    def price(hops: tuple[Hop, ...]) -> int:
        return sum(DISCOURAGED_COST if h.node_id in costly else 1 for h in hops)

    def best(ban_head: frozenset[NodeId], ban_tail: frozenset[NodeId], depth: int):
        head = cover(state.nodes, 0, focus.range.start, forbid=ban_head, discourage=costly)
        tail = cover(
            state.nodes, focus.range.end, state.num_layers, forbid=ban_tail, discourage=costly
        )
        if head is None or tail is None:
            return None
        both = sorted({h.node_id for h in head} & {h.node_id for h in tail})
        if not both:
            return head, tail
        if depth == 0:
            return None
        # Only a node spanning the focus's whole range can be on both sides: it goes
        # on one side or the other, whichever is cheaper.
        options = [
            best(ban_head | {both[0]}, ban_tail, depth - 1),
            best(ban_head, ban_tail | {both[0]}, depth - 1),
        ]
        found = [o for o in options if o is not None]
        return min(found, key=lambda o: price(o[0]) + price(o[1])) if found else None

    ban = frozenset({focus.node_id})
    found = best(ban, ban, MAX_SIDE_SWAPS)
    if found is None:
        return None
    head, tail = found
    return Route((*head, Hop(focus.node_id, focus.address, focus.range), *tail))


def chain_around(
    state: ClusterState, avoid: NodeId, *, discourage: Iterable[NodeId] = ()
) -> Route | None:
    """A cheapest chain that never uses `avoid`."""
    hops = cover(state.nodes, 0, state.num_layers, forbid={avoid}, discourage=discourage)
    return None if hops is None else Route(hops)


def pick_pair(state: ClusterState, focus: NodeId) -> Pair | None:
    """Two chains that differ on every layer `focus` holds, sharing as few nodes as the
    cluster allows (none where it can); None when no node but `focus` holds some of
    its layers."""
    node = next((n for n in state.nodes if n.node_id == focus), None)
    if node is None:
        return None
    a = chain_through(state, node)
    b = chain_around(state, focus, discourage=nodes_of(a)) if a is not None else None
    if a is None or b is None:
        return None
    best = Pair(focus, a, b)
    if best.shared:
        # A's other hops may have taken the only nodes B could use: choose B first.
        b2 = chain_around(state, focus)
        a2 = chain_through(state, node, discourage=nodes_of(b2)) if b2 is not None else None
        if a2 is not None and b2 is not None and len(Pair(focus, a2, b2).shared) < len(best.shared):
            best = Pair(focus, a2, b2)
    return best


def owners(route: Route, num_layers: int) -> list[NodeId]:
    """The node that runs each layer on `route`."""
    out: list[NodeId] = [NodeId("")] * num_layers
    for h in route.hops:
        for layer in range(h.range.start, h.range.end):
            out[layer] = h.node_id
    return out


def segments(a: Route, b: Route, num_layers: int) -> list[Segment]:
    """Maximal spans where the two chains run the layers on different nodes."""
    out: list[Segment] = []
    for layer, (x, y) in enumerate(zip(owners(a, num_layers), owners(b, num_layers), strict=True)):
        if x == y:
            continue
        last = out[-1] if out else None
        if last is not None and last.end == layer and (last.a_node, last.b_node) == (x, y):
            out[-1] = Segment(last.start, layer + 1, x, y)
        else:
            out.append(Segment(layer, layer + 1, x, y))
    return out


def swap(route: Route, start: int, end: int, node: NodeLoad, num_layers: int) -> Route | None:
    """`route` with layers [start, end) run on `node` instead; None when that would put
    `node` on two separate hops (a node takes one hop per request)."""
    if not node.range.covers(LayerRange(start, end)):
        return None
    addresses = {h.node_id: h.address for h in route.hops} | {node.node_id: node.address}
    layer_owner = owners(route, num_layers)
    layer_owner[start:end] = [node.node_id] * (end - start)
    hops: list[Hop] = []
    for layer, nid in enumerate(layer_owner):
        if hops and hops[-1].node_id == nid:
            hops[-1] = Hop(nid, addresses[nid], LayerRange(hops[-1].range.start, layer + 1))
        else:
            hops.append(Hop(nid, addresses[nid], LayerRange(layer, layer + 1)))
    if len({h.node_id for h in hops}) != len(hops):
        return None
    return Route(tuple(hops))


def holders(state: ClusterState, start: int, end: int, exclude: Iterable[NodeId]) -> list[NodeLoad]:
    """Nodes holding all of [start, end), but not the excluded ones, by id."""
    out = set(exclude)
    want = LayerRange(start, end)
    return sorted(
        (n for n in state.nodes if n.node_id not in out and n.range.covers(want)),
        key=lambda n: n.node_id,
    )
