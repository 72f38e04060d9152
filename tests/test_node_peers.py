"""Outbound gRPC clients (a node's peers, the gateway's nodes) forget idle addresses."""

from __future__ import annotations

import asyncio

from coordinator.gateway.upstream import NodeClients
from node.peers import Peers
from parallax.rpc import parallax_pb2 as pb
from tests.support.node import collecting_gateway
from tests.support.wait import wait_for


def batch(rid: str, token: int) -> pb.TokenBatch:
    return pb.TokenBatch(events=[pb.TokenEvent(request_id=rid, token_id=token)])


async def idle_then_again() -> None:
    failures = []
    peers = Peers(lambda *a: failures.append(a), idle_s=0.3)
    async with collecting_gateway() as (collector, address):
        try:
            for t in range(5):
                peers.send(address, "deliver", batch("r", t))
            await wait_for(lambda: len(collector.events.get("r", [])) == 5, 5, "five tokens")
            assert [e.token_id for e in collector.events["r"]] == [0, 1, 2, 3, 4]
            assert peers.addresses == [address]
            await wait_for(lambda: not peers.addresses, 5, "the idle peer to be forgotten")
            await asyncio.sleep(0)  # let the channel close
            peers.send(address, "deliver", batch("r", 5))  # a new sender, a new channel
            await wait_for(lambda: len(collector.events["r"]) == 6, 5, "the sixth token")
            assert not failures
        finally:
            await peers.close()


def test_an_idle_peer_is_forgotten_and_a_later_send_still_arrives():
    asyncio.run(idle_then_again())


async def gateway_forgets_idle_nodes() -> None:
    now = [0.0]
    clients = NodeClients(idle_s=300.0, clock=lambda: now[0])
    clients.stub("127.0.0.1:1")
    now[0] = 200.0
    clients.stub("127.0.0.1:2")
    now[0] = 400.0  # the first is idle for 400 s, the second for 200 s
    clients.stub("127.0.0.1:3")
    assert sorted(clients.addresses) == ["127.0.0.1:2", "127.0.0.1:3"]
    clients.stub("127.0.0.1:1")  # used again: a fresh channel
    assert sorted(clients.addresses) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    await clients.close()
    assert clients.addresses == []


def test_the_gateway_closes_channels_to_nodes_it_no_longer_uses():
    asyncio.run(gateway_forgets_idle_nodes())
