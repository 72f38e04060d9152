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

from collections.abc import Sequence

from coordinator.scheduler.estimate import covers_all
from coordinator.scheduler.mend import (
    SHORTLIST,
    fits,
    holders_held,
    layers_reloaded,
    mend_pipeline,
    repair,
    throughput,
)
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.solve import solve
from coordinator.scheduler.types import Allocation, Assignments, NodeCapacity
from parallax.types import LayerRange


def replace_departed(
    assign: Assignments,
    departed: Sequence[LayerRange],
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
) -> Assignments:
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
    assign: Assignments, node: NodeCapacity, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> Assignments:
    """The window for a new node that raises the estimate most; others do not move."""
    L = perf.num_layers
    full = LayerRange(0, L)
    cands: set[LayerRange] = {full} if fits(perf, node, full) else set()
    cap = perf.mem.at(node).max_layers(node.memory_bytes)
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


def layer_capacity(
    assign: Assignments, nodes: Sequence[NodeCapacity], perf: PerfModel
) -> list[float]:
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
) -> tuple[Assignments, str, str]:
    """The previous allocation carried over to today's nodes: (assignments, solver, reason)."""
    by_id = {n.node_id: n for n in nodes}
    prev = {n: r for n, r in previous.assignments.items() if r is not None}
    # Throughput before the change: the previous figure when it has one (departed nodes
    # are not in `nodes` any more, so it cannot be recomputed).
    before = previous.throughput_tok_s or throughput(
        {n: r for n, r in prev.items() if n in by_id}, nodes, perf
    )
    kept: Assignments = {n.node_id: None for n in nodes}
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
        if (r := assign.get(nid)) is not None:  # the repair above placed it already
            notes.append(f"node {nid} joined: layers {r.start}–{r.end - 1}, covering the gap")
            continue
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
