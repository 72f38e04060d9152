"""Route-feasible throughput of an allocation: the most tokens/s that chains can carry
from layer 0 to layer L when each node's capacity is shared by every hop it runs.

The router lets a hop run any contiguous part of a node's range (a prefix, a suffix or
a middle part) and chains stitch across nodes whose boundaries do not line up. A unit
of flow then crosses every layer exactly once, so a flow F is routable if and only if
each segment between cuts (range boundaries) can get F x its length in layer-tokens/s
from the nodes holding it, with no node giving more than its capacity in total: a
transportation problem between holders (intervals of segments) and segments. Any such
per-segment split is routable: walk the segments left to right and continue each unit
on the same node while that node still carries it, switching nodes at a cut otherwise.

On intervals that problem is solved exactly by a greedy: take the segments left to
right and serve each from the holders that cover it, the one whose range ends first
before the others (what is not used before a holder's range ends is lost; any other
order can only strand more capacity). The flow is the largest F that passes; the
window bound in `estimate.window_flow` (Hall's condition on contiguous windows only)
is an upper bound on it and exact when no holder's span straddles the tight windows
(plain pipelines and replicas of them). Where a large node overlaps several small
ones the window bound credits the large node's layers to every window it meets, which
no set of routes can use; this flow does not.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from parallax.types import LayerRange

# Bisection stops once the bracket is this small relative to its top: far below the
# performance model's own accuracy.
REL_TOLERANCE = 1e-6


def routable_flow(supply: Sequence[tuple[LayerRange, float]], num_layers: int) -> float:
    """Most tokens/s from layer 0 to `num_layers` when each holder (range, capacity in
    layer-tokens/s) may serve any contiguous parts of its range, capacity shared."""
    holders = [(r.start, min(r.end, num_layers), x) for r, x in supply if x > 0]
    holders = [(s, e, x) for s, e, x in holders if e > s]
    if not holders:
        return 0.0
    cuts = sorted({0, num_layers, *(s for s, _e, _x in holders), *(e for _s, e, _x in holders)})
    index = {c: j for j, c in enumerate(cuts)}
    spans = sorted((index[s], index[e], x) for s, e, x in holders)
    lengths = [b - a for a, b in zip(cuts, cuts[1:], strict=False)]
    # Upper bound: the thinnest single segment (what its holders can give it alone).
    # Lower bound: each holder spreads its capacity evenly over its layers (always
    # routable); it is often close, which saves most of the bisection.
    per_segment = [0.0] * len(lengths)
    per_layer = [0.0] * len(lengths)
    for a, b, x in spans:
        even = x / (cuts[b] - cuts[a])
        for j in range(a, b):
            per_segment[j] += x
            per_layer[j] += even
    hi = min(p / n for p, n in zip(per_segment, lengths, strict=True))
    if hi <= 0:
        return 0.0
    if _feasible(spans, lengths, hi):
        return hi
    lo = min(per_layer)
    while hi - lo > REL_TOLERANCE * hi:
        mid = (lo + hi) / 2
        if _feasible(spans, lengths, mid):
            lo = mid
        else:
            hi = mid
    return lo


def _feasible(spans: list[tuple[int, int, float]], lengths: list[int], flow: float) -> bool:
    """Whether every segment gets `flow` x its length, earliest-ending holder first."""
    heap: list[list[float]] = []  # [end segment index, remaining capacity]
    k = 0
    for j, n in enumerate(lengths):
        while k < len(spans) and spans[k][0] <= j:
            heapq.heappush(heap, [float(spans[k][1]), spans[k][2]])
            k += 1
        need = flow * n
        while need > 0 and heap:
            top = heap[0]
            if top[0] <= j:  # its range ended before this segment: its rest is lost
                heapq.heappop(heap)
                continue
            take = min(top[1], need)
            need -= take
            top[1] -= take
            if top[1] <= 0:
                heapq.heappop(heap)
        if need > 1e-12 * flow * n:
            return False
    return True
