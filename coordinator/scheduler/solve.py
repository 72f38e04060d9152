"""A fresh allocation from scratch: the solver ladder `allocate` and `incremental` share.

"exact" (the CP-SAT model) falls back to "fast" (the heuristic) when it finds nothing
in time, and "fast" to "simple" (one pipeline by memory); "auto" runs both throughput
solvers and keeps the better, by the performance model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.fast import plan_fast_shaped
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.rebalance import rebalance
from coordinator.scheduler.simple import allocate_simple
from coordinator.scheduler.types import Assignments, NodeCapacity

# "auto" also runs the exact MILP up to this many nodes, and takes its allocation only
# when the MILP proved it optimal and the performance model rates it higher. The MILP
# maximises the full-batch layer flow, which ignores Little's law, and a time-limited
# incumbent's odd overlaps serve anywhere from far below to far above the heuristic
# depending on node order and limits: only a proven optimum is worth the risk.
AUTO_EXACT_MAX_NODES = 64


def solve(nodes: Sequence[NodeCapacity], perf: PerfModel) -> tuple[Assignments, str, str]:
    """A fresh allocation: (assignments, solver used, note for the reason)."""
    opts = perf.options
    solver = opts.solver
    if solver == "exact" and opts.min_stages_when_possible > 1:
        solver = "fast"  # the MILP does not model a minimum depth; the heuristic does
    out: Assignments = {n.node_id: None for n in nodes}
    note = ""
    if solver == "auto":
        return best_of_both(nodes, perf)
    if solver == "exact":
        # Imported on use: ortools is slow to import and most allocations never need it.
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
                pipe, _est = rebalance(pipe, perf)
                out.update({n.node_id: r for n, r in pipe})
            return out, "fast", got[1]
    simple = allocate_simple(
        nodes, perf.mem, min_stages=opts.min_stages_when_possible, max_stages=opts.max_stages
    )
    return simple, "simple", "one pipeline by memory"


def best_of_both(nodes: Sequence[NodeCapacity], perf: PerfModel) -> tuple[Assignments, str, str]:
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
