"""The dashboard's pure parts: layer map grouping, traffic figures, decision counting,
and the backend wrapper that observes requests."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from coordinator.dashboard.observe import ObservedBackend, observed_route
from coordinator.dashboard.traffic import WINDOW_S, Traffic
from coordinator.dashboard.view import ClusterInfo, layer_map
from coordinator.gateway.backend import GenerationRequest, TokenOut
from coordinator.metrics import CoordinatorMetrics
from coordinator.registry_types import Decision
from coordinator.scheduler.types import ClusterState, Hop, Route, RouteRequest
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId


def node(name: str, rng: tuple[int, int] | None, state: str = "ready") -> dict:
    return {
        "node_id": f"{name}-id",
        "name": name,
        "state": state,
        "serving": state == "ready",
        "assignment": {"range": list(rng) if rng else None, "standby": rng is None},
    }


def snapshot(nodes: list[dict], layers: int = 8, gaps=()) -> dict:
    return {
        "model": {"name": "m", "num_layers": layers},
        "nodes": nodes,
        "coverage": {"gaps": [list(g) for g in gaps], "serving_gaps": [list(g) for g in gaps]},
    }


def names(group: dict) -> list[list[str]]:
    return [[b["name"] for b in lane] for lane in group["lanes"]]


def test_two_replicas_each_get_a_group_of_one_lane():
    snap = snapshot([node("a", (0, 4)), node("b", (4, 8)), node("c", (0, 5)), node("d", (5, 8))])
    groups = layer_map(snap)["groups"]
    assert [g["kind"] for g in groups] == ["replica", "replica"]
    assert sorted(names(g)[0][0] for g in groups) == ["a", "c"]
    assert all(len(g["lanes"]) == 1 and len(g["lanes"][0]) == 2 for g in groups)


def test_overlapping_stages_stack_in_one_replica():
    snap = snapshot([node("a", (0, 4)), node("b", (3, 6)), node("c", (5, 8))])
    (group,) = layer_map(snap)["groups"]
    assert group["kind"] == "replica"
    assert names(group) == [["a", "c"], ["b"]]


def test_an_overlapping_stage_does_not_take_another_replicas_tile():
    # a+c overlap, b+d tile: greedily taking c for a would leave b without a partner.
    snap = snapshot([node("a", (0, 7)), node("b", (0, 3)), node("c", (3, 8)), node("d", (5, 8))])
    groups = layer_map(snap)["groups"]
    assert [g["kind"] for g in groups] == ["replica", "replica"]
    members = {frozenset(name for lane in names(g) for name in lane) for g in groups}
    assert members == {frozenset("ad"), frozenset("bc")}


def test_overlapping_pipelines_pair_up_so_both_complete():
    # a can finish with c or d; only d can finish b. Taking d for a would strand b.
    snap = snapshot(
        [node("a", (0, 29)), node("b", (0, 13)), node("c", (17, 30)), node("d", (1, 30))], layers=30
    )
    groups = layer_map(snap)["groups"]
    assert [g["kind"] for g in groups] == ["replica", "replica"]
    members = {frozenset(name for lane in names(g) for name in lane) for g in groups}
    assert members == {frozenset("ac"), frozenset("bd")}


def test_a_node_no_pipeline_needs_is_extra():
    snap = snapshot([node("a", (0, 4)), node("b", (2, 6)), node("c", (4, 8))])
    replica, extra = layer_map(snap)["groups"]
    assert (replica["kind"], names(replica)) == ("replica", [["a", "c"]])
    assert (extra["kind"], names(extra)) == ("extra", [["b"]])


def test_holes_dead_nodes_and_standby():
    snap = snapshot(
        [
            node("a", (0, 3)),
            node("b", (5, 8)),
            node("dead", (3, 5), state="dead"),
            node("idle", None, state="standby"),
        ],
        gaps=[(3, 5)],
    )
    m = layer_map(snap)
    kinds = [g["kind"] for g in m["groups"]]
    assert kinds == ["partial", "extra", "offline"]
    assert names(m["groups"][2]) == [["dead"]]
    assert m["standby"] == ["idle"]
    assert m["gaps"] == [[3, 5]]


def test_join_command_never_shows_the_token():
    assert ClusterInfo("h:7000", "m", False).join_command() == "parallax join --coordinator h:7000"
    with_token = ClusterInfo("h:7000", "m", True).join_command()
    assert with_token.endswith("--join-token $PARALLAX_JOIN_TOKEN")


def test_join_command_asks_for_certificates_when_the_cluster_uses_tls():
    cmd = ClusterInfo("h:7000", "m", True, tls=True).join_command()
    assert "--join-token $PARALLAX_JOIN_TOKEN" in cmd and "--tls-ca ca.pem" in cmd
    assert "--tls" not in ClusterInfo("h:7000", "m", True).join_command()


def route(*hops: tuple[str, int, int]) -> Route:
    return Route(tuple(Hop(NodeId(n), "x:1", LayerRange(a, b)) for n, a, b in hops))


def test_traffic_rates_percentiles_and_active_routes():
    t = Traffic()
    t.started("r1", 100.0)
    t.routed("r1", route(("a", 0, 4), ("b", 4, 8)))
    for i in range(11):  # first token after 0.5 s, then one every 0.1 s
        t.token("r1", 100.5 + i * 0.1)
    snap = t.snapshot(102.0)  # the last whole second is 101
    assert snap["active"][0]["route"] == [
        {"node_id": "a", "range": [0, 4]},
        {"node_id": "b", "range": [4, 8]},
    ]
    assert snap["active"][0]["tokens"] == 11
    assert snap["ttft_s"] == {"p50": pytest.approx(0.5), "p99": pytest.approx(0.5)}
    assert snap["inter_token_s"]["p50"] == pytest.approx(0.1)
    assert len(snap["series"]["requests"]) == WINDOW_S
    assert sum(snap["series"]["tokens"]) == 11 and sum(snap["series"]["requests"]) == 1
    t.ended("r1", "stop")
    t.started("r2", 102.0)
    t.ended("r2", "error")
    after = t.snapshot(103.0)
    assert after["active"] == []
    assert after["ended"] == {"finished": 1, "cancelled": 0, "failed": 1}
    # Old buckets leave the window.
    assert sum(t.snapshot(100.0 + WINDOW_S + 5)["series"]["tokens"]) == 0


def test_decision_counts_never_go_down_when_the_log_rolls():
    m = CoordinatorMetrics()
    log: deque[Decision] = deque(maxlen=3)

    def count(kind: str) -> float:
        return m.registry.get_sample_value("parallax_scheduler_decisions_total", {"kind": kind})

    for i in range(5):
        log.append(Decision(float(i), "join", f"n{i}"))
        m.count_decisions(tuple(log))
    m.count_decisions(tuple(log))  # nothing new: nothing counted
    assert count("join") == 5
    for i in range(4):  # more than the log holds between two reads
        log.append(Decision(10.0 + i, "dead", f"d{i}"))
    m.count_decisions(tuple(log))
    assert count("dead") == 3  # the log kept only three: those are all that can be seen


class ScriptedBackend:
    def __init__(self, route_fn) -> None:
        self.route_fn = route_fn

    def check_ready(self) -> None:
        pass

    async def generate(self, req: GenerationRequest):
        self.route_fn(RouteRequest(req.request_id, 3, 4), ClusterState(8, ()))
        for i in range(3):
            await asyncio.sleep(0)
            yield TokenOut(token_id=i)
        yield TokenOut(token_id=9, finished=True, finish_reason="length")


def test_observed_backend_records_tokens_latency_route_and_outcome():
    traffic, metrics = Traffic(), CoordinatorMetrics()
    seen_routes = []

    def fake_router(req, state):
        seen_routes.append(traffic.snapshot(0)["active"])  # the request is active by then
        return route(("a", 0, 8))

    clock = iter(float(x) for x in range(100, 200))
    backend = ObservedBackend(
        ScriptedBackend(observed_route(fake_router, traffic)),
        traffic,
        metrics,
        clock=lambda: next(clock),
    )
    req = GenerationRequest("req-1", (1, 2, 3), SamplingParams(max_tokens=4))

    async def run() -> list[TokenOut]:
        return [t async for t in backend.generate(req)]

    tokens = asyncio.run(run())
    assert len(tokens) == 4 and seen_routes and seen_routes[0][0]["request_id"] == "req-1"
    value = metrics.registry.get_sample_value
    assert value("parallax_requests_total", {"outcome": "length"}) == 1
    assert value("parallax_generated_tokens_total") == 4
    assert value("parallax_prompt_tokens_total") == 3
    assert value("parallax_time_to_first_token_seconds_count") == 1
    assert value("parallax_time_to_first_token_seconds_sum") == 1.0  # one clock tick
    assert value("parallax_inter_token_seconds_count") == 3
    assert value("parallax_active_requests") == 0
    assert traffic.snapshot(200.0)["ended"]["finished"] == 1
