"""Packed, overlapping spans: the heuristic's Petals-style candidate.

Every node of a region group holds as many layers as its memory allows after the KV
reserve, fastest nodes first, each at the window of layers with the least speed so
far. Spans overlap instead of tiling; the router stitches chains across them with
prefix and suffix hops, so chains are short (fat nodes, few hops) and stay in the
group's region.

Replicated disjoint pipelines win when nodes are alike and small; this wins when a few
big nodes can each carry a large part of the model. The heuristic scores both with
the performance model and keeps the better.

An aligned packing starts each span where one already placed ends (or at layer 0, or
at the last window, which holds the head), so chains can enter most nodes at their
start and run their whole range. A hop over part of a range is no cheaper for the
engine when a step is memory-bound (it reads the whole range's weights once per step,
and a sequence's KV spans the range), so spans entered only mid-range waste most of
their node; the estimate, which charges a hop its layers alone, cannot see that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import Held, NodeCapacity
from parallax.types import LayerRange


def width_for(node: NodeCapacity, perf: PerfModel, kv_tokens: float) -> int:
    """Most layers the node holds, with the embedding and head if it can (one width then
    serves every position), keeping `kv_tokens` of KV room on each."""
    mem = perf.mem.at(node)
    per_layer = mem.weight_bytes + mem.kv_bytes_per_token * max(kv_tokens, mem.reserve_tokens)
    for first_last in (True, False):
        room = mem.usable(node.memory_bytes) - mem.extras(first_last, first_last)
        k = min(mem.num_layers, int(room // per_layer)) if room > 0 else 0
        if k >= 1:
            return k
    return 0


def span_for(
    node: NodeCapacity,
    perf: PerfModel,
    load: np.ndarray,
    kv_tokens: float = 0.0,
    starts: set[int] | None = None,
) -> LayerRange | None:
    """The node's widest span, at the window whose layers have the least speed so far
    (earliest among equals), among windows beginning at one of `starts` or at either
    end of the model when `starts` is given and one of those fits. A smaller node just
    takes what fits."""
    mem, L = perf.mem.at(node), perf.num_layers
    k = width_for(node, perf, kv_tokens)
    if k < 1:
        return None
    prefix = np.concatenate(([0.0], np.cumsum(load)))
    sums = prefix[k:] - prefix[:-k]  # window a covers [a, a + k)
    for a in (0, L - k):  # the end windows carry the embedding or head
        if not mem.fits(node.memory_bytes, LayerRange(a, a + k)):
            sums[a] = np.inf
    if starts is not None:
        keep = np.full(len(sums), np.inf)
        at = [a for a in starts | {0, L - k} if 0 <= a < len(sums)]
        keep[at] = sums[at]
        if np.isfinite(keep).any():
            sums = keep
    a = int(np.argmin(sums))  # the first of equals
    return None if not np.isfinite(sums[a]) else LayerRange(a, a + k)


def pack(
    nodes: Sequence[NodeCapacity], perf: PerfModel, seqs: float = 0.0, aligned: bool = False
) -> Held | None:
    """Packed spans of one group, each node keeping KV room for `seqs` sequences at the
    mean context (0: the one-context floor only), or None when a layer is left bare.
    `aligned`: each span starts where an earlier one ends, when such a window fits."""
    L = perf.num_layers
    load = np.zeros(L)
    out: Held = []
    kv_tokens = seqs * perf.mean_context
    ends: set[int] | None = {0} if aligned else None
    for n in sorted(nodes, key=lambda n: (-perf.speed(n), n.node_id)):
        r = span_for(n, perf, load, kv_tokens, ends)
        if r is None:
            continue
        if ends is not None:
            ends.add(r.end)
        out.append((n, r))
        load[r.start : r.end] += perf.speed(n) / len(r)
    if not out or float(load.min()) <= 0.0:
        return None
    return out
