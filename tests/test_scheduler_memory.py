"""Property: no allocation asks a node for more than its memory less the reserve.

The sizes here are counted from the model's shape, independently of the planner's
MemoryModel: a node's layers, the embedding if it holds layer 0, the head if it holds
the last, and one full context of KV on each of its layers, plus `memory_reserve` of
its memory kept back, must fit in its memory. The evaluator kit judges the same way
(../shared/sched-eval: 90% of memory_gb for weights plus one full sequence).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import AllocateOptions, NodeCapacity, allocate
from coordinator.scheduler.explain import explain
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.presets import model_preset
from parallax.errors import NotCovered
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

GiB = float(1 << 30)
MODELS = ["llama3-8b", "qwen2.5-32b", "llama3-70b", "smollm2-360m"]
# (memory GiB, bandwidth GB/s, TFLOP/s): consumer, datacenter and Apple nodes.
KINDS = [
    (24, 1008, 99),
    (24, 936, 43),
    (16, 320, 39),
    (32, 1792, 126),
    (48, 864, 217),
    (80, 2039, 187),
    (80, 3350, 593),
    (96, 400, 8),
    (192, 800, 16),
]


def need(spec: ModelSpec, r: LayerRange, dtype: int, context: int) -> float:
    weights = len(r) * spec.params_per_layer() * dtype
    if r.start == 0:
        weights += spec.vocab_size * spec.hidden_size * dtype
    if r.end == spec.num_layers:
        weights += (spec.vocab_size + 1) * spec.hidden_size * dtype
    kv = context * len(r) * 2 * spec.num_key_value_heads * spec.head_dim * dtype
    return weights + kv


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=14),
    regions=st.integers(1, 3),
    reserve=st.sampled_from([0.0, 0.1, 0.25]),
    context=st.sampled_from([1024, 4096]),
    solver=st.sampled_from(["fast", "simple"]),
    max_running=st.sampled_from([16, 256]),
)
def test_memory_plus_reserve_never_exceeded(
    model: str,
    kinds: list[tuple[int, int, int]],
    regions: int,
    reserve: float,
    context: int,
    solver: str,
    max_running: int,
) -> None:
    spec = model_preset(model)
    nodes = [
        NodeCapacity(NodeId(f"n{i}"), gb * GiB, tf * 1e12, bw * 1e9, region=f"r{i % regions}")
        for i, (gb, bw, tf) in enumerate(kinds)
    ]
    opts = AllocateOptions(
        dtype_bytes=2,
        context_tokens=context,
        memory_reserve=reserve,
        solver=solver,
        max_running_per_node=max_running,
    )
    try:
        alloc = allocate(nodes, spec, opts)
    except NotCovered:
        total = sum(n.memory_bytes for n in nodes) * (1 - reserve)
        # Refused only when no single copy could be close to fitting anyway, or the
        # cluster is fragmented (checked loosely: the planner's message says which).
        assert total < 2 * need(spec, LayerRange(0, spec.num_layers), 2, context)
        return
    by_id = {n.node_id: n for n in nodes}
    for nid, r in alloc.assignments.items():
        if r is None:
            continue
        memory = by_id[nid].memory_bytes
        assert need(spec, r, 2, context) + reserve * memory <= memory * (1 + 1e-9), (nid, r)
    # The plan's explanation splits each holder's memory the same way.
    for e in explain(alloc.assignments, nodes, PerfModel.of(spec, opts)):
        if e.range is None:
            continue
        assert abs(e.weights_bytes + e.kv_bytes + e.reserve_bytes - e.memory_bytes) < 1.0
        assert e.kv_bytes >= need(spec, e.range, 2, context) - e.weights_bytes - 1.0
        assert 1.0 <= e.batch <= max_running
