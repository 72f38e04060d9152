"""The performance model's throughput estimate against the simulator, on small pools.

The heuristic picks among its candidates (disjoint pipelines, packed overlapping spans)
by the estimate, so the estimate must track what the simulator serves. The simulator
has its own cost model (bench/sim/cost.py: kernels in sequence, attention over real
lengths, KV in blocks) and shares no estimate code with the planner. Measured (Dec 2026,
llama3-70b on 6-16 mixed GPUs, our router, 100-300 requests at once): simulated /
estimated 0.64-0.86 for the planner's pipelines and packed spans on 6, 8 and 16 nodes,
0.43 on one 12-node packing; Petals' join-order spans 0.42-1.23 (not a shape the
planner builds, so not checked here). Stated tolerance: simulated within [0.5, 1.5] x
estimated for the planner's own shapes.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from bench.sim import designs
from bench.sim.cost import SimCost
from bench.sim.engine import simulate
from bench.sim.scenarios import OUTPUT, PROMPT, make_scenario, with_solver
from bench.sim.workload import poisson_requests
from coordinator.scheduler.allocate import allocate
from coordinator.scheduler.estimate import estimate, group_estimate
from coordinator.scheduler.fast import packed_plan, plan_k
from coordinator.scheduler.pack import pack
from coordinator.scheduler.perf import PerfModel

LOW, HIGH = 0.5, 1.5


@pytest.mark.parametrize(("size", "seed"), [(6, 2), (8, 1)])
def test_estimate_tracks_simulator_on_pipelines_and_overlaps(size: int, seed: int) -> None:
    s = make_scenario("small", size, 1, seed)
    perf = PerfModel.of(s.model, s.options)
    packed = pack(s.nodes, perf)
    assert packed is not None
    shapes = {
        "fast": dict(allocate(s.nodes, s.model, with_solver(s, "fast", 1.0)).assignments),
        "packed": {n.node_id: r for n, r in packed},
        "aligned packed": {n.node_id: r for n, r in pack(s.nodes, perf, aligned=True) or []},
        "one pipeline": {
            n.node_id: r for pipe in plan_k(s.nodes, 1, perf).pipelines for n, r in pipe
        },
    }
    burst = poisson_requests(100, 1e6, 0, PROMPT, OUTPUT)
    for name, assign in shapes.items():
        est = estimate(assign, s.nodes, perf).throughput_tok_s
        sim = simulate(
            s.nodes,
            assign,
            SimCost.of(s.model, s.options),
            burst,
            designs.ours_policy(),
            saturated=True,
        )
        ratio = sim.throughput_tok_s / est
        assert LOW <= ratio <= HIGH, (
            f"{name}: simulated {sim.throughput_tok_s:.0f} tok/s, estimated {est:.0f}"
        )


def test_packed_spans_cover_and_fit() -> None:
    s = make_scenario("small", 12, 1, 4)
    perf = PerfModel.of(s.model, s.options)
    held = pack(s.nodes, perf)
    assert held is not None
    assert all(perf.mem.fits(n.memory_bytes, r) for n, r in held)
    covered = set()
    for _n, r in held:
        covered.update(range(r.start, r.end))
    assert covered == set(range(perf.num_layers))
    # Spans overlap (more layers held than the model has) and none is empty.
    assert sum(len(r) for _n, r in held) > perf.num_layers


@pytest.mark.parametrize(("size", "seed"), [(8, 1), (12, 4), (24, 3)])
def test_aligned_packing_lets_chains_enter_every_span_at_its_start(size: int, seed: int) -> None:
    """Aligned spans start at 0, at another span's end, or at the last window: a chain
    reaches each node at its start and runs its whole range. The free packing on the
    same nodes does not (so the flag is what aligns them), and both cover and fit."""
    s = make_scenario("small", size, 1, seed)
    perf = PerfModel.of(s.model, s.options)
    L = perf.num_layers
    free, aligned = pack(s.nodes, perf), pack(s.nodes, perf, aligned=True)
    assert free is not None and aligned is not None
    assert unaligned_spans(free, L), "the free packing already aligns: the test shows nothing"
    assert unaligned_spans(aligned, L) == []
    assert all(perf.mem.fits(n.memory_bytes, r) for n, r in aligned)
    assert {i for _n, r in aligned for i in range(r.start, r.end)} == set(range(L))


def unaligned_spans(held: list, num_layers: int) -> list:
    ends = {0} | {r.end for _n, r in held}
    return [r for _n, r in held if r.start not in ends and r.start != num_layers - len(r)]


@pytest.mark.parametrize(("seed", "aligned"), [(16, True), (2, False)])
def test_aligned_spans_replace_the_packing_only_when_rated_no_lower(
    seed: int, aligned: bool
) -> None:
    """The packed candidate takes aligned spans where the estimate rates them at least
    as high as the free packing (16 nodes, seed 16: 469 against 463 tok/s), the free
    spans where it rates them lower (seed 2), and is compared with the pipelines at the
    free packing's rating either way."""
    s = make_scenario("small", 16, 1, seed)
    perf = PerfModel.of(s.model, s.options)
    plan = packed_plan(list(s.nodes), perf, 1)
    assert plan is not None
    held = plan.pipelines[0]
    assert (unaligned_spans(held, perf.num_layers) == []) is aligned
    rated = group_estimate(held, perf).throughput_tok_s
    if aligned:
        assert rated >= plan.throughput
    else:
        assert rated == pytest.approx(plan.throughput)


def test_the_reason_says_what_was_built_per_region_group() -> None:
    """The dashboard shows the allocation's reason: it must name the shape, not call
    overlapping spans pipelines (nor disjoint pipelines packed spans)."""
    s = make_scenario("two", 32, 2, 32)
    reason = allocate(s.nodes, s.model, with_solver(s, "fast", 1.0)).reason
    assert "eu: " in reason and "us: " in reason
    for name, size in (("one", 16), ("small", 8), ("six", 6)):
        sc = make_scenario(name, size, 1, size)
        alloc = allocate(sc.nodes, sc.model, with_solver(sc, "fast", 1.0))
        held = [r for r in alloc.assignments.values() if r is not None]
        shape = re.search(r"us: (\d+) (?:tiered )?pipeline\(s\)", alloc.reason)
        if "packed overlapping spans" in alloc.reason:
            assert f"us: packed overlapping spans on {len(held)} node(s)" in alloc.reason
        else:
            # Every pipeline has its own first stage.
            assert shape is not None, alloc.reason
            assert int(shape.group(1)) <= sum(r.start == 0 for r in held), alloc.reason


def test_a_node_that_measures_slower_gets_fewer_layers() -> None:
    """Heartbeats carry each node's measured per-layer step time and the batch it ran
    at; the planner scales its roofline by it, so a node measured slower than its specs
    say takes fewer layers."""
    s = make_scenario("pair", 2, 1, 5, model="llama3-8b")
    twin = replace(s.nodes[0], memory_bytes=12 * 2**30)  # two must share the model
    perf = PerfModel.of(s.model, s.options)
    modelled_ms = perf.roofline_s(twin, 8.0) * 1e3
    slow = replace(twin, node_id="slow", layer_latency_ms=3 * modelled_ms, latency_batch=8.0)
    fast = replace(twin, node_id="fast", layer_latency_ms=modelled_ms, latency_batch=8.0)
    assert perf.layer_s(slow, 8.0) == pytest.approx(3 * perf.layer_s(fast, 8.0))
    opts = with_solver(s, "fast", 1.0)
    got = allocate([slow, fast], s.model, opts).assignments
    only = {
        n: set(range(got[n].start, got[n].end)) - set(range(got[m].start, got[m].end))
        for n, m in (("slow", "fast"), ("fast", "slow"))
    }
    assert len(only["slow"]) < len(only["fast"]), got
