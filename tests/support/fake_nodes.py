"""Fake `Node` gRPC servers for ClusterBackend tests.

A fake node takes `Submit`, then calls the gateway's `Deliver` back with a
scripted token stream (as a last node would), stops when it gets `Release`,
and records every call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.scheduler.types import Hop, Route
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.types import LayerRange, NodeId


@dataclass
class FakeNode(pb_grpc.NodeServicer):
    node_id: str
    script: tuple[int, ...] = (10, 11, 12, 13, 14)
    delay_s: float = 0.01
    refuse: grpc.StatusCode | None = None  # Submit fails with this code
    silent: bool = False  # accept Submit, never deliver
    silent_first: bool = False  # the first Submit is accepted and never answered
    hang: bool = False  # deliver the script, then never finish
    fail_first: str = ""  # the first Submit ends at once in a failure with this text
    fail_kind: int = pb.FAILURE_INTERNAL  # ... and of this kind
    resend_at: int = -1  # the event at this index is delivered twice (a replayed capture)
    skip_at: int = -1  # the first attempt's event at this index is never delivered
    address: str = ""
    submits: list[pb.SubmitRequest] = field(default_factory=list)
    releases: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    released: set[str] = field(default_factory=set)
    delivered: list[str] = field(default_factory=list)  # request id per delivered token
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def Submit(self, request: pb.SubmitRequest, context: Any) -> pb.Ack:
        self.submits.append(request)
        if self.refuse is not None:
            await context.abort(self.refuse, f"{self.node_id} refuses")
        if not self.silent and not (self.silent_first and len(self.submits) == 1):
            task = asyncio.get_running_loop().create_task(self._deliver(request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return pb.Ack(ok=True)

    async def _deliver(self, req: pb.SubmitRequest) -> None:
        async with grpc.aio.insecure_channel(req.reply_to) as channel:
            stub = pb_grpc.GatewayStub(channel)
            if self.fail_first and len(self.submits) == 1:
                ev = pb.TokenEvent(
                    request_id=req.request_id,
                    finished=True,
                    failure=self.fail_kind,
                    error=self.fail_first,
                )
                await stub.Deliver(
                    pb.TokenBatch(events=[ev], sender_id=self.node_id),
                    timeout=deadlines.DELIVER_S,
                )
                return
            # A replay goes on from what the client already has, as a real node does;
            # a hanging node hangs again after as many tokens as its script has.
            max_tokens = req.sampling.max_tokens
            start = req.generated_offset
            end = min(max_tokens, start + len(self.script) if self.hang else len(self.script))
            for k in range(start, end):
                tok = self.script[k % len(self.script)]
                await asyncio.sleep(self.delay_s)
                if req.request_id in self.released:
                    return
                last = k == end - 1 and not self.hang
                reason = ""
                if last:
                    reason = "length" if end == max_tokens else "stop"
                ev = pb.TokenEvent(
                    request_id=req.request_id,
                    token_id=tok,
                    finished=last,
                    finish_reason=reason,
                    logprob=-0.5,
                    index=k,
                )
                if k == self.skip_at and len(self.submits) == 1:
                    continue
                self.delivered.append(req.request_id)
                for _ in range(2 if k == self.resend_at else 1):
                    await stub.Deliver(
                        pb.TokenBatch(events=[ev], sender_id=self.node_id),
                        timeout=deadlines.DELIVER_S,
                    )

    async def Release(self, request: pb.ReleaseRequest, context: Any) -> pb.Ack:
        self.releases.append((tuple(request.request_ids), request.reason))
        self.released.update(request.request_ids)
        return pb.Ack(ok=True)


@asynccontextmanager
async def serving_backend(
    nodes: Sequence[FakeNode], make_backend: Callable[[str], ClusterBackend]
) -> AsyncIterator[ClusterBackend]:
    """The fake nodes and a gateway Deliver server up; `make_backend(own address)` is
    called once the nodes have their addresses. Everything stops on exit."""
    servers = await start_nodes(nodes)
    gateway = grpc.aio.server()
    port = gateway.add_insecure_port("127.0.0.1:0")
    backend = make_backend(f"127.0.0.1:{port}")
    pb_grpc.add_GatewayServicer_to_server(backend.servicer, gateway)
    await gateway.start()
    try:
        yield backend
    finally:
        await backend.close()
        await gateway.stop(None)
        for s in servers:
            await s.stop(None)


async def start_nodes(nodes: Sequence[FakeNode]) -> list[grpc.aio.Server]:
    servers = []
    for node in nodes:
        server = grpc.aio.server()
        pb_grpc.add_NodeServicer_to_server(node, server)
        node.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        servers.append(server)
    return servers


def chain(nodes: Sequence[FakeNode], num_layers: int) -> Route:
    """A route through `nodes` in order, splitting the layers evenly."""
    cuts = [num_layers * i // len(nodes) for i in range(len(nodes) + 1)]
    return Route(
        tuple(
            Hop(NodeId(n.node_id), n.address, LayerRange(a, b))
            for n, a, b in zip(nodes, cuts, cuts[1:], strict=False)
        )
    )


class LoopThread:
    """An asyncio loop in a background thread, for servers the test talks to from outside."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
