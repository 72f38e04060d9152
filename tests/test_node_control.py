"""A real Coordinator gRPC server and real ControlClients on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import pytest

from coordinator.control import CoordinatorService
from coordinator.registry import Registry
from node.control import ControlClient, CoordinatorUnreachable, JoinRefused
from node.hardware import Hardware, measure_hardware
from parallax.config.node import NodeConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.auth import node_mac
from tests.test_registry_control import HALF, OPTS, SPEC, WHOLE, covers

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


class FakeNode(pb_grpc.NodeServicer):
    """Only `Health`, so peers can measure their RTT to this node."""

    async def Health(self, request, context):
        return pb.NodeStatus(state="ready")


@asynccontextmanager
async def grpc_server(add, port: int = 0):
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    add(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield server, f"127.0.0.1:{bound}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def coordinator(token: str = "", port: int = 0):
    reg = Registry("tiny", SPEC, dead_after_s=DEAD_S, options=OPTS)
    svc = CoordinatorService(reg, join_token=token, heartbeat_s=BEAT_S)

    async def expire():
        while True:
            await asyncio.sleep(BEAT_S)
            reg.expire(time.time())

    task = asyncio.create_task(expire())
    async with grpc_server(lambda s: pb_grpc.add_CoordinatorServicer_to_server(svc, s), port) as (
        _,
        address,
    ):
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
            grpc_server(lambda s: pb_grpc.add_NodeServicer_to_server(FakeNode(), s))
        )
        await self.client.join(self.config, address, self.hardware)
        self.beat = asyncio.create_task(self.client.heartbeat_loop(self.status, self.on_assignment))
        return self

    async def stop(self) -> None:
        self.beat.cancel()
        await asyncio.gather(self.beat, return_exceptions=True)
        await self.client.close()


async def until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_join_with_right_and_wrong_token() -> None:
    async def main():
        async with coordinator(token="s3cret") as (reg, address):
            client = ControlClient(address)
            ok = NodeConfig(coordinator=address, name="n", join_token="s3cret")
            node_id, asg, interval = await client.join(ok, "127.0.0.1:5999", HW)
            assert node_id.startswith("n-") and reg.get(node_id) is not None
            assert (asg.start, asg.end, asg.standby, asg.epoch) == (0, 8, False, 1)
            assert interval == BEAT_S
            with pytest.raises(JoinRefused, match="join token"):
                await client.join(ok.replace(join_token="wrong"), "127.0.0.1:5998", HW)
            with pytest.raises(JoinRefused, match="serves 'tiny'"):
                await client.join(ok.replace(model="other"), "127.0.0.1:5998", HW)
            assert len(reg.nodes) == 1
            await client.close()

    run(main())


def test_wrong_coordinator_address_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        client = ControlClient(f"127.0.0.1:{port}")
        t0 = time.monotonic()
        with pytest.raises(CoordinatorUnreachable, match=rf"127\.0\.0\.1:{port}.*--coordinator"):
            await client.join(NodeConfig(coordinator=f"127.0.0.1:{port}"), "127.0.0.1:5999", HW)
        assert time.monotonic() - t0 < 2.0  # refused: no need to wait out the timeout
        await client.close()
        # A listener that accepts TCP but never speaks HTTP/2 fails after the timeout.
        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen(8)
            where = f"127.0.0.1:{mute.getsockname()[1]}"
            silent = ControlClient(where, connect_timeout_s=0.5)
            t0 = time.monotonic()
            with pytest.raises(CoordinatorUnreachable, match="no answer within 0.5 s"):
                await silent.join(NodeConfig(coordinator=where), "127.0.0.1:5999", HW)
            assert time.monotonic() - t0 < 2.0
            await silent.close()

    run(main())


def test_bad_input_gets_invalid_argument_and_the_server_keeps_serving() -> None:
    async def main():
        async with coordinator() as (reg, address), grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.CoordinatorStub(ch)
            bad_hw = pb.Hardware(device="cpu", flops=0, mem_bandwidth=1, memory_bytes=1)
            for req in (
                pb.JoinRequest(name="x", address="127.0.0.1:1", hardware=bad_hw),
                pb.JoinRequest(name="x", address="nowhere", hardware=HW.to_pb()),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Join(req, timeout=5)
                assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            join = pb.JoinRequest(name="x", address="127.0.0.1:1", hardware=HW.to_pb())
            reply = await stub.Join(join, timeout=5)
            bad = pb.HeartbeatRequest(node_id=reply.node_id, status=pb.NodeStatus(state="zombie"))
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Heartbeat(bad, timeout=5)
            assert (
                e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "zombie" in e.value.details()
            )
            beat = await stub.Heartbeat(pb.HeartbeatRequest(node_id="ghost-1"), timeout=5)
            assert beat.unknown_node
            leave = pb.LeaveRequest(node_id=reply.node_id)
            sign(leave, reply.node_secret, "Leave", counter=1)
            assert (await stub.Leave(leave, timeout=5)).ok
            assert reg.nodes == ()

    run(main())


def covered(reg: Registry) -> bool:
    """The serving nodes (ready, with their assignment loaded) hold every layer."""
    return covers(n.range for n in reg.cluster_state().nodes)


def test_heartbeats_carry_assignments_rtts_and_death_reassigns() -> None:
    async def main():
        async with coordinator() as (reg, address), AsyncExitStack() as stack:
            a = await SimNode(address, "a", memory=HALF).start(stack)
            assert a.client.assignment.standby  # alone it cannot hold the model
            b = await SimNode(address, "b", memory=HALF).start(stack)
            assert not b.client.assignment.standby
            # a learns its new range from a heartbeat reply and applies it.
            await until(lambda: a.seen and not a.seen[-1].standby)
            await until(lambda: covered(reg) and len(reg.cluster_state().nodes) == 2)
            # Each measured its RTT to the other through Node.Health.
            ab = (a.client.node_id, b.client.node_id)
            await until(lambda: ab in reg.cluster_state().rtt_ms)
            assert 0 < reg.cluster_state().rtt_ms[ab] < 1000
            c = await SimNode(address, "c", memory=HALF).start(stack)
            seen_before = {n: len(n.seen) for n in (a, c)}
            await b.stop()  # b goes silent
            await until(lambda: str(reg.get(b.client.node_id).state) == "dead", timeout=5)
            await until(lambda: covered(reg), timeout=5)
            assert b.client.node_id not in {n.node_id for n in reg.cluster_state().nodes}
            assert any(len(n.seen) > seen_before[n] for n in (a, c)), "nobody was reassigned"
            assert [d.kind for d in reg.decisions].count("dead") == 1
            await c.client.leave()
            await c.stop()
            assert reg.get(c.client.node_id) is None
            await a.stop()

    run(main())


def test_node_rejoins_after_a_coordinator_restart() -> None:
    async def main():
        async with AsyncExitStack() as stack:
            async with coordinator() as (_reg, address):
                node = await SimNode(address, "a").start(stack)
                first_id = node.client.node_id
            port = int(address.rpartition(":")[2])
            await asyncio.sleep(3 * BEAT_S)  # heartbeats fail while it is down
            async with coordinator(port=port) as (reg2, _):
                await until(lambda: len(reg2.cluster_state().nodes) == 1)
                assert node.client.node_id != first_id
                assert node.seen and node.seen[-1].end == 8
            await node.stop()

    run(main())


def test_measure_hardware_is_plausible() -> None:
    hw = measure_hardware("cpu", seconds=0.2, memory_gb=1.5)
    assert 1e8 < hw.flops < 1e14
    assert 1e8 < hw.mem_bandwidth < 1e13
    assert hw.memory_bytes == 1.5 * 2**30 and hw.device == "cpu" and hw.device_name
    assert measure_hardware("cpu", seconds=0.05).memory_bytes > 2**20
