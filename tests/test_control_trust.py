"""Who may speak for a node: a real Coordinator server, real ControlClients, and strangers
calling it with raw stubs, on 127.0.0.1 ephemeral ports (with mutual TLS for A and B)."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import pytest

from coordinator.join_guard import Challenges, FailureLimiter, peer_host
from coordinator.registry import Registry
from node.control import ControlClient, JoinRefused
from parallax.config.node import NodeConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.auth import join_proof
from parallax.rpc.tls import Tls
from tests.support import control
from tests.support.control import BEAT_S, DEAD_S, HW, SimNode, run, sign
from tests.support.tls_certs import CertAuthority
from tests.support.wait import wait_for


class Clock:
    """Wall time plus a skew the test moves forward."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


def coordinator(token: str = "", tls: Tls | None = None, clock: Clock | None = None):
    """The shared test coordinator, with a clock the test can skew and a tight limit on
    wrong join tokens (3 per 10 s)."""
    return control.coordinator(
        token, tls=tls, clock=clock or Clock(), limiter=FailureLimiter(3, 10.0)
    )


def ready_ids(reg: Registry) -> set[str]:
    return {n.node_id for n in reg.cluster_state().nodes}


async def refused(call, code=grpc.StatusCode.PERMISSION_DENIED) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() is code, e.value.details()
    return e.value.details()


def test_a_strangers_leave_or_heartbeat_is_refused_and_the_node_stays_ready() -> None:
    async def main():
        async with (
            coordinator() as (reg, address),
            AsyncExitStack() as stack,
            grpc.aio.insecure_channel(address) as ch,
        ):
            node = await SimNode(address, "victim").start(stack)
            victim = node.client.node_id
            await wait_for(lambda: victim in ready_ids(reg))
            stub = pb_grpc.CoordinatorStub(ch)
            # The stranger knows the node id (it is public on /cluster/status).
            await refused(stub.Leave(pb.LeaveRequest(node_id=victim), timeout=5))
            forged = sign(pb.LeaveRequest(node_id=victim), secrets.token_bytes(32), "Leave", 10**9)
            await refused(stub.Leave(forged, timeout=5))
            loading = pb.NodeStatus(state="loading")
            beat = pb.HeartbeatRequest(node_id=victim, status=loading)
            assert "may act only for itself" in await refused(stub.Heartbeat(beat, timeout=5))
            # A heartbeat signed with the right secret but an old counter is a replay.
            replay = sign(beat, node.client._secret, "Heartbeat", counter=1)
            await refused(stub.Heartbeat(replay, timeout=5))
            # A proof for one call is not one for another, nor for another node's id.
            heartbeat_proof = sign(
                pb.HeartbeatRequest(node_id=victim), node.client._secret, "Heartbeat", counter=10**9
            ).proof
            await refused(stub.Leave(pb.LeaveRequest(node_id=victim, proof=heartbeat_proof)))
            await asyncio.sleep(3 * BEAT_S)
            assert reg.get(victim).state == "ready" and victim in ready_ids(reg)
            assert [d.kind for d in reg.decisions].count("leave") == 0
            # A silent node cannot be kept alive by forged heartbeats either.
            await node.stop()
            ready = pb.NodeStatus(state="ready", start=0, end=8)
            deadline = time.monotonic() + 4 * DEAD_S
            while time.monotonic() < deadline and reg.get(victim).state != "dead":
                beat = pb.HeartbeatRequest(node_id=victim, status=ready)
                await refused(stub.Heartbeat(beat, timeout=5))
                await asyncio.sleep(BEAT_S / 2)
            assert reg.get(victim).state == "dead"
            # The node's own leave still works (after a fresh join: it was declared dead).

    run(main())


def test_an_address_takeover_is_refused_and_the_node_itself_may_rejoin() -> None:
    async def main():
        async with coordinator() as (reg, address), AsyncExitStack() as stack:
            node = await SimNode(address, "a").start(stack)
            first = node.client.node_id
            await wait_for(lambda: first in ready_ids(reg))
            taken = reg.get(first).address
            thief = ControlClient(address, address_wait_s=0)
            with pytest.raises(JoinRefused, match=f"{taken} is the address of live node {first}"):
                await thief.join(NodeConfig(coordinator=address, name="thief"), taken, HW)
            assert [n.node_id for n in reg.nodes] == [first] and first in ready_ids(reg)
            # Claiming to be the node without its secret is no better.
            async with grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.CoordinatorStub(ch)
                nonce = (await stub.JoinChallenge(pb.JoinChallengeRequest())).nonce
                claim = pb.JoinRequest(
                    name="thief",
                    address=taken,
                    hardware=HW.to_pb(),
                    nonce=nonce,
                    previous_node_id=first,
                )
                sign(claim, secrets.token_bytes(32), "Join", 99, field="previous_proof")
                await refused(stub.Join(claim, timeout=5), grpc.StatusCode.ALREADY_EXISTS)
            assert [n.node_id for n in reg.nodes] == [first]
            # The node itself re-joins from its address, proving its previous identity.
            await node.client._join()
            assert node.client.node_id != first and reg.get(first) is None
            await wait_for(lambda: ready_ids(reg) == {node.client.node_id})
            await node.client.leave()
            assert reg.nodes == ()
            await node.stop()
            await thief.close()

    run(main())


def test_wrong_join_tokens_are_rate_limited_per_peer() -> None:
    async def main():
        clock = Clock()
        async with coordinator(token="s3cret", clock=clock) as (reg, address):
            client = ControlClient(address)
            right = NodeConfig(coordinator=address, name="n", join_token="s3cret")
            wrong = right.replace(join_token="guess")
            for i in range(3):  # the limiter above forgives 3 failures at once
                with pytest.raises(JoinRefused, match="wrong or missing join token"):
                    await client.join(wrong, f"127.0.0.1:{5900 + i}", HW)
            with pytest.raises(JoinRefused, match=r"too many failed joins .* retry in 10 s"):
                await client.join(right, "127.0.0.1:5990", HW)  # even the right token waits
            async with grpc.aio.insecure_channel(address) as ch:
                call = pb_grpc.CoordinatorStub(ch).JoinChallenge(pb.JoinChallengeRequest())
                await refused(call, grpc.StatusCode.RESOURCE_EXHAUSTED)
                hint = float(dict(await call.trailing_metadata())["retry-after-s"])
                assert 9 < hint <= 10
            assert reg.nodes == ()
            clock.skew += 10.5  # one failure forgiven: one more try
            node_id, _, _ = await client.join(right, "127.0.0.1:5990", HW)
            assert [n.node_id for n in reg.nodes] == [node_id]
            # A nonce answers one Join only: replaying a captured Join is refused.
            async with grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.CoordinatorStub(ch)
                nonce = (await stub.JoinChallenge(pb.JoinChallengeRequest())).nonce
                req = pb.JoinRequest(
                    name="x", address="127.0.0.1:5991", hardware=HW.to_pb(), nonce=nonce
                )
                req.token_proof = join_proof("s3cret", nonce, req)
                assert (await stub.Join(req, timeout=5)).node_id
                await refused(stub.Join(req, timeout=5), grpc.StatusCode.ABORTED)
                # A proof binds the whole request: another address under it fails.
                nonce = (await stub.JoinChallenge(pb.JoinChallengeRequest())).nonce
                req.nonce, req.address = nonce, "127.0.0.1:5992"
                await refused(stub.Join(req, timeout=5))
            await client.close()

    run(main())


@asynccontextmanager
async def recording_proxy(target: str):
    """A TCP proxy to `target` that keeps every byte the client sends."""
    sent = bytearray()
    host, _, port = target.rpartition(":")

    async def pipe(reader, writer, record: bytearray | None) -> None:
        try:
            while data := await reader.read(65536):
                if record is not None:
                    record.extend(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_r, server_w, sent), pipe(server_r, client_w, None))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", sent
    finally:
        server.close()


def test_the_join_token_and_the_node_secret_never_leave_the_node() -> None:
    token = "tok-" + secrets.token_hex(16)

    async def main():
        async with (
            coordinator(token=token) as (reg, address),
            recording_proxy(address) as (via, sent),
            AsyncExitStack() as stack,
        ):
            node = SimNode(via, "wire-check")
            node.config = node.config.replace(join_token=token)
            await node.start(stack)
            await wait_for(lambda: node.client.node_id in ready_ids(reg))
            await node.client.leave()
            assert reg.nodes == ()
            await node.stop()
            wire = bytes(sent)
            assert b"wire-check" in wire, "the proxy saw the Join (plain gRPC)"
            assert token.encode() not in wire
            assert node.client._secret and node.client._secret not in wire

    run(main())


def test_with_mtls_volunteer_a_cannot_act_as_volunteer_b(tmp_path) -> None:
    ca = CertAuthority(tmp_path / "ca")

    def tls(who: str) -> Tls:
        return Tls.from_files(*map(str, ca.issue(who)), str(ca.ca_path))

    async def main():
        async with coordinator(tls=tls("coordinator")) as (reg, address), AsyncExitStack() as s:
            a, b = SimNode(address, "a"), SimNode(address, "b")
            for node in (a, b):
                await node.client.close()
                node.client = ControlClient(address, tls=tls(node.config.name))
                await node.start(s)
            await wait_for(lambda: ready_ids(reg) == {a.client.node_id, b.client.node_id})
            # A holds a valid cluster certificate and its own secret; it speaks for B.
            stub = a.client._stub
            victim = b.client.node_id
            as_b = pb.LeaveRequest(node_id=victim)
            await refused(stub.Leave(sign(as_b, a.client._secret, "Leave", 10**6), timeout=5))
            beat = pb.HeartbeatRequest(node_id=victim, status=pb.NodeStatus(state="loading"))
            await refused(stub.Heartbeat(sign(beat, a.client._secret, "Heartbeat", 10**6)))
            await asyncio.sleep(3 * BEAT_S)
            assert victim in ready_ids(reg) and reg.get(victim).state == "ready"
            # Each may still act for itself.
            await a.client.leave()
            assert ready_ids(reg) == {victim}
            for node in (a, b):
                await node.stop()

    run(main())


def test_failures_count_per_host_and_challenges_expire() -> None:
    assert peer_host("ipv4:10.1.2.3:50123") == peer_host("ipv4:10.1.2.3:50999") == "10.1.2.3"
    assert peer_host("ipv6:[2001:db8::7]:443") == "2001:db8::7"
    limiter = FailureLimiter(burst=2, forgive_s=10.0)
    for _ in range(2):
        assert limiter.retry_after("a", now=0.0) == 0
        limiter.fail("a", now=0.0)
    assert limiter.retry_after("a", now=0.0) == 10.0
    assert limiter.retry_after("b", now=0.0) == 0, "another host is not held back"
    assert limiter.retry_after("a", now=4.0) == pytest.approx(6.0)
    assert limiter.retry_after("a", now=10.0) == 0
    challenges = Challenges(ttl_s=30.0, capacity=2)
    first, second = challenges.issue(now=0.0), challenges.issue(now=1.0)
    assert challenges.take(second, now=31.0) and not challenges.take(second, now=31.0)
    assert not challenges.take(first, now=31.0), "expired"
    old, *_ = [challenges.issue(now=40.0) for _ in range(3)]
    assert not challenges.take(old, now=40.0), "the oldest goes past the cap"


def test_a_node_restarted_on_its_address_gets_in_once_its_old_self_is_dead() -> None:
    async def main():
        async with coordinator() as (reg, address), AsyncExitStack() as stack:
            old = await SimNode(address, "a").start(stack)
            await wait_for(lambda: old.client.node_id in ready_ids(reg))
            where = reg.get(old.client.node_id).address
            await old.stop()  # killed: it never said goodbye, and its secret is gone
            restarted = ControlClient(address, address_wait_s=10 * DEAD_S)
            t0 = time.monotonic()
            node_id, _, _ = await restarted.join(NodeConfig(coordinator=address), where, HW)
            assert DEAD_S / 2 < time.monotonic() - t0 < 6 * DEAD_S
            assert [n.node_id for n in reg.nodes] == [node_id] != [old.client.node_id]
            await restarted.close()

    run(main())
