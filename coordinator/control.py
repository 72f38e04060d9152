"""The Coordinator gRPC service (control plane): JoinChallenge, Join, Heartbeat, Leave.

A thin translation layer: protobuf in, validated frozen records into the
`Registry`, protobuf out. Bad input gets INVALID_ARGUMENT and the service keeps
serving. Join and Leave re-run the allocator, which may take seconds, so they run
in a worker thread; heartbeats are quick and run on the loop.

Trust (docs/SECURITY.md): a Join answers a challenge with an HMAC under the join
token, never the token; a wrong answer gets PERMISSION_DENIED and counts against
its peer, which after a few gets RESOURCE_EXHAUSTED for a while. Each joined node
gets its own secret; a Heartbeat or Leave that does not prove the secret of the
node it names gets PERMISSION_DENIED and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace

import grpc

from coordinator.join_guard import Challenges, FailureLimiter, peer_host, retry_text
from coordinator.node_format import footprint_from_pb
from coordinator.registry import Registry
from coordinator.registry_types import (
    AddressTaken,
    Assignment,
    HardwareInfo,
    NodeRecord,
    NodeReport,
    NodeState,
    Proof,
)
from parallax.errors import InvalidArgument
from parallax.models.identity import ModelIdentity
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.auth import join_proof_ok, new_node_secret, node_mac_ok
from parallax.types import LayerRange, NodeId

log = logging.getLogger(__name__)

MAX_LOGGED_PEERS = 10_000


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
        max_running=msg.max_running,
        kv_block_tokens=msg.kv_block_tokens,
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
        limiter: FailureLimiter | None = None,
        route_key: bytes = b"",
        model_identity: ModelIdentity | None = None,
    ) -> None:
        self.registry = registry
        self.model_identity = model_identity  # told at join: a node checks its own copy
        self.route_key = route_key  # the gateway's grant-signing public key, told at join
        self.join_token = join_token
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.challenges = Challenges()
        self.limiter = limiter or FailureLimiter()
        self._denied_peers: set[str] = set()  # logged once each: a flood is not a log flood

    async def _check_limit(self, peer: str, context: grpc.aio.ServicerContext) -> None:
        wait = self.limiter.retry_after(peer, self.clock())
        if wait > 0:
            context.set_trailing_metadata((("retry-after-s", str(round(wait, 3))),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many failed joins from {peer}: retry in {retry_text(wait)} "
                "(check the node's --join-token and address)",
            )

    async def JoinChallenge(
        self, request: pb.JoinChallengeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinChallengeReply:
        await self._check_limit(peer_host(context.peer()), context)
        nonce = self.challenges.issue(self.clock())
        return pb.JoinChallengeReply(nonce=nonce, expires_in_s=self.challenges.ttl_s)

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        peer = peer_host(context.peer())
        await self._check_limit(peer, context)
        if self.join_token:
            if not self.challenges.take(request.nonce, self.clock()):
                # Not a guess at the token (nothing was checked): not counted.
                await context.abort(
                    grpc.StatusCode.ABORTED,
                    "join challenge unknown, used or expired: call JoinChallenge again "
                    "and answer within its expires_in_s",
                )
            if not join_proof_ok(self.join_token, request.nonce, request, request.token_proof):
                self.limiter.fail(peer, self.clock())
                log.warning("join refused: bad token proof", extra={"peer": peer})
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "wrong or missing join token: start the node with --join-token "
                    "(or PARALLAX_JOIN_TOKEN) set to the coordinator's --join-token",
                )
        model = self.registry.model_name
        if request.model_parts and self.model_identity is not None:
            # The same bytes under any path or name are the same model.
            why = self.model_identity.mismatch(request.model_parts, request.model, model)
            if why:
                log.warning("join refused: other model", extra={"peer": peer, "reason": why})
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        elif request.model and request.model != model:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this coordinator serves {model!r}, not {request.model!r}: "
                f"start the node with --model {model} or without --model",
            )

        def proves(old: NodeRecord) -> bool:
            """The joiner is `old`, re-joining: it proves old's secret."""
            proof = request.previous_proof
            return (
                request.previous_node_id == old.node_id
                and bool(old.secret)
                and proof.counter > old.counter
                and node_mac_ok(
                    old.secret,
                    "Join",
                    old.node_id,
                    proof.counter,
                    request,
                    ("previous_proof", "token_proof"),
                    proof.mac,
                )
            )

        secret = new_node_secret()
        try:
            hardware = hardware_from_pb(request.hardware)
            # Its own bytes per layer (dtype, weight format), checked: a stranger's claim.
            hardware = replace(hardware, footprint=footprint_from_pb(request, self.registry.spec))
            node_id, assignment = await asyncio.to_thread(
                self.registry.join,
                request.name,
                request.address,
                hardware,
                self.clock(),
                request.metrics_address,
                secret=secret,
                may_replace=proves,
            )
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except AddressTaken as e:
            # Not counted as a failure: a restarted node retries this until its old
            # record dies, and a 256-bit secret cannot be guessed anyway.
            log.warning("join refused", extra={"peer": peer, "reason": str(e)})
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(e))
        return pb.JoinReply(
            node_id=node_id,
            assignment=assignment_to_pb(assignment),
            heartbeat_interval_s=self.heartbeat_s,
            node_secret=secret,
            route_key=self.route_key,
            model_digest=self.model_identity.digest if self.model_identity else "",
            model_parts=dict(self.model_identity.parts) if self.model_identity else {},
        )

    async def _prove(self, method: str, request, context: grpc.aio.ServicerContext) -> Proof:
        """Whether `request` comes from the node it names; PERMISSION_DENIED if not."""
        node_id, proof = NodeId(request.node_id), request.proof

        def check(secret: bytes) -> bool:
            return node_mac_ok(
                secret, method, node_id, proof.counter, request, ("proof",), proof.mac
            )

        verdict = self.registry.authenticate(node_id, proof.counter, check)
        if verdict is Proof.DENIED:
            peer = peer_host(context.peer())
            if peer not in self._denied_peers and len(self._denied_peers) < MAX_LOGGED_PEERS:
                self._denied_peers.add(peer)
                log.warning(
                    "node call refused: not signed by that node (logged once per peer)",
                    extra={"method": method, "node_id": node_id, "peer": peer},
                )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} for node {node_id!r} is not signed with that node's secret (or "
                "repeats a counter): a node may act only for itself; restart the node so it "
                "joins again",
            )
        return verdict

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        node_id = NodeId(request.node_id)
        try:
            report = report_from_pb(request.status)
            rtts = rtts_from_pb(list(request.rtts))
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if await self._prove("Heartbeat", request, context) is Proof.UNKNOWN:
            return pb.HeartbeatReply(unknown_node=True)
        args = (node_id, report, rtts, self.clock())
        if report.state is NodeState.LEAVING:
            # A drain re-allocates (seconds of solving on a big cluster) under the
            # membership lock: off the event loop, which must keep hearing other nodes.
            assignment = await asyncio.to_thread(self.registry.heartbeat, *args)
        else:
            assignment = self.registry.heartbeat(*args)
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
        if await self._prove("Leave", request, context) is Proof.UNKNOWN:
            return pb.Ack(ok=False, message=f"unknown node {request.node_id!r}")
        known = await asyncio.to_thread(self.registry.leave, NodeId(request.node_id), self.clock())
        return pb.Ack(ok=known, message="" if known else f"unknown node {request.node_id!r}")
