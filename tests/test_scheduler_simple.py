"""Properties of phase 1 and phase 2 that every solver must keep."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import (
    AllocateOptions,
    ClusterState,
    NodeCapacity,
    NodeLoad,
    RouteRequest,
    allocate,
    route,
)
from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.presets import model_preset
from parallax.errors import InvalidArgument, NotCovered
from parallax.types import LayerRange, NodeId

TINY = model_preset("smollm2-135m")
GB = 1e9


def node(i: int | str, gb: float, tflops: float = 10.0, region: str = "default") -> NodeCapacity:
    return NodeCapacity(
        node_id=NodeId(f"n{i}" if isinstance(i, int) else i),
        memory_bytes=gb * GB,
        flops=tflops * 1e12,
        mem_bandwidth=100e9,
        region=region,
    )


def check_allocation(nodes, alloc, model, opts) -> None:
    mem = MemoryModel.of(model, opts)
    assert set(alloc.assignments) == {n.node_id for n in nodes}
    by_id = {n.node_id: n for n in nodes}
    covered = [0] * model.num_layers
    for nid, r in alloc.assignments.items():
        if r is None:
            continue
        assert 0 <= r.start < r.end <= model.num_layers
        assert mem.need(r) <= mem.usable(by_id[nid].memory_bytes) + 1e-6, (nid, r)
        for layer in range(r.start, r.end):
            covered[layer] += 1
    assert min(covered) >= 1


def test_single_big_node_gets_everything() -> None:
    nodes = [node(0, 8)]
    alloc = allocate(nodes, TINY)
    assert alloc.assignments[NodeId("n0")] == LayerRange(0, TINY.num_layers)


def test_three_equal_nodes_split_in_thirds_when_asked() -> None:
    nodes = [node(i, 8) for i in range(3)]
    alloc = allocate(nodes, TINY, AllocateOptions(min_stages_when_possible=3))
    sizes = sorted(len(r) for r in alloc.assignments.values() if r is not None)
    assert len(sizes) == 3 and sum(sizes) == TINY.num_layers
    assert max(sizes) - min(sizes) <= 3  # ends carry embedding/head, middles a bit more


@pytest.mark.parametrize(("solver", "small_gb"), [("simple", 14), ("fast", 8), ("fast", 14)])
def test_smaller_memory_gets_fewer_layers(solver: str, small_gb: float) -> None:
    """Memory-proportional (simple) always; by speed (fast) when memory binds, never more."""
    model = model_preset("llama3-8b")
    opts = AllocateOptions(dtype_bytes=2, min_stages_when_possible=2, solver=solver)
    nodes = [node("big", 40), node("small", small_gb)]
    alloc = allocate(nodes, model, opts)
    check_allocation(nodes, alloc, model, opts)
    small, big = (len(alloc.assignments[NodeId(x)]) for x in ("small", "big"))
    assert small < big if solver == "simple" or small_gb < 10 else small <= big


def test_not_covered_says_how_much_memory_is_missing() -> None:
    model = model_preset("llama3-8b")
    with pytest.raises(NotCovered, match=r"at least .* GiB more"):
        allocate([node(0, 4), node(1, 4)], model, AllocateOptions(dtype_bytes=2))


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(InvalidArgument, match="twice"):
        allocate([node(0, 8), node(0, 8)], TINY)


def test_deterministic_regardless_of_input_order() -> None:
    nodes = [node(i, 0.1 + 0.05 * (i % 3)) for i in range(8)]
    opts = AllocateOptions(min_stages_when_possible=4)
    first = allocate(nodes, TINY, opts).assignments
    shuffled = nodes[:]
    random.Random(1).shuffle(shuffled)
    assert dict(allocate(shuffled, TINY, opts).assignments) == dict(first)


def feasible_pipeline(mems: list[float], mem: MemoryModel) -> bool:
    """Brute force: some ordered subset of nodes holds every layer as one pipeline (greedy
    fill in order is optimal for a fixed order: more layers early only helps the last)."""
    L = mem.num_layers
    for k in range(1, len(mems) + 1):
        for order in itertools.permutations(mems, k):
            if k == 1:
                if mem.max_layers(order[0], first=True, last=True) >= L:
                    return True
                continue
            done, ok = 0, True
            for i, m in enumerate(order[:-1]):
                take = min(mem.max_layers(m, first=i == 0), L - done - (k - 1 - i))
                if take < 1:
                    ok = False
                    break
                done += take
            if ok and 1 <= L - done <= mem.max_layers(order[-1], last=True):
                return True
    return False


@settings(max_examples=40, deadline=None)
@given(
    mems=st.lists(st.floats(0.02, 1.0), min_size=1, max_size=5),
    min_stages=st.integers(1, 6),
    solver=st.sampled_from(["simple", "fast"]),
)
def test_allocation_properties(mems: list[float], min_stages: int, solver: str) -> None:
    nodes = [node(i, m) for i, m in enumerate(mems)]
    opts = AllocateOptions(
        min_stages_when_possible=min_stages, kv_reserve_tokens=256, solver=solver
    )
    mem = MemoryModel.of(TINY, opts)
    try:
        alloc = allocate(nodes, TINY, opts)
    except NotCovered:
        assert not feasible_pipeline([n.memory_bytes for n in nodes], mem)
        return
    check_allocation(nodes, alloc, TINY, opts)


def load(nid: str, a: int, b: int, running: int = 0, region: str = "default", ms: float = 1.0):
    return NodeLoad(
        node_id=NodeId(nid),
        address=f"{nid}:1",
        range=LayerRange(a, b),
        running=running,
        layer_latency_ms=ms,
        region=region,
    )


REQ = RouteRequest("r", prompt_tokens=10, max_tokens=10)


def test_route_stitches_misaligned_replicas() -> None:
    state = ClusterState(10, (load("a", 0, 6), load("b", 4, 10), load("c", 0, 3)))
    r = route(REQ, state)
    assert r.covers(10)


def test_route_prefers_least_loaded_replica() -> None:
    state = ClusterState(
        4, (load("a", 0, 2, running=8), load("b", 0, 2, running=1), load("c", 2, 4))
    )
    r = route(REQ, state)
    assert [h.node_id for h in r.hops] == ["b", "c"]


def test_route_avoids_cross_region_hops() -> None:
    state = ClusterState(
        4,
        (
            load("a", 0, 2, region="eu"),
            load("b", 2, 4, region="us"),
            load("c", 2, 4, region="eu", running=10),
        ),
    )
    assert [h.node_id for h in route(REQ, state).hops] == ["a", "c"]


def test_route_raises_not_covered_with_gap() -> None:
    state = ClusterState(10, (load("a", 0, 4), load("b", 6, 10)))
    with pytest.raises(NotCovered, match=r"\[4,6\)"):
        route(REQ, state)


def test_route_can_avoid_a_failed_node() -> None:
    state = ClusterState(4, (load("a", 0, 4), load("b", 0, 2), load("c", 2, 4)))
    assert [h.node_id for h in route(REQ, state).hops] == ["a"]
    r = route(RouteRequest("r", 1, 1, avoid=frozenset({NodeId("a")})), state)
    assert [h.node_id for h in r.hops] == ["b", "c"]


@st.composite
def covered_states(draw):
    layers = draw(st.integers(1, 24))
    k = draw(st.integers(1, 12))
    nodes = []
    for i in range(k):
        a = draw(st.integers(0, layers - 1))
        b = draw(st.integers(a + 1, layers))
        nodes.append(
            load(
                f"n{i}",
                a,
                b,
                draw(st.integers(0, 20)),
                draw(st.sampled_from("xy")),
                draw(st.floats(0.1, 5.0)),
            )
        )
    return ClusterState(layers, tuple(nodes))


@settings(max_examples=150, deadline=None)
@given(state=covered_states())
def test_route_covers_exactly_once_or_raises(state: ClusterState) -> None:
    covered = set()
    for n in state.nodes:
        covered.update(range(n.range.start, n.range.end))
    try:
        r = route(REQ, state)
    except NotCovered:
        assert covered != set(range(state.num_layers))
        return
    assert r.covers(state.num_layers)
    by_id = {n.node_id: n for n in state.nodes}
    for h in r.hops:
        assert by_id[h.node_id].range.covers(h.range)
    ids = [h.node_id for h in r.hops]
    assert all(x != y for x, y in zip(ids, ids[1:], strict=False))
