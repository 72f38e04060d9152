"""Phase 1 entry point: `allocate(nodes, model, options) -> Allocation`.

With a previous allocation (or nodes that report their current range) the change is
incremental (`incremental.py`: move as little as possible); otherwise a fresh solve
(`solve.py`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.incremental import adjust
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.solve import solve
from coordinator.scheduler.types import Allocation, NodeCapacity
from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId


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


def describe(
    assignments: Mapping[NodeId, LayerRange | None], est_thr: float, est_lat: float
) -> str:
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
        assignments, solver, reason = adjust(nodes, perf, previous)
        # A joiner may be handed a whole copy (it raises throughput most), which would
        # undo an explicit minimum depth: then solve afresh as if it were unmet before.
        if not _depth_unmet(Allocation(assignments), nodes, perf):
            return finish(nodes, perf, assignments, solver, t0, reason)
    assignments, solver, note = solve(nodes, perf)
    est = estimate(assignments, nodes, perf)
    reason = f"{solver} allocation ({note}): " + describe(
        assignments, est.throughput_tok_s, est.latency_ms_per_token
    )
    return finish(nodes, perf, assignments, solver, t0, reason)
