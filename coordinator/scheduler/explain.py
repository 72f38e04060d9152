"""Why each node holds what it holds: its memory split, expected batch and step time.

`parallax plan` prints this per node, so an operator can check the plan against the
hardware: weights, KV room and the reserve add up to the node's memory; the batch is
what its KV room holds at the workload's mean context (or the engine's --max-running),
shared among the stages a chain has in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.scheduler.estimate import IN_FLIGHT_PER_STAGE, estimate
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import NodeCapacity
from parallax.types import LayerRange, NodeId

GiB = float(1 << 30)


@dataclass(frozen=True)
class NodeExplain:
    node_id: NodeId
    range: LayerRange | None
    memory_bytes: float
    weights_bytes: float  # its layers, plus the embedding / head at the ends
    kv_bytes: float  # what is left for KV after weights and reserve
    reserve_bytes: float  # kept back for activations and the runtime
    resident_seqs: float  # sequences at the mean context its KV holds (capped)
    batch: float  # sequences it decodes per step when the cluster is busy
    step_ms: float  # one decode step over its range at that batch
    why: str

    def as_json(self) -> dict:
        return {
            "layers": None if self.range is None else [self.range.start, self.range.end],
            "memory_gib": round(self.memory_bytes / GiB, 3),
            "weights_gib": round(self.weights_bytes / GiB, 3),
            "kv_gib": round(self.kv_bytes / GiB, 3),
            "reserve_gib": round(self.reserve_bytes / GiB, 3),
            "resident_seqs": round(self.resident_seqs, 1),
            "batch": round(self.batch, 1),
            "step_ms": round(self.step_ms, 3),
            "why": self.why,
        }


def explain(
    assignments: Mapping[NodeId, LayerRange | None],
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
) -> list[NodeExplain]:
    mem, L = perf.mem, perf.num_layers
    depth = max(1, estimate(assignments, nodes, perf).depth)
    waves = IN_FLIGHT_PER_STAGE if depth > 1 else 1
    cap = perf.options.max_running_per_node
    out = []
    for n in nodes:
        r = assignments.get(n.node_id)
        mem = perf.mem.at(n)  # in the node's own dtype and weight format
        reserve = n.memory_bytes - mem.usable(n.memory_bytes)
        if r is None:
            if mem.max_layers(n.memory_bytes) < 1:
                why = (
                    f"stands by: one layer with a {mem.reserve_tokens}-token KV reserve needs "
                    f"{mem.layer_bytes / GiB:.2f} GiB of the {mem.usable(n.memory_bytes) / GiB:.2f}"
                    " GiB it may use"
                )
            else:
                why = "stands by: the plan is as fast without it (it would only add a hop)"
            out.append(NodeExplain(n.node_id, None, n.memory_bytes, 0, 0, reserve, 0, 0, 0, why))
            continue
        weights = mem.weights(r)
        seqs = perf.resident_seqs(n, r)
        batch = max(seqs / (depth * waves), 1.0)
        step = perf.step_s(n, r, batch)
        ends = [
            part
            for part, held in (("the embedding", r.start == 0), ("the head", r.end >= L))
            if held
        ]
        bound = (
            f"--max-running {cap}"
            if seqs >= cap
            else f"its KV room at {perf.mean_context:.0f} tokens a sequence"
        )
        why = (
            f"{len(r)} layers{' with ' + ' and '.join(ends) if ends else ''}: "
            f"{seqs:.0f} sequences resident (bound by {bound}), about {batch:.0f} a step "
            f"over a {depth}-stage chain, {step * 1e3:.1f} ms a step"
        )
        out.append(
            NodeExplain(
                n.node_id,
                r,
                n.memory_bytes,
                weights,
                max(0.0, mem.kv_room(n.memory_bytes, r)),
                reserve,
                seqs,
                batch,
                step * 1e3,
                why,
            )
        )
    return out
