"""The simple allocator: one pipeline, layers in proportion to memory (exo-like).

Used as the fallback of the throughput solvers and as a baseline in the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.scheduler.apportion import bounds, water_fill
from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.types import Assignments, NodeCapacity
from parallax.errors import NotCovered
from parallax.types import LayerRange

GiB = float(1 << 30)


def pipeline_order(nodes: Sequence[NodeCapacity]) -> list[NodeCapacity]:
    """Biggest node first (it carries the embedding), second biggest last (the head)."""
    by_size = sorted(nodes, key=lambda n: (-n.memory_bytes, n.node_id))
    if len(by_size) <= 2:
        return by_size
    return [by_size[0], *by_size[2:], by_size[1]]


def least_loss_order(nodes: Sequence[NodeCapacity], mem: MemoryModel) -> list[NodeCapacity]:
    """The ends where the embedding and head cost the fewest layers of capacity: the
    biggest nodes are not always best there (a node just over a layer boundary loses one
    layer to the head where a slightly smaller one loses none)."""
    if len(nodes) < 2:
        return list(nodes)

    def loss(n: NodeCapacity, first: bool) -> int:
        own = mem.at(n)
        return own.max_layers(n.memory_bytes) - own.max_layers(n.memory_bytes, first, not first)

    by_size = sorted(nodes, key=lambda n: (-n.memory_bytes, n.node_id))
    few = by_size[:16]  # end candidates: bounded work on big pools
    a, b = min(
        ((x, y) for x in few for y in few if x is not y),
        key=lambda p: (loss(p[0], True) + loss(p[1], False), p[0].node_id, p[1].node_id),
    )
    return [a, *(n for n in by_size if n is not a and n is not b), b]


def stage_caps(order: Sequence[NodeCapacity], mem: MemoryModel) -> list[int]:
    k = len(order)
    return [
        mem.at(n).max_layers(n.memory_bytes, first=i == 0, last=i == k - 1)
        for i, n in enumerate(order)
    ]


def memory_layout(
    order: Sequence[NodeCapacity], mem: MemoryModel, weights: Sequence[float] | None = None
) -> list[LayerRange] | None:
    """Ranges for `order` (in pipeline order) covering all layers, or None if they do not fit."""
    # By what each holds of the model (a bfloat16 node twice a float32 one's memory).
    w = weights if weights is not None else [mem.usable_equivalent(n) for n in order]
    counts = water_fill(mem.num_layers, w, stage_caps(order, mem))
    if counts is None:
        return None
    return [LayerRange(a, b) for a, b in bounds(counts)]


def missing_memory_message(nodes: Sequence[NodeCapacity], mem: MemoryModel) -> str:
    have = sum(mem.usable_equivalent(n) for n in nodes)
    need = mem.total_need()
    if need > have:
        return (
            f"the cluster offers {have / GiB:.2f} GiB usable (after keeping "
            f"{mem.reserve_fraction:.0%} of each node's memory back) but the model needs "
            f"{need / GiB:.2f} GiB (weights, embedding, head and a {mem.reserve_tokens}-token KV "
            f"reserve per layer): add nodes with at least "
            f"{(need - have) / GiB / max(1e-9, 1 - mem.reserve_fraction):.2f} GiB more memory, "
            "or lower the weight dtype, the context length or the memory reserve"
        )
    return (
        f"the cluster offers {have / GiB:.2f} GiB usable of the {need / GiB:.2f} GiB needed but "
        "it is "
        "fragmented: no node can hold the embedding or head next to a layer "
        f"({(mem.embedding_bytes + mem.layer_bytes) / GiB:.2f} GiB); add a bigger node"
    )


def allocate_simple(
    nodes: Sequence[NodeCapacity],
    mem: MemoryModel,
    min_stages: int = 1,
    max_stages: int | None = None,
) -> Assignments:
    """One pipeline over the fewest biggest nodes that fit (at least `min_stages` of them)."""
    eligible = sorted(
        (n for n in nodes if mem.at(n).max_layers(n.memory_bytes) >= 1),
        key=lambda n: (-n.memory_bytes, n.node_id),
    )
    lo = max(1, min(min_stages, len(eligible), mem.num_layers))
    hi = min(len(eligible), mem.num_layers, max_stages or len(eligible))
    # More stages than asked only when fewer do not fit; fewer when the small nodes
    # cannot take an end of the pipeline.
    for k in [*range(lo, hi + 1), *range(min(lo, hi + 1) - 1, 0, -1)]:
        chosen = eligible[:k]
        # Node-id order reads best; biggest nodes at the ends when the embedding needs it.
        orders = (
            sorted(chosen, key=lambda n: n.node_id),
            pipeline_order(chosen),
            least_loss_order(chosen, mem),
        )
        for order in orders:
            ranges = memory_layout(order, mem)
            if ranges is not None:
                break
        if ranges is not None:
            out: Assignments = {n.node_id: None for n in nodes}
            out.update({n.node_id: r for n, r in zip(order, ranges, strict=True)})
            return out
    if max_stages is not None and hi < len(eligible):
        raise NotCovered(
            f"no pipeline of at most max_stages={max_stages} nodes holds all "
            f"{mem.num_layers} layers; raise max_stages or add bigger nodes. "
            + missing_memory_message(eligible[:hi], mem)
        )
    raise NotCovered(missing_memory_message(nodes, mem))
