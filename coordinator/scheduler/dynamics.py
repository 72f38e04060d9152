"""Changes to a running allocation: join, leave/crash, rebalance — moving as little as possible.

- Leave: lost layers still held elsewhere stay put; a standby node that fits a departed
  range takes it over; a gap nobody holds is re-covered by the cheapest fix (a standby
  node, a neighbour extending its range, a redundant node moving), counted in layers
  reloaded. Only if none fits is everything re-allocated.
- Join: the newcomer takes the window that raises the estimate most (a whole replica when
  it fits one), nobody else moves; it stands by when it adds nothing.
- Rebalance: a fresh solve replaces the result only when it is `rebalance_gain` better
  (hysteresis: small gains never churn the cluster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.scheduler.estimate import covers_all, estimate
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import Allocation, NodeCapacity
from parallax.types import LayerRange, NodeId

Assign = dict[NodeId, LayerRange | None]
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
    return perf.mem.fits(node.memory_bytes, r)


def throughput(assign: Assign, nodes: Sequence[NodeCapacity], perf: PerfModel) -> float:
    return estimate(assign, nodes, perf).throughput_tok_s


def holders_held(
    assign: Assign, by_id: Mapping[NodeId, NodeCapacity]
) -> list[tuple[NodeCapacity, LayerRange]]:
    return [(by_id[n], r) for n, r in assign.items() if r is not None]


def gaps(assign: Assign, num_layers: int) -> list[LayerRange]:
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


def redundant(assign: Assign, nid: NodeId, num_layers: int) -> bool:
    others = {n: r for n, r in assign.items() if n != nid}
    return not gaps(others, num_layers)


def gap_fixes(
    assign: Assign, gap: LayerRange, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> list[Assign]:
    """Each candidate fix of one gap, cheapest reload first."""
    L = perf.num_layers
    fixes: list[tuple[int, Assign]] = []
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


def chain_through(assign: Assign, gap: LayerRange, window: int | None = None) -> list[NodeId]:
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


def resplit_fix(
    assign: Assign,
    gap: LayerRange,
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
    window: int | None = None,
) -> Assign | None:
    """Re-split the broken pipeline's nodes nearest the gap (`window` on each side, or
    all) over their span plus the gap, by speed: wider windows balance better and
    reload more."""
    from coordinator.scheduler.split import bounds, water_fill

    by_id = {n.node_id: n for n in nodes}
    chain = chain_through(assign, gap, window)
    if not chain:
        return None
    lo = min(assign[n].start for n in chain)  # type: ignore[union-attr]
    hi = max(assign[n].end for n in chain)  # type: ignore[union-attr]
    lo, hi = min(lo, gap.start), max(hi, gap.end)
    order = [by_id[n] for n in chain]
    caps = [
        perf.mem.max_layers(
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
    assign: Assign, fixes: list[Assign], nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assign:
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
    assign: Assign, lost: LayerRange, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assign:
    """A departed node's range may still be held by replicas, but its pipeline is broken
    and those layers are now a bottleneck: re-split survivors nearby when that gains enough."""
    fixes = [assign] + [f for w in WINDOWS if (f := resplit_fix(assign, lost, nodes, perf, w))]
    return ladder(assign, fixes, nodes, perf)


def repair(assign: Assign, nodes: Sequence[NodeCapacity], perf: PerfModel) -> Assign | None:
    """Cover every gap: the fewest reloaded layers, unless a fix that reloads more (its
    broken pipeline re-split over nearby survivors) is better by the rebalance threshold."""
    for gap in gaps(assign, perf.num_layers):
        fixes = gap_fixes(assign, gap, nodes, perf)[:SHORTLIST]
        fixes += [f for w in WINDOWS if (f := resplit_fix(assign, gap, nodes, perf, w))]
        if not fixes:
            return None
        assign = ladder(assign, fixes, nodes, perf)
    return assign


def replace_departed(
    assign: Assign, departed: Sequence[LayerRange], nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assign:
    """A standby node that fits a departed node's range takes it over (fastest first)."""
    standby = sorted(
        (n for n in nodes if assign.get(n.node_id) is None),
        key=lambda n: (-perf.speed(n), n.node_id),
    )
    for r in sorted(departed):
        for n in standby:
            if fits(perf, n, r):
                assign = {**assign, n.node_id: r}
                standby.remove(n)
                break
    return assign


def place_joiner(
    assign: Assign, node: NodeCapacity, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assign:
    """The window for a new node that raises the estimate most; others do not move."""
    L = perf.num_layers
    full = LayerRange(0, L)
    cands: set[LayerRange] = {full} if fits(perf, node, full) else set()
    cap = perf.mem.max_layers(node.memory_bytes)
    cuts = sorted(
        {0, L, *(r.start for r in assign.values() if r), *(r.end for r in assign.values() if r)}
    )
    for c in cuts:
        for a, b in ((c, min(L, c + cap)), (max(0, c - cap), c)):
            while b > a and not fits(perf, node, LayerRange(a, b)):
                b -= 1  # the ends carry embedding or head: shrink until it fits
            if b > a:
                cands.add(LayerRange(a, b))
    if not cands:
        return assign
    profile = layer_capacity(assign, nodes, perf)
    rate = {r: perf.node_rate(node, len(r), float(perf.batch_size)) for r in cands}

    def bottleneck(r: LayerRange) -> tuple[float, int]:
        return (min(p + (rate[r] if i in r else 0.0) for i, p in enumerate(profile)), len(r))

    short = sorted(cands, key=lambda r: (bottleneck(r), -r.start), reverse=True)[:SHORTLIST]
    base = throughput(assign, nodes, perf)
    best, best_thr = assign, base
    for r in short:
        trial = {**assign, node.node_id: r}
        thr = throughput(trial, nodes, perf)
        if thr > best_thr * (1 + 1e-6):
            best, best_thr = trial, thr
    return best


def layer_capacity(assign: Assign, nodes: Sequence[NodeCapacity], perf: PerfModel) -> list[float]:
    by_id = {n.node_id: n for n in nodes}
    out = [0.0] * perf.num_layers
    for n, r in holders_held(assign, by_id):
        x = perf.node_rate(n, len(r), float(perf.batch_size))
        for layer in range(r.start, min(r.end, perf.num_layers)):
            out[layer] += x
    return out


def pct(new: float, old: float) -> str:
    return f"{(new / old - 1) * 100:+.0f}% throughput" if old > 0 else "serving again"


def adjust(
    nodes: Sequence[NodeCapacity], perf: PerfModel, previous: Allocation
) -> tuple[Assign, str, str]:
    """The previous allocation carried over to today's nodes: (assignments, solver, reason)."""
    from coordinator.scheduler.allocate import solve

    by_id = {n.node_id: n for n in nodes}
    prev = {n: r for n, r in previous.assignments.items() if r is not None}
    # Throughput before the change: the previous figure when it has one (departed nodes
    # are not in `nodes` any more, so it cannot be recomputed).
    before = previous.throughput_tok_s or throughput(
        {n: r for n, r in prev.items() if n in by_id}, nodes, perf
    )
    kept: Assign = {n.node_id: None for n in nodes}
    notes: list[str] = []
    departed = []
    for nid, r in sorted(prev.items()):
        node = by_id.get(nid)
        if node is not None and r.end <= perf.num_layers and fits(perf, node, r):
            kept[nid] = r
        else:
            departed.append(r)
            notes.append(f"node {nid} left (layers {r.start}–{r.end - 1})")
    joined = sorted(n for n in by_id if n not in previous.assignments)
    assign = replace_departed(kept, departed, nodes, perf) if departed else kept
    taken_over = [r for r in departed if any(assign[n] == r for n in assign if kept[n] is None)]
    for r in departed:
        if r not in taken_over:
            assign = mend_pipeline(assign, r, nodes, perf)
    assign = (
        repair(assign, nodes, perf)
        if not covers_all([(by_id[n], r) for n, r in assign.items() if r], perf.num_layers)
        else assign
    )
    if assign is None:
        fresh, solver, note = solve(nodes, perf)
        moved = layers_reloaded(prev, fresh)
        notes.append(f"no local repair fits: re-allocated ({note}), {moved} layers reloaded")
        return fresh, solver, "; ".join(notes)
    for nid in joined:
        placed = place_joiner(assign, by_id[nid], nodes, perf)
        r = placed.get(nid)
        thr_new, thr_old = throughput(placed, nodes, perf), throughput(assign, nodes, perf)
        notes.append(
            f"node {nid} joined: layers {r.start}–{r.end - 1}, {pct(thr_new, thr_old)}"
            if r
            else f"node {nid} joined: standby (adds no throughput)"
        )
        assign = placed
    current = throughput(assign, nodes, perf)
    if departed:
        notes.append(f"{layers_reloaded(prev, assign)} layers reloaded, {pct(current, before)}")
    fresh, solver, note = solve(nodes, perf)
    fresh_thr = throughput(fresh, nodes, perf)
    if fresh_thr > current * (1 + perf.options.rebalance_gain):
        moved = layers_reloaded(assign, fresh)
        notes.append(f"rebalanced ({note}): {pct(fresh_thr, current)}, {moved} layers reloaded")
        return fresh, solver, "; ".join(notes)
    if not notes:
        notes.append(
            f"kept the current allocation: a fresh one would gain {pct(fresh_thr, current)}, "
            f"under the {perf.options.rebalance_gain:.0%} threshold"
        )
    return assign, "incremental", "; ".join(notes)
