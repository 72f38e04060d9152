"""Pure views of the registry's node records: what the router, the allocator and the
gateway read. No locks and no clock here: the registry passes a snapshot of records."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from coordinator.registry_types import NodeRecord
from coordinator.scheduler import ClusterState, NodeCapacity, NodeLoad
from coordinator.scheduler.perf import PerfModel
from parallax.types import NodeId

# A node whose measured layer time is this many times what its claimed hardware predicts
# is flagged (a volunteer may overstate what it has; the measurement wins either way).
SLOWER_THAN_CLAIMED = 4.0


def routable_state(records: Sequence[NodeRecord], num_layers: int) -> ClusterState:
    """Routable nodes only (ready, with the assigned range loaded), with their loads."""
    serving = [r for r in records if r.serving]
    ids = {r.node_id for r in serving}
    loads = tuple(
        NodeLoad(
            node_id=r.node_id,
            address=r.address,
            range=r.assignment.range,
            running=r.report.running_requests,
            kv_free_tokens=r.report.kv_free_tokens,
            # Without its capacity the router cannot trust kv_free_tokens, and would
            # send requests to a node whose KV is full (each then fails and replays).
            kv_capacity_tokens=r.report.kv_total_tokens,
            kv_block_tokens=r.report.kv_block_tokens,
            max_running=r.report.max_running,
            layer_latency_ms=r.report.layer_latency_ms,
            region=r.hardware.region,
            # When it saturates and queues: the performance model's decode capacity
            # from its measured hardware, calibrated by its reported layer latency.
            layer_tokens_per_s=r.decode_speed,
        )
        for r in serving
        if r.assignment.range is not None
    )
    rtt = {(r.node_id, p): ms for r in serving for p, ms in r.rtt_ms if p in ids}
    return ClusterState(num_layers=num_layers, nodes=loads, rtt_ms=rtt)


def capacity_of(r: NodeRecord) -> NodeCapacity:
    """What the scheduler knows of a node: measured hardware and reported layer latency."""
    return NodeCapacity(
        node_id=r.node_id,
        memory_bytes=r.hardware.memory_bytes,
        flops=r.hardware.flops,
        mem_bandwidth=r.hardware.mem_bandwidth,
        region=r.hardware.region,
        layer_latency_ms=r.report.layer_latency_ms or None,
        # The batch those steps ran at, about: the planner compares like with like.
        latency_batch=float(max(1, r.report.running_requests)),
        current=r.assignment.range,
        footprint=r.hardware.footprint,
    )


def assignments_cover(records: Sequence[NodeRecord], num_layers: int) -> bool:
    """Whether live nodes' assignments cover [0, num_layers), loaded or not."""
    ranges = sorted(
        (r.assignment.range.start, r.assignment.range.end)
        for r in records
        if r.alive and r.assignment.range is not None
    )
    reach = 0
    for start, end in ranges:
        if start > reach:
            return False
        reach = max(reach, end)
    return reach >= num_layers


def closest_peers(records: Sequence[NodeRecord], node_id: NodeId, limit: int) -> list[NodeRecord]:
    """Other live nodes, closest in the pipeline (by first layer) to `node_id` first."""
    me = next((r for r in records if r.node_id == node_id), None)
    start = me.assignment.range.start if me and me.assignment.range else 0
    others = [r for r in records if r.alive and r.node_id != node_id]
    others.sort(key=lambda r: abs((r.assignment.range.start if r.assignment.range else 0) - start))
    return others[:limit]


def node_slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    return keep.strip("-")[:32] or "node"


def range_text(rec: NodeRecord) -> str:
    r = rec.assignment.range
    return f"layers {r}" if r is not None else "no layers"


def calibrated(perf: PerfModel, old: NodeRecord, new: NodeRecord) -> tuple[NodeRecord, str]:
    """`new` with its speed from its measured layer time, and the message flagging it
    ("" if none) when it first turns out far slower than the hardware it claimed."""
    cap = capacity_of(new)
    slow = perf.calibration(cap)
    flag = slow if slow > SLOWER_THAN_CLAIMED else 0.0
    message = ""
    if flag and not old.slower_than_claimed:
        message = (
            f"{new.node_id} runs {slow:.1f}x slower than the hardware it claimed; "
            "it is planned and routed by its measured speed"
        )
    return dataclasses.replace(new, decode_speed=perf.speed(cap), slower_than_claimed=flag), message
