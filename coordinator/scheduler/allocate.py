"""Phase 1 entry point: `allocate(nodes, model, options) -> Allocation`."""

from __future__ import annotations

import time
from collections.abc import Sequence

from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.simple import allocate_simple
from coordinator.scheduler.types import Allocation, NodeCapacity
from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec


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


def allocate(
    nodes: Sequence[NodeCapacity], model: ModelSpec, options: AllocateOptions | None = None
) -> Allocation:
    """Who holds which layers. Raises NotCovered when the nodes cannot hold the model."""
    opts = options or AllocateOptions()
    check_nodes(nodes)
    t0 = time.perf_counter()
    mem = MemoryModel.of(model, opts)
    assignments = allocate_simple(
        nodes, mem, min_stages=opts.min_stages_when_possible, max_stages=opts.max_stages
    )
    used = sorted((r.start, n) for n, r in assignments.items() if r is not None)
    chain = " -> ".join(f"{n} {assignments[n]}" for _s, n in used)
    return Allocation(
        assignments=assignments,
        solver="simple",
        solve_s=time.perf_counter() - t0,
        reason=f"one pipeline over {len(used)} of {len(nodes)} nodes by memory: {chain}",
    )
