"""Re-covering a gap left by a departed node, moving as few layers as possible.

A gap is fixed by the cheapest of: a standby node or a redundant one (one whose layers
others also hold) moving in, a neighbour extending its range, or the layers of the broken
pipeline's nearby survivors re-apportioned by speed; a fix that reloads more must win by
the rebalance threshold (hysteresis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.scheduler.apportion import bounds, water_fill
from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import Assignments, Held, NodeCapacity
from parallax.types import LayerRange, NodeId

# Windows scored by the cheap capacity profile before the full estimate ranks the best few.
SHORTLIST = 6


def layers_reloaded(
    before: Mapping[NodeId, LayerRange | None], after: Mapping[NodeId, LayerRange | None]
) -> int:
    """Layers some node must load that it did not hold before."""
    total = 0
    for nid, r in after.items():
        if r is None:
            continue
        old = before.get(nid)
        total += len(r) - (len(old.intersect(r)) if old and old.intersect(r) else 0)
    return total


def fits(perf: PerfModel, node: NodeCapacity, r: LayerRange) -> bool:
    return perf.mem.at(node).fits(node.memory_bytes, r)


def throughput(assign: Assignments, nodes: Sequence[NodeCapacity], perf: PerfModel) -> float:
    return estimate(assign, nodes, perf).throughput_tok_s


def holders_held(assign: Assignments, by_id: Mapping[NodeId, NodeCapacity]) -> Held:
    return [(by_id[n], r) for n, r in assign.items() if r is not None]


def gaps(assign: Assignments, num_layers: int) -> list[LayerRange]:
    count = [0] * (num_layers + 1)
    for r in assign.values():
        if r is not None:
            count[r.start] += 1
            count[min(r.end, num_layers)] -= 1
    out, acc, start = [], 0, None
    for layer in range(num_layers):
        acc += count[layer]
        if acc == 0 and start is None:
            start = layer
        if acc > 0 and start is not None:
            out.append(LayerRange(start, layer))
            start = None
    if start is not None:
        out.append(LayerRange(start, num_layers))
    return out


def redundant(assign: Assignments, nid: NodeId, num_layers: int) -> bool:
    """Others hold every layer this node holds. Compared against today's gaps, not none:
    while a gap is open no node would otherwise count, and packed (overlapping) spans
    have spare nodes that can move into it."""
    others = {n: r for n, r in assign.items() if n != nid}
    return gaps(others, num_layers) == gaps(assign, num_layers)


def gap_fixes(
    assign: Assignments, gap: LayerRange, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> list[Assignments]:
    """Each candidate fix of one gap, cheapest reload first."""
    L = perf.num_layers
    fixes: list[tuple[int, Assignments]] = []
    for n in nodes:
        r = assign.get(n.node_id)
        options: list[LayerRange] = []
        if r is None or redundant(assign, n.node_id, L):
            options.append(gap)  # a standby or redundant node moves into the gap
        if r is not None and r.end == gap.start:
            options.append(LayerRange(r.start, gap.end))  # left neighbour extends
        if r is not None and r.start == gap.end:
            options.append(LayerRange(gap.start, r.end))  # right neighbour extends
        for new in options:
            if fits(perf, n, new):
                fixed = {**assign, n.node_id: new}
                fixes.append((layers_reloaded(assign, fixed), fixed))
    fixes.sort(key=lambda x: x[0])
    return [f for _c, f in fixes]


def chain_through(assign: Assignments, gap: LayerRange, window: int | None = None) -> list[NodeId]:
    """The nodes that meet end to start on either side of a gap: its broken pipeline."""
    most = window or len(assign)
    left: list[NodeId] = []
    at = gap.start
    while at > 0 and len(left) < most:
        prev = sorted(n for n, r in assign.items() if r and r.end == at and n not in left)
        if not prev:
            break
        left.insert(0, prev[0])
        at = assign[prev[0]].start  # type: ignore[union-attr]
    right: list[NodeId] = []
    at = gap.end
    while at < max((r.end for r in assign.values() if r), default=0) and len(right) < most:
        nxt = sorted(n for n, r in assign.items() if r and r.start == at and n not in right)
        if not nxt:
            break
        right.append(nxt[0])
        at = assign[nxt[0]].end  # type: ignore[union-attr]
    return left + right


def reapportion_fix(
    assign: Assignments,
    gap: LayerRange,
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
    window: int | None = None,
) -> Assignments | None:
    """Re-apportion, by speed, the broken pipeline's nodes nearest the gap (`window` on
    each side, or all) over their span plus the gap: wider windows balance better and
    reload more."""
    by_id = {n.node_id: n for n in nodes}
    chain = chain_through(assign, gap, window)
    if not chain:
        return None
    lo = min(assign[n].start for n in chain)  # type: ignore[union-attr]
    hi = max(assign[n].end for n in chain)  # type: ignore[union-attr]
    lo, hi = min(lo, gap.start), max(hi, gap.end)
    order = [by_id[n] for n in chain]
    caps = [
        perf.mem.at(n).max_layers(
            n.memory_bytes,
            first=lo == 0 and i == 0,
            last=hi == perf.num_layers and i == len(order) - 1,
        )
        for i, n in enumerate(order)
    ]
    counts = water_fill(hi - lo, [perf.speed(n) for n in order], caps)
    if counts is None:
        return None
    fixed = dict(assign)
    for n, (a, b) in zip(order, bounds(counts, lo), strict=True):
        fixed[n.node_id] = LayerRange(a, b)
    if not all(fits(perf, by_id[n], fixed[n]) for n in chain):  # type: ignore[arg-type]
        return None
    return fixed


WINDOWS = (1, 2, 4, None)


def ladder(
    assign: Assignments, fixes: list[Assignments], nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assignments:
    """From the cheapest fix up: a fix that reloads more layers must beat the one chosen so
    far by the rebalance threshold. Hysteresis, so small gains never move layers."""
    scored = sorted(
        ((layers_reloaded(assign, f), -throughput(f, nodes, perf), i) for i, f in enumerate(fixes))
    )
    gain = perf.options.rebalance_gain
    _cost, neg_thr, pick = scored[0]
    for _c, t, i in scored[1:]:
        if -t > -neg_thr * (1 + gain):
            neg_thr, pick = t, i
    return fixes[pick]


def mend_pipeline(
    assign: Assignments, lost: LayerRange, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assignments:
    """A departed node's range may still be held by replicas, but its pipeline is broken
    and those layers are now a bottleneck: re-apportion survivors nearby when that gains
    enough."""
    if gaps(assign, perf.num_layers):
        # Nobody holds some layers: `repair` fixes gaps at the least reload; re-apportioning
        # here would always win (anything beats a gap's zero throughput) and move more.
        return assign
    fixes = [assign] + [f for w in WINDOWS if (f := reapportion_fix(assign, lost, nodes, perf, w))]
    return ladder(assign, fixes, nodes, perf)


def repair(
    assign: Assignments, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assignments | None:
    """Cover every gap: the fewest reloaded layers, unless a fix that reloads more (its
    broken pipeline re-apportioned over nearby survivors) is better by the rebalance
    threshold."""
    for gap in gaps(assign, perf.num_layers):
        fixes = gap_fixes(assign, gap, nodes, perf)[:SHORTLIST]
        fixes += [f for w in WINDOWS if (f := reapportion_fix(assign, gap, nodes, perf, w))]
        if not fixes:
            return None
        assign = ladder(assign, fixes, nodes, perf)
    return assign
