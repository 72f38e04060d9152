"""The router picks the cheapest chain: checked against brute force on small random
clusters and a plain segment DP on a thousand nodes; load spreads; big clusters stay fast."""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import ClusterState, NodeLoad, Route, Router, RouteRequest, route
from coordinator.scheduler.route import (
    DEFAULT_LAYER_MS,
    KV_FULL_PENALTY_MS,
    SATURATION_BATCH,
    index_for,
    region_rtts,
)
from coordinator.scheduler.types import HOP_WAIT_STEPS
from parallax.errors import NotCovered
from parallax.types import LayerRange, NodeId

L = 60
REQ = RouteRequest("x", 10, 10)
# The search runs in float32: chains this close (relative) are ties. A few float32
# roundings of costs near the KV-full penalty (1e6 ms a layer) reach 1.2e-6 (CI found
# 2500017.5 against 2500014.5), so the tolerance is 1e-5.
REL = 1e-5


def layer_ms(n: NodeLoad, req: RouteRequest) -> float:
    """The cost model of route.py's docstring, written out again per node."""
    if n.node_id in req.avoid:
        return math.inf
    base = n.layer_latency_ms if n.layer_latency_ms > 0 else DEFAULT_LAYER_MS
    sat = max(1.0, n.layer_tokens_per_s * base / 1e3) if n.layer_tokens_per_s > 0 else None
    ms = base * (1 + n.running / (sat or SATURATION_BATCH))
    short = n.kv_capacity_tokens > 0 and n.kv_free_tokens < req.prompt_tokens + req.max_tokens
    return ms + (KV_FULL_PENALTY_MS if short else 0.0)


def wait_ms(state: ClusterState, n: NodeLoad, req: RouteRequest) -> float:
    """Entering a node waits half a step of its whole range (small clusters only)."""
    if not Router(state).with_wait:
        return 0.0
    held = min(n.range.end, state.num_layers) - n.range.start
    return HOP_WAIT_STEPS * held * layer_ms(n, req)


def chain_cost(state: ClusterState, req: RouteRequest, r: Route) -> float:
    """Cost of a returned chain, after checking it is one: covers [0, L) once, in
    order, each hop inside its node's range."""
    assert r.covers(state.num_layers)
    by_id = {n.node_id: n for n in state.nodes}
    rtt = region_rtts(state)
    cost, prev = 0.0, None
    for hop in r.hops:
        n = by_id[hop.node_id]
        assert n.range.covers(hop.range) and hop.address == n.address
        cost += len(hop.range) * layer_ms(n, req) + wait_ms(state, n, req)
        if prev is not None:
            assert prev.node_id != n.node_id  # consecutive hops on one node are merged
            cost += rtt[(prev.region, n.region)]
        prev = n
    return cost


def brute_force(state: ClusterState, req: RouteRequest) -> float:
    """Every chain: any node holding layer `at`, up to any later layer it holds."""
    rtt = region_rtts(state)
    best = math.inf

    def walk(at: int, prev: NodeLoad | None, cost: float) -> None:
        nonlocal best
        if at == state.num_layers:
            best = min(best, cost)
            return
        for n in state.nodes:
            if n.range.start <= at < n.range.end and n is not prev:
                link = rtt[(prev.region, n.region)] if prev is not None else 0.0
                link += wait_ms(state, n, req)
                for end in range(at + 1, min(n.range.end, state.num_layers) + 1):
                    walk(end, n, cost + link + (end - at) * layer_ms(n, req))

    walk(0, None, 0.0)
    return best


def segment_dp(state: ClusterState, req: RouteRequest) -> float:
    """The cheapest chain by a plain DP over segments and nodes (the old router)."""
    rtt, cuts = region_rtts(state), {0, state.num_layers}
    for n in state.nodes:
        cuts.update((n.range.start, min(n.range.end, state.num_layers)))
    cost = [layer_ms(n, req) for n in state.nodes]
    wait = [wait_ms(state, n, req) for n in state.nodes]
    prev: dict[int, float] = {}
    for a, b in itertools.pairwise(sorted(cuts)):
        exit_by_region: dict[str, float] = {}
        for i, v in prev.items():
            reg = state.nodes[i].region
            exit_by_region[reg] = min(exit_by_region.get(reg, math.inf), v)
        cur = {}
        for i, n in enumerate(state.nodes):
            if n.range.start <= a and b <= n.range.end:
                v = wait[i] if a == 0 else prev.get(i, math.inf)
                for reg, e in exit_by_region.items():
                    v = min(v, e + rtt[(reg, n.region)] + wait[i])
                cur[i] = v + (b - a) * cost[i]
        prev = cur
    return min(prev.values(), default=math.inf)


@st.composite
def small_clusters(draw: st.DrawFn) -> tuple[ClusterState, RouteRequest]:
    layers = draw(st.integers(1, 6))
    nodes = []
    for i in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, layers - 1))
        nodes.append(
            NodeLoad(
                NodeId(f"n{i}"),
                f"h{i}:1",
                LayerRange(start, draw(st.integers(start + 1, layers + 1))),
                running=draw(st.integers(0, 40)),
                kv_free_tokens=draw(st.sampled_from([0, 30, 100])),
                layer_latency_ms=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
                region=draw(st.sampled_from(["eu", "us"])),
                kv_capacity_tokens=draw(st.sampled_from([0, 100])),
                layer_tokens_per_s=draw(st.sampled_from([0.0, 500.0, 40000.0])),
            )
        )
    ids = [n.node_id for n in nodes]
    rtt = {
        (a, b): draw(st.floats(0.0, 150.0))
        for a, b in itertools.permutations(ids, 2)
        if draw(st.booleans())
    }
    avoid = frozenset(i for i in ids if draw(st.integers(0, 4)) == 0)
    return ClusterState(layers, tuple(nodes), rtt), RouteRequest("q", 20, 20, avoid)


@settings(max_examples=300, deadline=None)
@given(small_clusters())
def test_route_is_the_cheapest_of_all_chains(case: tuple[ClusterState, RouteRequest]) -> None:
    state, req = case
    want = brute_force(state, req)
    if math.isinf(want):
        with pytest.raises(NotCovered):
            route(req, state)
        return
    got = chain_cost(state, req, route(req, state))
    assert want * (1 - REL) <= got <= want * (1 + REL) + 1e-9


def big_cluster(n: int, seed: int = 0) -> ClusterState:
    """Overlapping spans of mixed lengths at every offset, three regions."""
    rng = random.Random(seed)
    loads = []
    for i in range(n):
        length = rng.choice([2, 5, 10, 14, 20, 22, 39, 64, 80])
        start = rng.randrange(0, 80 - length + 1)
        nid = f"{rng.choice('abc')}-{i:04d}"
        loads.append(
            NodeLoad(
                NodeId(nid),
                nid,
                LayerRange(start, start + length),
                layer_latency_ms=1.0,
                region=nid[0],
            )
        )
    return ClusterState(80, tuple(loads))


def with_random_loads(state: ClusterState, seed: int) -> ClusterState:
    rng = random.Random(seed)
    return replace(state, nodes=tuple(replace(n, running=rng.randint(0, 30)) for n in state.nodes))


def test_thousand_nodes_matches_a_plain_segment_dp_and_is_fast() -> None:
    topology = big_cluster(1000)
    router = Router(topology)
    assert len(router.segments) > 60
    for seed in range(4):
        state = with_random_loads(topology, seed)
        r = router.with_loads(state)
        assert r.index is router.index  # loads changed, topology did not: no re-index
        req = RouteRequest(str(seed), 100, 100, frozenset({state.nodes[seed].node_id}))
        want = segment_dp(state, req)
        assert chain_cost(state, req, r.route(req)) == pytest.approx(want, rel=REL)
    t = time.perf_counter()
    for i in range(20):
        r.route(RouteRequest(str(i), 100, 100))
    assert (time.perf_counter() - t) / 20 < 5e-3  # about 0.3 ms; slack for a busy CI box


@given(small_clusters(), st.data())
def test_a_running_floor_routes_as_the_raised_counts_would(case, data) -> None:
    # The gateway's own open chains, passed as a floor over the reported counts, must
    # route exactly as a state whose nodes carried the larger counts.
    state, req = case
    ids = [n.node_id for n in state.nodes]
    floor = data.draw(st.dictionaries(st.sampled_from(ids), st.integers(0, 40), max_size=4))
    raised = tuple(replace(n, running=max(n.running, floor.get(n.node_id, 0))) for n in state.nodes)
    try:
        want = route(req, replace(state, nodes=raised))
    except NotCovered:
        with pytest.raises(NotCovered):
            route(req, replace(state, running_floor=floor))
        return
    assert route(req, replace(state, running_floor=floor)) == want


def test_index_is_kept_until_the_topology_changes() -> None:
    state = big_cluster(50)
    ix = index_for(state)
    assert index_for(with_random_loads(state, 1)) is ix
    moved = replace(state.nodes[0], range=LayerRange(0, 80))
    other = replace(state, nodes=(moved, *state.nodes[1:]))
    assert index_for(other) is not ix
    assert not Router(state).with_loads(other).index.matches(state)


def test_a_loaded_node_is_avoided_when_an_equivalent_idle_one_exists() -> None:
    def two(busy: str) -> ClusterState:
        return ClusterState(
            L,
            (
                NodeLoad(NodeId("head"), "h", LayerRange(0, 30)),
                *(
                    NodeLoad(NodeId(x), x, LayerRange(30, L), running=20 if x == busy else 0)
                    for x in ("t1", "t2")
                ),
            ),
        )

    assert [h.node_id for h in route(REQ, two("t1")).hops] == ["head", "t2"]
    assert [h.node_id for h in route(REQ, two("t2")).hops] == ["head", "t1"]


def lanes(count: int, running: dict[str, int] | None = None) -> ClusterState:
    """`count` pipelines of three stages each, every one cut at different layers."""
    loads = []
    for p in range(count):
        a, b = 10 + p % 15, 35 + p % 20
        for s, (lo, hi) in enumerate(((0, a), (a, b), (b, L))):
            nid = f"p{p:02d}s{s}"
            loads.append(
                NodeLoad(NodeId(nid), nid, LayerRange(lo, hi), running=(running or {}).get(nid, 0))
            )
    return ClusterState(L, tuple(loads))


def test_misaligned_pipelines_route_around_loaded_and_failed_nodes() -> None:
    assert len(Router(lanes(30)).segments) > 30
    busy = {f"p{p:02d}s1": 50 for p in range(29)}
    r = route(REQ, lanes(30, busy))
    assert "p29s1" in [h.node_id for h in r.hops] and r.covers(L)
    r = route(RouteRequest("x", 10, 10, avoid=frozenset({NodeId("p29s1")})), lanes(30, busy))
    assert r.covers(L) and "p29s1" not in [h.node_id for h in r.hops]


def test_nodes_outside_whole_pipelines_still_get_traffic() -> None:
    """Overlapping spans: one node holds everything, the others overlap without
    tiling. Once the big node is loaded, requests go around it."""
    loads = [NodeLoad(NodeId("big"), "big", LayerRange(0, L), running=500)]
    for i in range(30):
        a = 2 * i
        loads.append(NodeLoad(NodeId(f"o{i:02d}"), "", LayerRange(a, min(L, a + 7))))
    r = route(REQ, ClusterState(L, tuple(loads)))
    assert r.covers(L) and "big" not in [h.node_id for h in r.hops]


def test_not_covered_names_the_gap_or_the_excluded_layers() -> None:
    state = ClusterState(L, (NodeLoad(NodeId("a"), "a", LayerRange(0, 20)),))
    with pytest.raises(NotCovered, match=r"\[20,60\)"):
        route(REQ, state)
    state = ClusterState(
        L,
        (
            NodeLoad(NodeId("a"), "a", LayerRange(0, 20)),
            NodeLoad(NodeId("b"), "b", LayerRange(20, L)),
        ),
    )
    with pytest.raises(NotCovered, match=r"\[20,60\) is excluded"):
        route(RouteRequest("x", 1, 1, avoid=frozenset({NodeId("b")})), state)


def test_a_hop_pays_for_waiting_on_a_big_nodes_step() -> None:
    """Z is 10% faster per layer than Y, but each of its steps runs 50 layers: a request
    entering it waits about half of one. The pipeline X, Y wins; without the wait, Z
    would (27 ms of layers against Y's 30)."""
    x = NodeLoad(NodeId("x"), "x:1", LayerRange(0, 30), layer_latency_ms=1.0)
    y = NodeLoad(NodeId("y"), "y:1", LayerRange(30, 60), layer_latency_ms=1.0)
    z = NodeLoad(NodeId("z"), "z:1", LayerRange(10, 60), layer_latency_ms=0.9)
    state = ClusterState(L, (x, y, z))
    assert Router(state).with_wait
    assert [h.node_id for h in route(REQ, state).hops] == ["x", "y"]
