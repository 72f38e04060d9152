"""The exact solver: a CP-SAT model of the layer-flow problem (Helix-style).

Maximise F, the tokens/s every layer carries, where node i spends its speed v_i
(layer-tokens/s at full batch) over the layers it holds, f_il <= v_i * holds_il,
sum_l f_il <= v_i, sum_i f_il >= F for every layer; holdings are contiguous and fit
memory (weights, embedding, head, KV floor). Chains may stitch anywhere, so this
flow is achievable by routing. Ties go to fewer nodes (the rest stand by). Regions
are solved apart, as in the heuristic, so no chain crosses a slow link needlessly.
The fast heuristic's answer is the starting hint; the solver reports its gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ortools.sat.python import cp_model

from coordinator.scheduler.fast import plan_fast, region_groups
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import Assignments, NodeCapacity
from parallax.types import LayerRange, NodeId

# The deterministic-time limit, as a share of the wall-clock one (see solve_group).
DETERMINISTIC_SHARE = 0.5
# Flows are integers: this many of them fit in the largest node's speed.
FLOW_RESOLUTION = 100_000


def layer_flow_bound(assign: Assignments, speeds: dict[NodeId, float], num_layers: int) -> float:
    """F of a fixed allocation by Hall's condition over every set of layers (tests: tiny L)."""
    best = math.inf
    for mask in range(1, 1 << num_layers):
        layers = [x for x in range(num_layers) if mask >> x & 1]
        supply = sum(
            speeds[n] for n, r in assign.items() if r is not None and any(x in r for x in layers)
        )
        best = min(best, supply / len(layers))
    return best


def solve_group(
    nodes: Sequence[NodeCapacity], perf: PerfModel, time_limit_s: float
) -> tuple[Assignments | None, float, float, str]:
    """(assignments, objective F in tokens/s, best bound, status) for one region group.

    Each held layer keeps KV room for a full batch, so the flow is not starved of
    resident sequences (the model itself has no Little's law). Where memory is too tight
    for that to cover the model, it keeps one context per layer, as `MemoryModel.fits`
    does: a cluster the heuristics can cover is never given up on as "flow 0"."""
    mem = perf.mem
    full = max(float(mem.reserve_tokens), perf.batch_size * perf.mean_context)
    got = _solve_group(nodes, perf, time_limit_s, full)
    if got[0] is not None and got[1] <= 0 and full > mem.reserve_tokens:
        got = _solve_group(nodes, perf, time_limit_s, float(mem.reserve_tokens))
    return got


def _solve_group(
    nodes: Sequence[NodeCapacity], perf: PerfModel, time_limit_s: float, reserve: float
) -> tuple[Assignments | None, float, float, str]:
    mem, L = perf.mem, perf.num_layers
    speed = {n.node_id: perf.speed(n) for n in nodes}
    unit = max(speed.values()) / FLOW_RESOLUTION
    V = {nid: max(1, int(v / unit)) for nid, v in speed.items()}
    # Memory in integer units of a thousandth of a (cluster-default) layer: costs round
    # up, capacities down, so rounding can only make the model stricter, by at most 0.1%
    # of a layer each.
    mem_unit = (mem.weight_bytes + mem.kv_bytes_per_token * reserve) / 1000
    m = cp_model.CpModel()
    F = m.new_int_var(0, sum(V.values()), "F")
    hold, start, flows = {}, {}, {}
    for n in nodes:
        i = n.node_id
        cap = int(mem.usable(n.memory_bytes) // mem_unit)
        own = mem.at(n)  # in its own dtype and weight format, in the same unit
        own_layer = math.ceil((own.weight_bytes + own.kv_bytes_per_token * reserve) / mem_unit)
        own_emb = math.ceil(own.embedding_bytes / mem_unit)
        own_head = math.ceil(own.head_bytes / mem_unit)
        y = [m.new_bool_var(f"y_{i}_{x}") for x in range(L)]
        s = [m.new_bool_var(f"s_{i}_{x}") for x in range(L)]
        f = [m.new_int_var(0, V[i], f"f_{i}_{x}") for x in range(L)]
        hold[i], start[i] = y, s
        m.add(y[0] <= s[0])
        for x in range(1, L):
            m.add(y[x] <= y[x - 1] + s[x])
        for x in range(L):
            m.add(s[x] <= y[x])
            m.add(f[x] <= V[i] * y[x])
        m.add(sum(s) <= 1)
        m.add(sum(f) <= V[i])
        m.add(own_layer * sum(y) + own_emb * y[0] + own_head * y[L - 1] <= cap)
        flows[i] = f
    for x in range(L):
        m.add(sum(flows[n.node_id][x] for n in nodes) >= F)
    used = sum(s for ss in start.values() for s in ss)
    m.maximize(F * (len(nodes) + 1) - used)
    hint = plan_fast(nodes, perf)
    if hint:
        # A complete, feasible hint (holdings, flows split evenly, F) so CP-SAT starts
        # from the heuristic's answer and only has to improve on it.
        held = {n.node_id: r for pipe in hint for n, r in pipe}
        per_layer = [0] * L
        for n in nodes:
            r = held.get(n.node_id)
            share = V[n.node_id] // len(r) if r else 0
            for x in range(L):
                inside = r is not None and x in r
                m.add_hint(hold[n.node_id][x], inside)
                m.add_hint(start[n.node_id][x], r is not None and x == r.start)
                m.add_hint(flows[n.node_id][x], share if inside else 0)
                per_layer[x] += share if inside else 0
        m.add_hint(F, min(per_layer))
    solver = cp_model.CpSolver()
    # One worker and a deterministic-time limit: the same model gets the same answer on
    # any machine unless the wall limit (the hard stop) comes first. A deterministic
    # second is about 1.7 wall seconds on a shared 2-core box.
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.max_deterministic_time = time_limit_s * DETERMINISTIC_SHARE
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, 0.0, 0.0, solver.status_name(status)
    out: Assignments = {}
    for n in nodes:
        xs = [x for x in range(L) if solver.value(hold[n.node_id][x])]
        out[n.node_id] = LayerRange(xs[0], xs[-1] + 1) if xs else None
    obj = solver.value(F) * unit
    bound = solver.best_objective_bound / (len(nodes) + 1) * unit
    return out, obj, max(bound, obj), solver.status_name(status)


def solve_exact(nodes: Sequence[NodeCapacity], perf: PerfModel) -> tuple[Assignments | None, str]:
    """Assignments over every region group (None if a group found no solution) and a note
    with the flow objective, its bound and the optimality gap."""
    eligible = [n for n in nodes if perf.mem.at(n).max_layers(n.memory_bytes) >= 1]
    groups = [g for g in region_groups(eligible, perf) if g]
    if not groups:
        return None, "no node holds a layer"
    budget = perf.options.time_limit_s / len(groups)
    out: Assignments = {}
    obj = bound = 0.0
    statuses = []
    for g in groups:
        got, o, b, status = solve_group(g, perf, budget)
        if got is None:
            if sum(perf.mem.usable_equivalent(n) for n in g) >= perf.mem.total_need():
                return None, f"MILP {status}"
            continue  # a pooled group too small to serve: its nodes stand by
        out.update(got)
        obj, bound = obj + o, bound + b
        statuses.append(status)
    if not out or obj <= 0:
        return None, "MILP found nothing that covers the model"
    gap = (bound - obj) / bound if bound > 0 else 0.0
    state = "optimal" if all(s == "OPTIMAL" for s in statuses) else f"gap {gap:.1%}"
    return out, f"MILP {state}, flow {obj:,.0f} tok/s, bound {bound:,.0f}"
