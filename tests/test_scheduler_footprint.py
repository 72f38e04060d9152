"""Per-node bytes: each node is planned in its own dtype and weight format.

A node that reported its footprint (parallax/models/footprint.py) is sized with it; one
that did not is sized with the cluster-wide `AllocateOptions.dtype_bytes`. The needs
here are counted from the footprints directly, not through the planner's MemoryModel.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import AllocateOptions, NodeCapacity, allocate
from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.presets import model_preset
from parallax.errors import NotCovered
from parallax.models.footprint import Footprint, footprint
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

GiB = float(1 << 30)
MiB = float(1 << 20)
SPEC = model_preset("smollm2-135m")
FORMATS = [("float32", "auto"), ("bfloat16", "auto"), ("float32", "q8"), ("bfloat16", "q4")]


def node(i: int, memory: float, fp: Footprint | None, region: str = "default") -> NodeCapacity:
    return NodeCapacity(NodeId(f"n{i}"), memory, 20e12, 400e9, region=region, footprint=fp)


def need(spec: ModelSpec, fp: Footprint, r: LayerRange, context: int) -> float:
    """Weights of the range, its ends, and one full context of KV, in the node's bytes."""
    out = len(r) * (fp.weight_bytes + context * fp.kv_bytes_per_token)
    out += fp.embedding_bytes if r.start == 0 else 0.0
    return out + (fp.head_bytes if r.end == spec.num_layers else 0.0)


@pytest.mark.parametrize("solver", ["auto", "fast", "simple"])
def test_bf16_node_gets_about_twice_the_layers_of_an_fp32_node(solver: str) -> None:
    """Same memory, same hardware: the bfloat16 node holds about twice the float32 one's
    layers. Planned both as float32 (the cluster default), they cannot hold the model."""
    opts = AllocateOptions(context_tokens=2048, solver=solver, time_limit_s=5.0)
    memory = 290 * MiB  # neither holds the model alone, in either dtype
    fp32, bf16 = footprint(SPEC, "float32"), footprint(SPEC, "bfloat16")
    alloc = allocate([node(0, memory, fp32), node(1, memory, bf16)], SPEC, opts)
    a, b = alloc.assignments[NodeId("n0")], alloc.assignments[NodeId("n1")]
    assert a is not None and b is not None
    assert len(a) + len(b) == SPEC.num_layers, alloc.assignments
    assert 1.7 <= len(b) / len(a) <= 3.5, alloc.assignments
    # Their capacities, middle layers only, are twice one another's (KV too is bf16).
    mem = MemoryModel.of(SPEC, opts)
    fp32_cap = mem.at(node(0, memory, fp32)).max_layers(memory)
    assert mem.at(node(1, memory, bf16)).max_layers(memory) in (2 * fp32_cap, 2 * fp32_cap + 1)
    with pytest.raises(NotCovered):
        allocate([node(0, memory, None), node(1, memory, None)], SPEC, opts)


def test_a_node_without_footprint_is_planned_with_the_cluster_default() -> None:
    opts = AllocateOptions(dtype_bytes=4, context_tokens=2048)
    mem = MemoryModel.of(SPEC, opts)
    plain = node(0, GiB, None)
    assert mem.at(plain) is mem
    own = mem.at(node(1, GiB, footprint(SPEC, "float32")))
    assert own.weight_bytes == mem.weight_bytes and own.head_bytes == mem.head_bytes
    q4 = mem.at(node(2, GiB, footprint(SPEC, "bfloat16", "q4")))
    assert q4.weight_bytes < 0.35 * footprint(SPEC, "bfloat16").weight_bytes
    assert mem.at(node(3, GiB, footprint(SPEC, "bfloat16", "q4"))) is q4  # built once
    # A q4 node's memory counts for more of a copy than a float32 node's.
    assert mem.usable_equivalent(node(2, GiB, q4_fp := footprint(SPEC, "bfloat16", "q4"))) > (
        3 * mem.usable(GiB)
    )
    assert q4_fp.label == "q4/bfloat16"


@settings(max_examples=25, deadline=None)
@given(
    nodes=st.lists(
        st.tuples(st.integers(150, 1200), st.sampled_from([*FORMATS, None])),
        min_size=1,
        max_size=10,
    ),
    regions=st.integers(1, 2),
    reserve=st.sampled_from([0.0, 0.1]),
    context=st.sampled_from([1024, 4096]),
    solver=st.sampled_from(["fast", "simple"]),
)
def test_weights_plus_context_plus_reserve_fit_in_each_nodes_own_bytes(
    nodes: list[tuple[int, tuple[str, str] | None]],
    regions: int,
    reserve: float,
    context: int,
    solver: str,
) -> None:
    """Mixed formats: every holder's layers, ends and one context of KV, in its own
    dtype and weight format (the cluster's bfloat16 where it reported none), plus the
    reserve, fit. The default is not the largest format, so ignoring a float32 node's
    report would overfill it."""
    caps = [
        node(i, mib * MiB, footprint(SPEC, *f) if f else None, f"r{i % regions}")
        for i, (mib, f) in enumerate(nodes)
    ]
    opts = AllocateOptions(
        dtype_bytes=2, context_tokens=context, memory_reserve=reserve, solver=solver
    )
    try:
        alloc = allocate(caps, SPEC, opts)
    except NotCovered:
        return
    default = footprint(SPEC, "bfloat16")
    by_id = {n.node_id: n for n in caps}
    for nid, r in alloc.assignments.items():
        if r is None:
            continue
        n = by_id[nid]
        got = need(SPEC, n.footprint or default, r, context) + reserve * n.memory_bytes
        assert got <= n.memory_bytes * (1 + 1e-9), (nid, r, n.footprint)
