"""Routing in big clusters: the whole-pipeline fast path stays valid and spreads load."""

from __future__ import annotations

from coordinator.scheduler import ClusterState, NodeLoad, Router, RouteRequest, route
from coordinator.scheduler.route import DP_MAX_SEGMENTS
from parallax.types import LayerRange, NodeId

L = 60


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


def test_fast_path_used_and_covers() -> None:
    state = lanes(30)
    router = Router(state)
    assert len(router.segments) > DP_MAX_SEGMENTS and len(router.lanes) == 30
    r = router.route(RouteRequest("x", 10, 10))
    assert r.covers(L) and len(r.hops) == 3


def test_fast_path_avoids_loaded_pipelines_and_failed_nodes() -> None:
    busy = {f"p{p:02d}s1": 50 for p in range(29)}
    r = route(RouteRequest("x", 10, 10), lanes(30, busy))
    assert [h.node_id for h in r.hops] == ["p29s0", "p29s1", "p29s2"]
    r = route(RouteRequest("x", 10, 10, avoid=frozenset({NodeId("p29s1")})), lanes(30, busy))
    assert r.covers(L) and "p29s1" not in [h.node_id for h in r.hops]


def test_nodes_outside_whole_pipelines_still_get_traffic() -> None:
    """Overlapping spans: one node holds everything (the only lane), the others overlap
    without tiling. Once the big node is loaded, requests must go around it."""
    loads = [NodeLoad(NodeId("big"), "big", LayerRange(0, L), running=500)]
    for i in range(30):
        a = 2 * i
        loads.append(NodeLoad(NodeId(f"o{i:02d}"), "", LayerRange(a, min(L, a + 7))))
    router = Router(ClusterState(L, tuple(loads)))
    assert len(router.segments) > DP_MAX_SEGMENTS and len(router.lanes) == 1
    r = router.route(RouteRequest("x", 10, 10))
    assert r.covers(L) and "big" not in [h.node_id for h in r.hops]
