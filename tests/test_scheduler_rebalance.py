"""The saturation pass (`rebalance.py`): re-cut pipelines so stages are even at the
batch each node's KV room allows, without giving up the estimate.

Checked against quantities computed here from the model's shape (weights, one full
context of KV, the reserve), not the planner's own memory model.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import AllocateOptions, NodeCapacity, allocate
from coordinator.scheduler.cluster_file import Cluster, parse_cluster
from coordinator.scheduler.estimate import group_estimate
from coordinator.scheduler.fast import plan_fast, plan_k
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.presets import model_preset
from coordinator.scheduler.rebalance import (
    ESTIMATE_SLACK,
    is_partition,
    rebalance,
    saturation_rate,
    stage_rates,
)
from coordinator.scheduler.types import Pipeline
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

GiB = float(1 << 30)
# (memory GiB, bandwidth GB/s, dense TFLOP/s at 60% of the spec sheet)
L40S, RTX4090, A100 = (48, 864, 217), (24, 1008, 99), (80, 2039, 187)
KINDS = [L40S, RTX4090, A100, (24, 936, 43), (32, 1792, 126), (16, 320, 39), (96, 400, 8)]


def nodes_of(kinds: list[tuple[int, int, int]]) -> list[NodeCapacity]:
    return [
        NodeCapacity(NodeId(f"n{i:02d}"), gb * GiB, tf * 1e12, bw * 1e9)
        for i, (gb, bw, tf) in enumerate(kinds)
    ]


def decode_perf(model: str, context: int) -> PerfModel:
    opts = AllocateOptions(
        dtype_bytes=2,
        context_tokens=context,
        mean_prompt_tokens=0,
        mean_context_tokens=context // 2,
        max_running_per_node=256,
    )
    return PerfModel.of(model_preset(model), opts)


def need(spec: ModelSpec, r: LayerRange, context: int, reserve: float, memory: float) -> bool:
    """Weights of the range plus one full context of KV fit beside the reserve."""
    weights = len(r) * spec.params_per_layer() * 2
    if r.start == 0:
        weights += spec.vocab_size * spec.hidden_size * 2
    if r.end == spec.num_layers:
        weights += (spec.vocab_size + 1) * spec.hidden_size * 2
    kv = context * len(r) * 2 * spec.num_key_value_heads * spec.head_dim * 2
    return weights + kv <= memory * (1 - reserve) + 1.0


def one_pipeline(nodes: list[NodeCapacity], perf: PerfModel) -> Pipeline:
    plan = plan_k(nodes, 1, perf)
    assert plan is not None
    return plan.pipelines[0]


QWEN72B = {
    "num_layers": 80,
    "hidden_size": 8192,
    "intermediate_size": 29568,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 152064,
}


def datacenter_cluster() -> Cluster:
    """Two A100-80GB, four 4090s and four L40S (spec sheets) on a 72B model, 4k context."""
    kinds = [(80, 2039, 312)] * 2 + [(24, 1008, 165.2)] * 4 + [(48, 864, 362)] * 4
    nodes = [
        {"id": f"n{i}", "memory_gb": gb, "mem_bw_gbps": bw, "tflops": tf}
        for i, (gb, bw, tf) in enumerate(kinds)
    ]
    return parse_cluster({"model": QWEN72B, "context_tokens": 4096, "nodes": nodes})


def test_even_at_saturation_on_a_datacenter_pipeline() -> None:
    """Four L40S, four 4090s and two A100s on a 72B model at 4k context, one pipeline:
    the cut that is even at the operating batch gives the A100s (fast memory) more
    layers than their capacity at a KV-bounded batch carries; the pass evens it out
    and the estimate holds."""
    cluster = datacenter_cluster()
    perf = PerfModel.of(cluster.model, replace(cluster.options, max_running_per_node=256))
    pipe = one_pipeline(list(cluster.nodes), perf)
    assert is_partition(pipe, perf.num_layers)
    base = group_estimate(pipe, perf)
    got, est = rebalance(pipe, perf, base)
    rates = stage_rates(perf, [n for n, _r in pipe])
    before = saturation_rate(rates, [len(r) for _n, r in pipe])
    after = saturation_rate(rates, [len(r) for _n, r in got])
    assert after > 1.02 * before, (before, after, got)
    assert est.throughput_tok_s >= (1 - ESTIMATE_SLACK) * base.throughput_tok_s
    assert [n for n, _r in got] == [n for n, _r in pipe]
    assert is_partition(got, perf.num_layers)


def test_overlapping_spans_are_left_alone() -> None:
    perf = decode_perf("llama3-8b", 2048)
    a, b = nodes_of([L40S, L40S])
    spans: Pipeline = [(a, LayerRange(0, 20)), (b, LayerRange(10, 32))]
    got, _est = rebalance(spans, perf)
    assert got is spans


@settings(max_examples=25, deadline=None)
@given(
    model=st.sampled_from(["llama3-8b", "qwen2.5-32b", "llama3-70b"]),
    kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=10),
    context=st.sampled_from([1024, 4096]),
)
def test_rebalanced_pipeline_fits_keeps_its_nodes_and_never_loses(
    model: str, kinds: list[tuple[int, int, int]], context: int
) -> None:
    perf = decode_perf(model, context)
    nodes = nodes_of(kinds)
    plan = plan_k(nodes, 1, perf)
    if plan is None:
        return  # the nodes cannot hold the model
    pipe = plan.pipelines[0]
    base = group_estimate(pipe, perf)
    got, est = rebalance(pipe, perf, base)
    assert [n for n, _r in got] == [n for n, _r in pipe]
    if got is pipe:
        return
    L = perf.num_layers
    assert is_partition(got, L)
    spec = model_preset(model)
    for n, r in got:
        assert need(spec, r, context, perf.options.memory_reserve, n.memory_bytes), (n, r)
    rates = stage_rates(perf, [n for n, _r in pipe])
    assert saturation_rate(rates, [len(r) for _n, r in got]) > saturation_rate(
        rates, [len(r) for _n, r in pipe]
    )
    assert est.throughput_tok_s >= (1 - ESTIMATE_SLACK) * base.throughput_tok_s
    assert est == group_estimate(got, perf)


def test_a_latency_target_is_kept() -> None:
    perf = decode_perf("llama3-70b", 2048)
    pipe = one_pipeline(nodes_of([L40S] * 4 + [RTX4090] * 4 + [A100] * 2), perf)
    base = group_estimate(pipe, perf)
    tight = replace(
        perf, options=replace(perf.options, latency_target_ms=base.latency_ms_per_token)
    )
    _got, est = rebalance(pipe, tight, base)
    assert est.latency_ms_per_token <= base.latency_ms_per_token


def test_fresh_allocations_take_the_rebalanced_cut() -> None:
    """`allocate` (solver fast) returns the re-cut pipeline, not the heuristic's raw one.
    A hop cap of all ten nodes leaves out the packed candidates (which win here), so
    the heuristic's pipeline is what is allocated."""
    cluster = datacenter_cluster()
    opts = replace(cluster.options, max_running_per_node=256, solver="fast", max_stages=10)
    perf = PerfModel.of(cluster.model, opts)
    raw = plan_fast(list(cluster.nodes), perf)
    assert raw is not None and len(raw) == 1
    got = allocate(cluster.nodes, cluster.model, opts).assignments
    nodes = [n for n, _r in raw[0]]
    rates = stage_rates(perf, nodes)
    before = saturation_rate(rates, [len(r) for _n, r in raw[0]])
    after = saturation_rate(rates, [len(got[n.node_id]) for n in nodes])
    assert after > 1.02 * before
