"""Exact solver vs brute force on tiny pools; heuristic within its stated bound of exact."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from bench.sim.catalog import load_catalog, node_from_gpu
from coordinator.scheduler import AllocateOptions, NodeCapacity, allocate
from coordinator.scheduler.estimate import window_flow
from coordinator.scheduler.exact import layer_flow_bound, solve_group
from coordinator.scheduler.perf import PerfModel
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

# A 4-layer toy: brute force enumerates every contiguous range (or none) per node.
TOY = ModelSpec("llama", 4, 256, 512, 4, 4, 64, 1000)
OPTS = AllocateOptions(dtype_bytes=2, context_tokens=64, kv_reserve_tokens=64, batch_size=4)


def toy_nodes(layers_fit: list[int], speeds: list[float]) -> list[NodeCapacity]:
    perf = PerfModel.of(TOY, OPTS)
    m = perf.mem
    reserve = max(m.reserve_tokens, OPTS.batch_size * perf.mean_context)
    per = m.weight_bytes + m.kv_bytes_per_token * reserve
    return [
        NodeCapacity(
            NodeId(f"n{i}"),
            memory_bytes=k * per + m.embedding_bytes + m.head_bytes + 1e6,
            flops=1e12,
            mem_bandwidth=s * 1e9,
        )
        for i, (k, s) in enumerate(zip(layers_fit, speeds, strict=True))
    ]


def brute_force(nodes: list[NodeCapacity], perf: PerfModel) -> float:
    L = perf.num_layers
    ranges = [None] + [LayerRange(a, b) for a in range(L) for b in range(a + 1, L + 1)]
    speeds = {n.node_id: perf.speed(n) for n in nodes}
    m = perf.mem
    reserve = max(m.reserve_tokens, perf.batch_size * perf.mean_context)
    per = m.weight_bytes + m.kv_bytes_per_token * reserve
    best = 0.0
    for combo in itertools.product(ranges, repeat=len(nodes)):
        ok = all(
            r is None or len(r) * per + m.extras(r.start == 0, r.end == L) <= n.memory_bytes
            for n, r in zip(nodes, combo, strict=True)
        )
        if ok:
            assign = {n.node_id: r for n, r in zip(nodes, combo, strict=True)}
            best = max(best, layer_flow_bound(assign, speeds, L))
    return best


@pytest.mark.parametrize(
    ("fit", "speeds"),
    [([2, 2, 4], [1, 1, 1]), ([1, 3, 2], [3, 1, 2]), ([4, 1, 1], [1, 5, 5]), ([2, 3], [2, 1])],
)
def test_exact_matches_brute_force(fit: list[int], speeds: list[float]) -> None:
    nodes = toy_nodes(fit, speeds)
    perf = PerfModel.of(TOY, OPTS)
    got, obj, bound, status = solve_group(nodes, perf, time_limit_s=5.0)
    assert got is not None and status == "OPTIMAL"
    expect = brute_force(nodes, perf)
    assert obj == pytest.approx(expect, rel=2e-3)
    speeds_by = {n.node_id: perf.speed(n) for n in nodes}
    assert layer_flow_bound(got, speeds_by, 4) == pytest.approx(expect, rel=2e-3)


def test_window_flow_bounds_hall_from_above_and_is_exact_on_pipelines() -> None:
    supply = [(LayerRange(0, 4), 4.0), (LayerRange(1, 3), 6.0), (LayerRange(3, 4), 1.0)]
    speeds = {NodeId(f"x{i}"): s for i, (_r, s) in enumerate(supply)}
    assign = {NodeId(f"x{i}"): r for i, (r, _s) in enumerate(supply)}
    # Layers {0, 3} share their holders and no window isolates them: windows overestimate.
    assert window_flow(supply, 4) >= layer_flow_bound(assign, speeds, 4)
    pipes = [
        (LayerRange(0, 1), 3.0),
        (LayerRange(1, 4), 6.0),
        (LayerRange(0, 2), 1.0),
        (LayerRange(2, 4), 4.0),
    ]
    speeds = {NodeId(f"p{i}"): s for i, (_r, s) in enumerate(pipes)}
    assign = {NodeId(f"p{i}"): r for i, (r, _s) in enumerate(pipes)}
    assert window_flow(pipes, 4) == pytest.approx(layer_flow_bound(assign, speeds, 4))


def test_fast_within_stated_bound_of_exact() -> None:
    """The heuristic's flow is within 10% of the MILP's proven bound on small mixed pools."""
    cat = load_catalog()
    from coordinator.scheduler.presets import model_preset

    model = model_preset("llama3-70b")
    names = ["H100", "RTX4090", "A100-40", "RTX3090", "L40S", "A100-80"] * 2
    nodes = [node_from_gpu(f"n{i:02d}", cat[g]) for i, g in enumerate(names)]
    opts = AllocateOptions(dtype_bytes=2, time_limit_s=4.0)
    perf = PerfModel.of(model, opts)
    fast = allocate(nodes, model, replace(opts, solver="fast"))
    _got, obj, bound, _status = solve_group(nodes, perf, time_limit_s=4.0)
    speeds = [(r, perf.speed(n)) for n in nodes if (r := fast.assignments[n.node_id])]
    fast_flow = window_flow(speeds, model.num_layers)
    assert fast_flow >= 0.90 * bound
    assert obj <= bound * (1 + 1e-6)


def test_exact_covers_a_tight_cluster_that_fits_one_context_per_layer() -> None:
    # Too tight for a full batch of KV on every layer, roomy enough for one context
    # (what MemoryModel.fits asks): the MILP must not call "no layers" optimal.
    spec = ModelSpec("llama", 30, 576, 1536, 9, 3, 64, 49152, tie_word_embeddings=True)
    opts = AllocateOptions(solver="exact")
    nodes = [NodeCapacity(NodeId(x), 450 * 2**20, 5e10, 1e10) for x in "ab"]
    got = allocate(nodes, spec, opts)
    held = sorted(r for r in got.assignments.values() if r is not None)
    assert held and held[0].start == 0 and held[-1].end == 30, got.reason
    assert got.throughput_tok_s > 0
