"""The Coordinator gRPC service (control plane): Join, Heartbeat, Leave.

A thin translation layer: protobuf in, validated frozen records into the
`Registry`, protobuf out. Bad input gets INVALID_ARGUMENT and the service keeps
serving; a wrong join token gets PERMISSION_DENIED. Join and Leave re-run the
allocator, which may take seconds, so they run in a worker thread; heartbeats
are quick and run on the loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Callable

import grpc

from coordinator.registry import Registry
from coordinator.registry_types import Assignment, HardwareInfo, NodeReport, NodeState
from parallax.errors import InvalidArgument
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.types import LayerRange, NodeId

log = logging.getLogger(__name__)


def assignment_to_pb(a: Assignment) -> pb.Assignment:
    r = a.range
    return pb.Assignment(
        model=a.model,
        start=r.start if r else 0,
        end=r.end if r else 0,
        standby=r is None,
        epoch=a.epoch,
    )


def hardware_from_pb(msg: pb.Hardware) -> HardwareInfo:
    return HardwareInfo(
        device=msg.device,
        device_name=msg.device_name,
        flops=msg.flops,
        mem_bandwidth=msg.mem_bandwidth,
        memory_bytes=msg.memory_bytes,
    )


def report_from_pb(msg: pb.NodeStatus) -> NodeReport:
    try:
        state = NodeState(msg.state) if msg.state else NodeState.JOINING
    except ValueError:
        raise InvalidArgument(
            f"node status state={msg.state!r} is not one of loading, ready, standby, leaving"
        ) from None
    loaded = LayerRange(msg.start, msg.end) if msg.end > msg.start else None
    return NodeReport(
        state=state,
        loaded=loaded,
        running_requests=msg.running_requests,
        kv_free_tokens=msg.kv_free_tokens,
        kv_total_tokens=msg.kv_total_tokens,
        layer_latency_ms=msg.layer_latency_ms,
        tokens_per_s=msg.tokens_per_s,
    )


def rtts_from_pb(rtts: list[pb.PeerRtt]) -> dict[NodeId, float]:
    out: dict[NodeId, float] = {}
    for r in rtts:
        if not (math.isfinite(r.rtt_ms) and r.rtt_ms >= 0):
            raise InvalidArgument(f"rtt to {r.node_id!r} is {r.rtt_ms!r} ms; must be >= 0")
        out[NodeId(r.node_id)] = r.rtt_ms
    return out


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(
        self,
        registry: Registry,
        *,
        join_token: str = "",
        heartbeat_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.join_token = join_token
        self.heartbeat_s = heartbeat_s
        self.clock = clock

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        if self.join_token and not hmac.compare_digest(
            request.join_token.encode(), self.join_token.encode()
        ):
            log.warning("join refused: bad token", extra={"address": request.address})
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "wrong or missing join token: start the node with --join-token "
                "(or PARALLAX_JOIN_TOKEN) set to the coordinator's --join-token",
            )
        model = self.registry.model_name
        if request.model and request.model != model:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this coordinator serves {model!r}, not {request.model!r}: "
                f"start the node with --model {model} or without --model",
            )
        try:
            hardware = hardware_from_pb(request.hardware)
            node_id, assignment = await asyncio.to_thread(
                self.registry.join,
                request.name,
                request.address,
                hardware,
                self.clock(),
                request.metrics_address,
            )
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.JoinReply(
            node_id=node_id,
            assignment=assignment_to_pb(assignment),
            heartbeat_interval_s=self.heartbeat_s,
        )

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        node_id = NodeId(request.node_id)
        try:
            report = report_from_pb(request.status)
            rtts = rtts_from_pb(list(request.rtts))
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        assignment = self.registry.heartbeat(node_id, report, rtts, self.clock())
        if assignment is None:
            return pb.HeartbeatReply(unknown_node=True)
        peers = [
            pb.Hop(
                node_id=p.node_id,
                address=p.address,
                start=p.assignment.range.start if p.assignment.range else 0,
                end=p.assignment.range.end if p.assignment.range else 0,
            )
            for p in self.registry.peers_of(node_id)
        ]
        return pb.HeartbeatReply(assignment=assignment_to_pb(assignment), peers=peers)

    async def Leave(self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext) -> pb.Ack:
        known = await asyncio.to_thread(self.registry.leave, NodeId(request.node_id), self.clock())
        return pb.Ack(ok=known, message="" if known else f"unknown node {request.node_id!r}")
