"""A real Coordinator gRPC server and simulated nodes (real ControlClients beside a
Health-only gRPC server) on 127.0.0.1 ephemeral ports, for control-plane tests."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import grpc

from coordinator.control import CoordinatorService
from coordinator.join_guard import FailureLimiter
from coordinator.registry import Registry
from node.control import ControlClient
from node.hardware import Hardware
from parallax.config.node import NodeConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.auth import node_mac
from parallax.rpc.tls import Tls, add_port
from tests.support.registry import OPTS, SPEC, WHOLE

HW = Hardware("cpu", "test cpu", flops=1e11, mem_bandwidth=2e10, memory_bytes=4 * WHOLE)
BEAT_S = 0.1
DEAD_S = 0.6


def sign(request, secret: bytes, method: str, counter: int, field: str = "proof"):
    """Sign `request` as the node it names, the way ControlClient does."""
    proof = getattr(request, field)
    proof.counter = counter
    node_id = request.previous_node_id if field == "previous_proof" else request.node_id
    unsigned = (field, "token_proof") if field == "previous_proof" else (field,)
    proof.mac = node_mac(secret, method, node_id, counter, request, unsigned)
    return request


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class HealthOnlyNode(pb_grpc.NodeServicer):
    """Only `Health`, so peers can measure their RTT to this node."""

    async def Health(self, request, context):
        return pb.NodeStatus(state="ready")


@asynccontextmanager
async def grpc_server(add, port: int = 0, tls: Tls | None = None):
    """A started gRPC server on 127.0.0.1 with `add(server)` applied: (server, address)."""
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    add(server)
    bound = add_port(server, f"127.0.0.1:{port}", tls)
    await server.start()
    try:
        yield server, f"127.0.0.1:{bound}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def coordinator(
    token: str = "",
    port: int = 0,
    tls: Tls | None = None,
    clock: Callable[[], float] = time.time,
    limiter: FailureLimiter | None = None,
):
    """A Coordinator service over the tiny model, expiring silent nodes every heartbeat
    by `clock`: (registry, address)."""
    reg = Registry("tiny", SPEC, dead_after_s=DEAD_S, options=OPTS)
    svc = CoordinatorService(
        reg, join_token=token, heartbeat_s=BEAT_S, clock=clock, limiter=limiter
    )

    async def expire():
        while True:
            await asyncio.sleep(BEAT_S)
            await asyncio.to_thread(reg.expire, clock())  # off the loop, as the server does

    task = asyncio.create_task(expire())

    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_CoordinatorServicer_to_server(svc, server)

    async with grpc_server(add, port, tls) as (_, address):
        try:
            yield reg, address
        finally:
            task.cancel()


class SimNode:
    """A ControlClient plus a fake Health server: reports ready with what it was assigned."""

    def __init__(self, coord: str, name: str, memory: float = 4 * WHOLE) -> None:
        self.config = NodeConfig(coordinator=coord, name=name)
        self.hardware = dataclasses.replace(HW, memory_bytes=memory)
        self.client = ControlClient(coord, connect_timeout_s=2.0)
        self.seen: list[pb.Assignment] = []

    def status(self) -> pb.NodeStatus:
        a = self.client.assignment
        state = "standby" if a.standby else "ready"
        return pb.NodeStatus(state=state, start=a.start, end=a.end, model="tiny")

    async def on_assignment(self, a: pb.Assignment) -> None:
        self.seen.append(a)

    async def start(self, stack) -> SimNode:
        _, address = await stack.enter_async_context(
            grpc_server(lambda s: pb_grpc.add_NodeServicer_to_server(HealthOnlyNode(), s))
        )
        await self.client.join(self.config, address, self.hardware)
        self.beat = asyncio.create_task(self.client.heartbeat_loop(self.status, self.on_assignment))
        return self

    async def stop(self) -> None:
        self.beat.cancel()
        await asyncio.gather(self.beat, return_exceptions=True)
        await self.client.close()
