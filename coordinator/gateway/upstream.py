"""gRPC between the gateway and nodes: Submit and Release out, Deliver in.

Channels are cached per node address. `Deliver` batches are dispatched by
request id to the queue of the `generate` call waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from coordinator.gateway.backend import FINISH_REASONS, Failure, TokenOut
from coordinator.gateway.tasks import TaskKeeper
from coordinator.scheduler.types import Route
from parallax.errors import InvalidArgument
from parallax.failures import FailureKind
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import event_mac_ok
from parallax.rpc.tls import Tls, open_channel

log = logging.getLogger(__name__)


def route_to_proto(route: Route) -> pb.Route:
    return pb.Route(
        hops=[
            pb.Hop(node_id=h.node_id, address=h.address, start=h.range.start, end=h.range.end)
            for h in route.hops
        ]
    )


# Why a first hop refused a Submit, by gRPC status (anything else: it is unreachable).
_SUBMIT_REFUSALS = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: FailureKind.OVERLOADED,
    grpc.StatusCode.FAILED_PRECONDITION: FailureKind.REASSIGNED,
}

# A node address unused for this long loses its channel: nodes come and go, and a
# coordinator that runs for weeks must not keep one for every node it ever routed to.
# Far above every RPC deadline, so no call is in flight on a channel that is closed.
NODE_IDLE_S = 300.0
_SWEEP_S = 60.0


class NodeClients:
    """One channel per node address, opened on first use, closed when idle or at `close`."""

    def __init__(
        self,
        tls: Tls | None = None,
        idle_s: float = NODE_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tls = tls
        self._idle_s = idle_s
        self._clock = clock
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.NodeStub] = {}
        self._last_used: dict[str, float] = {}
        self._swept = clock()
        self._closing = TaskKeeper()

    @property
    def addresses(self) -> list[str]:
        return list(self._channels)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for address in [a for a, t in self._last_used.items() if now - t > self._idle_s]:
            del self._last_used[address]
            self._stubs.pop(address, None)
            channel = self._channels.pop(address, None)
            if channel is not None:
                self._closing.spawn(channel.close())

    def stub(self, address: str) -> pb_grpc.NodeStub:
        now = self._clock()
        self._last_used[address] = now
        if now - self._swept > min(_SWEEP_S, self._idle_s):
            self._sweep(now)
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_channel(address, self._tls)
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.NodeStub(channel)
        return stub

    async def submit(self, route: Route, request: pb.SubmitRequest) -> Failure | None:
        """Hand a request to the first hop. A refusal another chain (or a later try)
        may not meet comes back as a Failure for the replay policy; a bad request
        raises InvalidArgument (HTTP 400)."""
        first = route.hops[0]
        try:
            ack = await self.stub(first.address).Submit(request, timeout=deadlines.SUBMIT_S)
        except grpc.aio.AioRpcError as e:
            code, detail = e.code(), e.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(detail) from None
            kind = _SUBMIT_REFUSALS.get(code, FailureKind.UNREACHABLE)
            why = f"first node {first.node_id} refused: {code.name} {detail}"
            return Failure(kind, why, first.address if kind is FailureKind.UNREACHABLE else "")
        if not ack.ok:
            return Failure(FailureKind.INTERNAL, f"first node {first.node_id}: {ack.message}")
        return None

    async def release(
        self, route: Route, request_id: str, reason: str, grant_signature: bytes = b""
    ) -> None:
        """Free the request's KV on every hop at once; failures are logged, not raised."""
        msg = pb.ReleaseRequest(request_ids=[request_id], reason=reason)
        msg.grant_signatures[request_id] = grant_signature
        calls = [self.stub(h.address).Release(msg, timeout=deadlines.RELEASE_S) for h in route.hops]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for hop, res in zip(route.hops, results, strict=True):
            if isinstance(res, BaseException):
                log.warning(
                    "release failed",
                    extra={
                        "request_id": request_id,
                        "node_id": hop.node_id,
                        "error": type(res).__name__,
                    },
                )

    async def close(self) -> None:
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
        await self._closing.drain()


def event_to_token(ev: pb.TokenEvent, with_logprobs: bool) -> TokenOut:
    """`with_logprobs`: the request asked for them (proto3 cannot tell 0.0 from unset)."""
    kind = FailureKind.from_wire(ev.failure)
    if kind is not None:
        return TokenOut.failed(kind, ev.error or "the node gave no reason", ev.unreachable_hop)
    reason: str | None = ev.finish_reason or None if ev.finished else None
    if ev.finished and reason not in FINISH_REASONS:
        why = f"node finished the request with reason {ev.finish_reason!r}"
        return TokenOut.failed(FailureKind.INTERNAL, why)
    return TokenOut(
        token_id=ev.token_id,
        logprob=ev.logprob if with_logprobs else None,
        top_logprobs=tuple((t.token_id, t.logprob) for t in ev.top_logprobs),
        finished=ev.finished,
        finish_reason=reason,
    )


# Who may deliver an event of a request: (sender node id, event) -> allowed.
DeliverCheck = Callable[[str, pb.TokenEvent], bool]


def deliver_check(
    route: Route, secret_of: Callable[[str], bytes | None] | None
) -> DeliverCheck | None:
    """Who may deliver an attempt's events: tokens only its last hop, a failure any of
    its hops; each event MACed under the sender's own node secret. None (no check) where
    no node joined a coordinator (tests with fake nodes)."""
    if secret_of is None:
        return None
    hops = {h.node_id for h in route.hops}
    last = route.hops[-1].node_id

    def check(sender: str, ev: pb.TokenEvent) -> bool:
        if sender != last and not (ev.failure and sender in hops):
            return False
        secret = secret_of(sender)
        return secret is not None and event_mac_ok(secret, ev)

    return check


class DeliveryBoard:
    """request id -> the queue its `generate` reads. Thread-safe across event loops."""

    def __init__(self) -> None:
        self._queues: dict[
            str,
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[pb.TokenEvent], DeliverCheck | None],
        ] = {}
        self.denied = 0  # events refused: not from a node the request's grant names

    def open(
        self, request_id: str, check: DeliverCheck | None = None
    ) -> asyncio.Queue[pb.TokenEvent]:
        queue: asyncio.Queue[pb.TokenEvent] = asyncio.Queue()
        self._queues[request_id] = (asyncio.get_running_loop(), queue, check)
        return queue

    def close(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def post(self, ev: pb.TokenEvent, sender: str = "") -> bool | None:
        """True: handed to its request; False: no such request (normal after an abort);
        None: refused, the sender may not deliver it."""
        entry = self._queues.get(ev.request_id)
        if entry is None:
            return False
        loop, queue, check = entry
        if check is not None and not check(sender, ev):
            self.denied += 1
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            queue.put_nowait(ev)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ev)
        return True

    def __len__(self) -> int:
        return len(self._queues)


class DeliverServicer(pb_grpc.GatewayServicer):
    def __init__(self, board: DeliveryBoard) -> None:
        self._board = board
        self._denied_seen: set[str] = set()

    async def Deliver(self, request: pb.TokenBatch, context: grpc.aio.ServicerContext) -> pb.Ack:
        posted = [self._board.post(ev, request.sender_id) for ev in request.events]
        if None in posted:
            # Logged once per sender: a flood of forged events is not a flood of lines.
            if request.sender_id not in self._denied_seen and len(self._denied_seen) < 1024:
                self._denied_seen.add(request.sender_id)
                log.warning(
                    "deliver refused: not from the node the request's grant names",
                    extra={"sender_id": request.sender_id, "peer": context.peer()},
                )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not this request's hop")
        dropped = [ev.request_id for ev, ok in zip(request.events, posted, strict=True) if not ok]
        if dropped:
            # Normal after an abort: the last node may still be sending.
            log.debug(
                "tokens for unknown requests dropped",
                extra={"sender_id": request.sender_id, "request_ids": sorted(set(dropped))},
            )
        return pb.Ack(ok=True)
