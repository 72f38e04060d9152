"""Phase 1 entry point: `allocate(nodes, model, options) -> Allocation`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.fast import plan_fast_shaped
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.simple import allocate_simple
from coordinator.scheduler.types import Allocation, NodeCapacity
from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

# "auto" also runs the exact MILP up to this many nodes, and takes its allocation only
# when the MILP proved it optimal and the performance model rates it higher. The MILP
# maximises the full-batch layer flow, which ignores Little's law, and a time-limited
# incumbent's odd overlaps are a lottery in served tokens: on one 8-node pool they
# simulated at 17-87 tok/s depending on node order and limits (the heuristic: 54), and
# the model rated a 27 tok/s one above the heuristic's (simulated, Nov 2026).
AUTO_EXACT_MAX_NODES = 64

Assignments = Mapping[NodeId, LayerRange | None]


def check_nodes(nodes: Sequence[NodeCapacity]) -> None:
    seen: set[str] = set()
    for n in nodes:
        if n.node_id in seen:
            raise InvalidArgument(f"node id {n.node_id!r} appears twice; node ids must be unique")
        seen.add(n.node_id)
        if not (n.memory_bytes >= 0 and n.flops >= 0 and n.mem_bandwidth >= 0):
            raise InvalidArgument(
                f"node {n.node_id}: memory_bytes, flops and mem_bandwidth must be >= 0"
            )


def solve(
    nodes: Sequence[NodeCapacity], perf: PerfModel
) -> tuple[dict[NodeId, LayerRange | None], str, str]:
    """A fresh allocation: (assignments, solver used, note for the reason)."""
    opts = perf.options
    solver = opts.solver
    if solver == "exact" and opts.min_stages_when_possible > 1:
        solver = "fast"  # the MILP does not model a minimum depth; the heuristic does
    out: dict[NodeId, LayerRange | None] = {n.node_id: None for n in nodes}
    note = ""
    if solver == "auto":
        return best_of_both(nodes, perf)
    if solver == "exact":
        from coordinator.scheduler.exact import solve_exact

        got, note = solve_exact(nodes, perf)
        if got is not None:
            out.update(got)
            return out, "exact", note
        solver = "fast"  # no incumbent within the time limit
    if solver == "fast":
        got = plan_fast_shaped(nodes, perf, opts.min_stages_when_possible)
        if got and got[0]:
            for pipe in got[0]:
                out.update({n.node_id: r for n, r in pipe})
            return out, "fast", got[1]
    simple = allocate_simple(
        nodes, perf.mem, min_stages=opts.min_stages_when_possible, max_stages=opts.max_stages
    )
    return simple, "simple", "one pipeline by memory"


def best_of_both(
    nodes: Sequence[NodeCapacity], perf: PerfModel
) -> tuple[dict[NodeId, LayerRange | None], str, str]:
    fast = solve(nodes, replace_solver(perf, "fast"))
    if len(nodes) > AUTO_EXACT_MAX_NODES or perf.options.min_stages_when_possible > 1:
        return fast
    exact = solve(nodes, replace_solver(perf, "exact"))
    if exact[1] != "exact" or not exact[2].startswith("MILP optimal"):
        return fast[0], fast[1], f"{fast[2]}; the MILP did not prove an optimum in time"
    rate = {
        name: estimate(got[0], nodes, perf).throughput_tok_s
        for name, got in (("fast", fast), ("exact", exact))
    }
    # Ties go to the heuristic: its pipelines are simpler to route and to mend.
    if rate["exact"] > rate["fast"] * 1.01:
        return exact[0], "exact", f"{exact[2]}; beat the heuristic's {rate['fast']:,.0f} tok/s"
    return fast[0], "fast", f"{fast[2]}; the MILP's allocation rated {rate['exact']:,.0f} tok/s"


def replace_solver(perf: PerfModel, solver: str) -> PerfModel:
    return dataclasses.replace(perf, options=dataclasses.replace(perf.options, solver=solver))


def finish(
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
    assignments: Mapping[NodeId, LayerRange | None],
    solver: str,
    t0: float,
    reason: str,
) -> Allocation:
    est = estimate(assignments, nodes, perf)
    return Allocation(
        assignments=dict(sorted(assignments.items())),
        throughput_tok_s=est.throughput_tok_s,
        latency_ms_per_token=est.latency_ms_per_token,
        solver=solver,
        solve_s=time.perf_counter() - t0,
        reason=reason,
    )


def describe(assignments: Assignments, est_thr: float, est_lat: float) -> str:
    used = sum(r is not None for r in assignments.values())
    return (
        f"{used} of {len(assignments)} nodes hold layers, {len(assignments) - used} stand by; "
        f"expect {est_thr:,.0f} tok/s at {est_lat:.1f} ms/token"
    )


def _depth_unmet(previous: Allocation, nodes: Sequence[NodeCapacity], perf: PerfModel) -> bool:
    want = perf.options.min_stages_when_possible
    if want <= 1 or len(nodes) < want:
        return False
    return any(
        r is not None and r.start == 0 and r.end == perf.num_layers
        for r in previous.assignments.values()
    )


def allocate(
    nodes: Sequence[NodeCapacity], model: ModelSpec, options: AllocateOptions | None = None
) -> Allocation:
    """Who holds which layers. Raises NotCovered when the nodes cannot hold the model."""
    opts = options or AllocateOptions()
    check_nodes(nodes)
    t0 = time.perf_counter()
    perf = PerfModel.of(model, opts)
    previous = opts.previous
    if previous is None and any(n.current is not None for n in nodes):
        previous = Allocation({n.node_id: n.current for n in nodes})
    if previous is not None and _depth_unmet(previous, nodes, perf):
        # An explicit minimum pipeline depth overrides minimal movement until it is met.
        previous = None
    if previous is not None:
        from coordinator.scheduler.dynamics import adjust

        assignments, solver, reason = adjust(nodes, perf, previous)
        return finish(nodes, perf, assignments, solver, t0, reason)
    assignments, solver, note = solve(nodes, perf)
    est = estimate(assignments, nodes, perf)
    reason = f"{solver} allocation ({note}): " + describe(
        assignments, est.throughput_tok_s, est.latency_ms_per_token
    )
    return finish(nodes, perf, assignments, solver, t0, reason)
