"""The coordinator's node registry: membership, allocation, expiry and the status snapshot."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

import coordinator.registry as registry_module
from coordinator.registry import Registry
from coordinator.registry_types import HardwareInfo, NodeReport, NodeState
from parallax.errors import InvalidArgument
from parallax.types import LayerRange
from tests.support.registry import HALF, OPTS, SPEC, WHOLE, covers, hw, ready, registry


def test_join_allocates_once_the_model_fits_and_bumps_epochs() -> None:
    reg = registry()
    a, asg = reg.join("a", "127.0.0.1:5001", hw(HALF), now=0.0)
    assert asg.standby and asg.epoch == 0 and asg.model == "tiny"
    b, asg_b = reg.join("b", "127.0.0.1:5002", hw(HALF), now=1.0)
    ra, rb = reg.get(a).assignment, reg.get(b).assignment
    assert ra.epoch == 1, "a's range changed, so its epoch is bumped"
    assert covers([ra.range, rb.range]) and len(ra.range) + len(rb.range) == 8
    assert asg_b == rb and asg_b.epoch == 1
    assert a.startswith("a-") and b.startswith("b-") and a != b
    assert [d.kind for d in reg.decisions] == ["join", "not_covered", "join", "allocate"]


def test_smaller_memory_gets_fewer_layers() -> None:
    reg = registry()
    big, _ = reg.join("big", "127.0.0.1:5001", hw(0.9 * WHOLE), now=0.0)
    small, _ = reg.join("small", "127.0.0.1:5002", hw(0.35 * WHOLE), now=0.0)
    rb, rs = reg.get(big).assignment.range, reg.get(small).assignment.range
    assert rb is not None and rs is not None and covers([rb, rs])
    assert len(rs) < len(rb)


def test_cluster_state_lists_only_ready_nodes_that_loaded_their_assignment() -> None:
    reg = registry()
    a, _ = reg.join("a", "127.0.0.1:5001", hw(HALF), now=0.0)
    b, _ = reg.join("b", "127.0.0.1:5002", hw(HALF), now=0.0)
    assert reg.cluster_state().nodes == ()
    ready(reg, a, now=1.0)
    stale = NodeReport(state=NodeState.READY, loaded=LayerRange(0, 8))  # not what b was given
    reg.heartbeat(b, stale, {a: 0.7}, now=1.0)
    state = reg.cluster_state()
    assert [n.node_id for n in state.nodes] == [a]
    ready(reg, b, now=2.0)
    loaded_a = reg.get(a).assignment.range
    reg.heartbeat(a, NodeReport(state=NodeState.READY, loaded=loaded_a), {b: 0.5}, now=2.0)
    state = reg.cluster_state()
    assert sorted(n.node_id for n in state.nodes) == sorted([a, b])
    assert state.rtt_ms[(a, b)] == 0.5 and state.num_layers == 8
    assert covers([n.range for n in state.nodes])


def test_silent_node_dies_and_the_others_take_its_layers() -> None:
    reg = registry()
    ids = [reg.join(n, f"127.0.0.1:500{i}", hw(HALF), now=0.0)[0] for i, n in enumerate("abc")]
    holder = next(i for i in ids if reg.get(i).assignment.range is not None)
    others = [i for i in ids if i != holder]
    before = {i: reg.get(i).assignment for i in others}
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        for i in others:
            ready(reg, i, now=t)
        assert reg.expire(now=t) == ([holder] if t == 5.0 else [])
    assert reg.get(holder).state is NodeState.DEAD
    after = {i: reg.get(i).assignment for i in others}
    assert covers([a.range for a in after.values()])
    moved = [i for i in others if after[i].range != before[i].range]
    assert moved and all(after[i].epoch == before[i].epoch + 1 for i in moved)
    assert reg.decisions[-2].kind == "dead" and holder in reg.decisions[-2].message
    # A dead node's heartbeat is refused so it re-joins; re-joining replaces its record.
    assert reg.heartbeat(holder, NodeReport(), {}, now=6.0) is None
    again, _ = reg.join("x", reg.get(holder).address, hw(HALF), now=6.0)
    assert again != holder and reg.get(holder) is None and len(reg.nodes) == 3
    assert sorted(reg.expire(now=6.0 + reg.forget_after_s)) == sorted([*others, again])


def test_leave_reallocates_and_unknown_node_is_refused() -> None:
    reg = registry()
    a, _ = reg.join("a", "127.0.0.1:5001", hw(), now=0.0)
    b, _ = reg.join("b", "127.0.0.1:5002", hw(HALF), now=0.0)
    c, _ = reg.join("c", "127.0.0.1:5003", hw(HALF), now=0.0)
    assert reg.leave(b, now=1.0) and not reg.leave(b, now=1.0)
    assert reg.decisions[-2].kind == "leave" and b in reg.decisions[-2].message
    assert covers([reg.get(a).assignment.range, reg.get(c).assignment.range])
    assert reg.heartbeat(b, NodeReport(), {}, now=1.0) is None
    assert reg.heartbeat("nobody-123", NodeReport(), {}, now=1.0) is None


def test_too_little_memory_keeps_everyone_on_standby_until_help_arrives() -> None:
    reg = registry()
    a, asg = reg.join("a", "127.0.0.1:5001", hw(0.3 * WHOLE), now=0.0)
    assert asg.standby and asg.epoch == 0
    assert reg.decisions[-1].kind == "not_covered" and "add nodes" in reg.decisions[-1].message
    snap = reg.status_snapshot(now=0.5)
    assert snap["coverage"]["gaps"] == [[0, 8]]
    b, _ = reg.join("b", "127.0.0.1:5002", hw(0.9 * WHOLE), now=1.0)
    assert covers([reg.get(a).assignment.range, reg.get(b).assignment.range])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": "tpu"}, "device"),
        ({"flops": 0.0}, "flops"),
        ({"memory_bytes": float("nan")}, "memory_bytes"),
        ({"mem_bandwidth": -1.0}, "mem_bandwidth"),
    ],
)
def test_bad_hardware_is_rejected(kwargs: dict, match: str) -> None:
    fields = {"device": "cpu", "flops": 1.0, "mem_bandwidth": 1.0, "memory_bytes": 1.0} | kwargs
    with pytest.raises(InvalidArgument, match=match):
        HardwareInfo(**fields)


def test_bad_address_and_report_are_rejected() -> None:
    reg = registry()
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        reg.join("a", "no-port", hw(), now=0.0)
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        reg.join("a", "127.0.0.1:5001", hw(), now=0.0, metrics_address="metrics-without-port")
    with pytest.raises(InvalidArgument, match="running_requests"):
        NodeReport(running_requests=-1)


def test_snapshot_is_json_and_complete() -> None:
    reg = registry()
    a, _ = reg.join("a", "127.0.0.1:5001", hw(HALF), now=0.0)
    b, _ = reg.join("b", "127.0.0.1:5002", hw(HALF), now=0.0)
    ready(reg, a, now=1.0)
    snap = json.loads(json.dumps(reg.status_snapshot(now=3.0)))
    assert snap["model"] == {"name": "tiny", "num_layers": 8}
    assert set(snap) == {"time", "model", "nodes", "allocation", "coverage", "decisions"}
    node = {n["node_id"]: n for n in snap["nodes"]}
    assert node[a]["state"] == "ready" and node[a]["serving"] is True
    assert node[a]["heartbeat_age_s"] == 2.0 and node[b]["heartbeat_age_s"] == 3.0
    assert node[b]["state"] == "joining" and node[b]["loaded"] is None
    assert node[a]["hardware"]["memory_bytes"] == HALF
    assert set(node[a]["status"]) >= {"running_requests", "kv_free_tokens", "tokens_per_s"}
    assert snap["coverage"]["gaps"] == []
    assert snap["coverage"]["serving_gaps"] == [node[b]["assignment"]["range"]]
    assert snap["allocation"]["assignments"][a] == node[a]["assignment"]["range"]
    assert snap["decisions"][0]["kind"] == "allocate"  # newest first


def test_live_routing_steers_off_a_node_whose_kv_is_full() -> None:
    from coordinator.scheduler import RouteRequest, route

    reg = registry()
    a, _ = reg.join("a", "127.0.0.1:5001", hw(), now=0.0)
    b, _ = reg.join("b", "127.0.0.1:5002", hw(), now=0.0)
    ra, rb = reg.get(a).assignment.range, reg.get(b).assignment.range
    assert ra == rb == LayerRange(0, 8), "two whole replicas"

    def report(node, free: int, running: int) -> None:
        rng = reg.get(node).assignment.range
        status = NodeReport(
            state=NodeState.READY,
            loaded=rng,
            running_requests=running,
            kv_free_tokens=free,
            kv_total_tokens=4096,
            kv_block_tokens=32 if node == a else 0,
        )
        reg.heartbeat(node, status, {}, now=1.0)

    # a is idle but its KV is nearly full; b is busier with room to spare.
    report(a, free=10, running=0)
    report(b, free=4000, running=6)
    state = reg.cluster_state()
    assert {n.node_id: n.kv_capacity_tokens for n in state.nodes} == {a: 4096, b: 4096}
    assert {n.node_id: n.kv_block_tokens for n in state.nodes} == {a: 32, b: 0}
    # Their decode capacity, so the router knows when each saturates (the same hardware).
    speeds = {n.layer_tokens_per_s for n in state.nodes}
    assert len(speeds) == 1 and speeds.pop() > 0
    hops = route(RouteRequest("r", prompt_tokens=50, max_tokens=50), state).hops
    assert [h.node_id for h in hops] == [b]


def test_cluster_state_is_kept_for_loads_and_rebuilt_for_topology() -> None:
    import time

    reg = Registry("tiny", SPEC, dead_after_s=4.0, options=OPTS, state_max_age_s=0.2)
    a, _ = reg.join("a", "127.0.0.1:5001", hw(HALF), now=0.0)
    b, _ = reg.join("b", "127.0.0.1:5002", hw(HALF), now=0.0)
    ready(reg, a, now=1.0)
    first = reg.cluster_state()
    assert [n.node_id for n in first.nodes] == [a]
    busy = NodeReport(state=NodeState.READY, loaded=reg.get(a).assignment.range, running_requests=7)
    reg.heartbeat(a, busy, {}, now=1.5)
    assert reg.cluster_state() is first, "a load-only heartbeat keeps the state a while"
    ready(reg, b, now=2.0)  # b becomes routable: at once
    second = reg.cluster_state()
    assert sorted(n.node_id for n in second.nodes) == sorted([a, b])
    assert {n.node_id: n.running for n in second.nodes}[a] == 7
    reg.heartbeat(a, dataclasses.replace(busy, running_requests=9), {}, now=2.5)
    time.sleep(0.25)  # past state_max_age_s: the loads are read again
    assert {n.node_id: n.running for n in reg.cluster_state().nodes}[a] == 9
    assert reg.leave(b, now=3.0)
    assert [n.node_id for n in reg.cluster_state().nodes] == [a], "a leave shows at once"


def test_requests_wait_while_a_death_is_being_re_allocated(monkeypatch) -> None:
    # Between a node's death and the end of the re-allocation (seconds of solving on a
    # big cluster), the assignments leave its layers to nobody: the gateway must wait
    # then, not answer 503 "no node holds layers" (seen in the chaos e2e test).
    reg = registry()
    ids = [reg.join(n, f"127.0.0.1:500{i}", hw(HALF), now=0.0)[0] for i, n in enumerate("abc")]
    holder = next(i for i in ids if reg.get(i).assignment.range is not None)
    others = [i for i in ids if i != holder]
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        for i in ids if t < 2.0 else others:
            ready(reg, i, now=t)
    assert reg.recovering(now=6.0)
    solving, release = threading.Event(), threading.Event()
    real = registry_module.allocate_by

    def slow(*args, **kwargs):
        solving.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(registry_module, "allocate_by", slow)
    expiry = threading.Thread(target=reg.expire, kwargs={"now": 5.5})
    expiry.start()
    try:
        assert solving.wait(10)
        assert reg.get(holder).state is NodeState.DEAD
        assert reg.recovering(now=6.0)
    finally:
        release.set()
        expiry.join(10)
    assert reg.recovering(now=6.0) and covers([reg.get(i).assignment.range for i in others])
