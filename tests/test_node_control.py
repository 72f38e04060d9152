"""A real Coordinator gRPC server and real ControlClients on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import AsyncExitStack

import grpc
import pytest

from coordinator.registry import Registry
from node.control import ControlClient, CoordinatorUnreachable, JoinRefused
from node.hardware import measure_hardware
from parallax.config.node import NodeConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from tests.support.control import BEAT_S, HW, SimNode, coordinator, run, sign
from tests.support.registry import HALF, covers
from tests.support.wait import wait_for


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
            await wait_for(lambda: a.seen and not a.seen[-1].standby)
            await wait_for(lambda: covered(reg) and len(reg.cluster_state().nodes) == 2)
            # Each measured its RTT to the other through Node.Health.
            ab = (a.client.node_id, b.client.node_id)
            await wait_for(lambda: ab in reg.cluster_state().rtt_ms)
            assert 0 < reg.cluster_state().rtt_ms[ab] < 1000
            c = await SimNode(address, "c", memory=HALF).start(stack)
            seen_before = {n: len(n.seen) for n in (a, c)}
            await b.stop()  # b goes silent
            await wait_for(lambda: str(reg.get(b.client.node_id).state) == "dead", timeout=5)
            await wait_for(lambda: covered(reg), timeout=5)
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
                await wait_for(lambda: len(reg2.cluster_state().nodes) == 1)
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
