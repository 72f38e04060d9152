"""The node's side of the control plane: join, heartbeat (with peer RTTs), leave.

The heartbeat loop outlives coordinator restarts: failed heartbeats are retried
every interval, and a coordinator that no longer knows this node (it restarted)
gets a fresh Join. Assignment changes are applied by a separate task, so a slow
weight load never delays the heartbeats that keep this node alive.

A Join answers a fresh JoinChallenge with an HMAC under the join token, which is
never sent. The JoinReply's secret is this node's identity: every Heartbeat and
Leave carries an HMAC under it with a growing counter, and a re-join from the same
address proves the previous identity (docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from google.protobuf.message import Message

from node.hardware import Hardware
from node.peer_rtt import RttProber
from parallax.config.node import NodeConfig
from parallax.errors import ParallaxError
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.auth import join_proof, node_mac
from parallax.rpc.tls import Tls, open_channel

log = logging.getLogger(__name__)

# Reconnect quickly after a coordinator restart instead of gRPC's default backoff (up to
# 120 s). Not grpc.min_reconnect_backoff_ms: it also caps each connection attempt, which
# would fail handshakes over slow links.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# A node restarted on its old address waits this long at most for the coordinator to
# declare its previous self dead (it holds the address until then).
ADDRESS_WAIT_S = 60.0


class CoordinatorUnreachable(ParallaxError):
    """No coordinator answers at the configured address."""


class JoinRefused(ParallaxError):
    """The coordinator answered but refused this node (token, model, bad hardware)."""


class ControlClient:
    def __init__(
        self,
        coordinator: str,
        *,
        connect_timeout_s: float = 3.0,
        tls: Tls | None = None,
        address_wait_s: float = ADDRESS_WAIT_S,
    ) -> None:
        self.coordinator = coordinator
        self.connect_timeout_s = connect_timeout_s
        self._channel = open_channel(coordinator, tls, CHANNEL_OPTIONS)
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._join_request: pb.JoinRequest | None = None
        self._join_token = ""
        self.address_wait_s = address_wait_s
        self.node_id = ""
        self._secret = b""  # this node's identity, from the JoinReply
        self.route_key = b""  # the coordinator's Ed25519 key, from the JoinReply
        self.model_parts: dict[str, str] | None = None  # the served model's, from the JoinReply
        self._counter = 0  # of the last call signed with it
        self.assignment = pb.Assignment()
        self.interval_s = 1.0
        self._prober = RttProber(tls)

    def _unreachable(self, why: str) -> CoordinatorUnreachable:
        return CoordinatorUnreachable(
            f"cannot reach coordinator at {self.coordinator} ({why}): is `parallax run` "
            "running there? (check --coordinator; a coordinator and its nodes must agree on "
            "TLS: all use --tls-cert/--tls-key/--tls-ca from one cluster CA, or none do)"
        )

    async def join(
        self,
        config: NodeConfig,
        address: str,
        hardware: Hardware,
        metrics_address: str = "",
        model_parts: Mapping[str, str] | None = None,
        model_format: pb.ModelFormat | None = None,
    ) -> tuple[str, pb.Assignment, float]:
        """Join the cluster: (node id, assignment, heartbeat interval in seconds).
        `model_parts`: the identity of --model, which the coordinator compares;
        `model_format`: how it holds the model (node/model_format.py), planned with."""
        name = config.name or f"{socket.gethostname()}-{address.rpartition(':')[2]}"
        self._join_request = pb.JoinRequest(
            name=name,
            address=address,
            hardware=hardware.to_pb(),
            model=config.model,
            metrics_address=metrics_address,
            model_parts=dict(model_parts or {}),
            format=model_format,
        )
        self._join_token = config.join_token
        self.interval_s = config.heartbeat_s
        await self._connect()
        return await self._join()

    async def _connect(self) -> None:
        """Wait until connected: fail at once when refused, after the timeout when silent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        state = self._channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise self._unreachable("connection failed: refused, or unknown host")
            try:
                change = self._channel.wait_for_state_change(state)
                await asyncio.wait_for(change, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise self._unreachable(f"no answer within {self.connect_timeout_s:g} s") from None
            state = self._channel.get_state(try_to_connect=True)

    def _sign(self, method: str, request: Message, field: str, *unsigned: str) -> None:
        """Fill the NodeProof `request.<field>`: this node's HMAC of the call, over all
        of it but that field and the `unsigned` ones."""
        self._counter += 1
        proof = getattr(request, field)
        proof.counter = self._counter
        fields = (field, *unsigned)
        proof.mac = node_mac(self._secret, method, self.node_id, self._counter, request, fields)

    async def _signed_join(self) -> pb.JoinReply:
        """One challenge and the Join that answers it."""
        if self._join_request is None:
            raise ParallaxError("ControlClient.join must be called before heartbeats")
        challenge = await self._stub.JoinChallenge(
            pb.JoinChallengeRequest(), timeout=deadlines.JOIN_CHALLENGE_S
        )
        request = pb.JoinRequest()
        request.CopyFrom(self._join_request)
        request.nonce = challenge.nonce
        if self._secret:  # a re-join: prove we were that node, so we may keep the address
            request.previous_node_id = self.node_id
            self._sign("Join", request, "previous_proof", "token_proof")
        if self._join_token:
            request.token_proof = join_proof(self._join_token, challenge.nonce, request)
        return await self._stub.Join(request, timeout=deadlines.JOIN_S)

    async def _join(self) -> tuple[str, pb.Assignment, float]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.address_wait_s
        stale_challenges = 0
        while True:
            try:
                reply = await self._signed_join()
                break
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise self._unreachable(code.name.lower()) from None
                if code is grpc.StatusCode.ABORTED and stale_challenges < 2:
                    stale_challenges += 1  # the challenge expired on the way: ask again
                    continue
                if code is grpc.StatusCode.ALREADY_EXISTS and loop.time() < give_up:
                    # Our previous self holds the address until it is declared dead.
                    log.info("address still held; retrying", extra={"reason": e.details()})
                    await asyncio.sleep(self.interval_s)
                    continue
                raise JoinRefused(f"coordinator refused to join: {e.details()}") from None
        self.node_id = reply.node_id
        self._secret = reply.node_secret
        self.route_key = reply.route_key  # verifies the gateway's route grants
        # The served model's identity; empty from a coordinator that does not hash.
        self.model_parts = dict(reply.model_parts) if reply.model_digest else None
        self._counter = 0
        self.assignment = reply.assignment
        if reply.heartbeat_interval_s > 0:
            self.interval_s = reply.heartbeat_interval_s
        log.info(
            "joined cluster",
            extra={
                "node_id": self.node_id,
                "coordinator": self.coordinator,
                "start": reply.assignment.start,
                "end": reply.assignment.end,
                "standby": reply.assignment.standby,
                "epoch": reply.assignment.epoch,
            },
        )
        return self.node_id, self.assignment, self.interval_s

    @property
    def secret(self) -> bytes:
        """This node's identity (it MACs what it Delivers with a key derived from it)."""
        return self._secret

    async def heartbeat_loop(
        self,
        status_fn: Callable[[], pb.NodeStatus],
        on_assignment: Callable[[pb.Assignment], Awaitable[None]],
    ) -> None:
        """Heartbeat every interval until cancelled; hand assignment changes to `on_assignment`."""
        changed = asyncio.Event()
        applier = asyncio.create_task(self._apply_changes(changed, on_assignment))
        failing = False
        try:
            while True:
                tick = time.monotonic()
                try:
                    if await self._beat(status_fn()):
                        changed.set()
                    if failing:
                        log.info("coordinator reachable again", extra={"node_id": self.node_id})
                    failing = False
                except (grpc.aio.AioRpcError, ParallaxError) as e:
                    if not failing:  # one line per outage, not one per beat
                        log.warning(
                            "heartbeat failed; retrying every interval",
                            extra={"coordinator": self.coordinator, "error": str(e)},
                        )
                    failing = True
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - tick)))
        finally:
            applier.cancel()
            await asyncio.gather(applier, return_exceptions=True)
            await self._prober.close()

    async def _beat(self, status: pb.NodeStatus) -> bool:
        """One heartbeat; True when the assignment changed."""
        status.node_id = self.node_id
        request = pb.HeartbeatRequest(
            node_id=self.node_id, status=status, rtts=self._prober.results()
        )
        self._sign("Heartbeat", request, "proof")
        reply = await self._stub.Heartbeat(request, timeout=deadlines.HEARTBEAT_S)
        if reply.unknown_node:
            log.warning(
                "coordinator does not know this node; joining again",
                extra={"node_id": self.node_id},
            )
            await self._join()
            return True
        self._prober.probe(list(reply.peers))
        if reply.assignment.epoch != self.assignment.epoch:
            self.assignment = reply.assignment
            return True
        return False

    async def _apply_changes(
        self, changed: asyncio.Event, on_assignment: Callable[[pb.Assignment], Awaitable[None]]
    ) -> None:
        # Only the newest assignment matters: changes arriving during a load coalesce.
        while True:
            await changed.wait()
            changed.clear()
            try:
                await on_assignment(self.assignment)
            except Exception:
                log.exception("applying assignment failed", extra={"node_id": self.node_id})

    async def leave(self) -> None:
        if self.node_id:
            request = pb.LeaveRequest(node_id=self.node_id)
            self._sign("Leave", request, "proof")
            try:
                await self._stub.Leave(request, timeout=deadlines.LEAVE_S)
            except grpc.aio.AioRpcError as e:
                log.warning("leave not delivered", extra={"error": e.code().name})

    async def close(self) -> None:
        await self._prober.close()
        await self._channel.close()
