"""The gateway spreads a burst over equivalent replicas before any heartbeat says so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc

from coordinator.gateway.backend import GenerationRequest
from coordinator.gateway.cluster_backend import ClusterBackend, RouteFn
from coordinator.scheduler import route as schedule_route
from coordinator.scheduler.types import ClusterState, NodeLoad, Route, RouteRequest
from parallax.failures import FailureKind
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId
from tests.support.fake_nodes import FakeNode, serving_backend

LAYERS = 30


def _request(rid: str) -> GenerationRequest:
    return GenerationRequest(rid, (1, 2, 3), SamplingParams(max_tokens=16))


def _replicas(nodes: list[FakeNode], running: int = 0) -> ClusterState:
    """Every node holds every layer, same region, same speed: equivalent replicas."""
    return ClusterState(
        LAYERS,
        tuple(
            NodeLoad(NodeId(n.node_id), n.address, LayerRange(0, LAYERS), running=running)
            for n in nodes
        ),
    )


async def _with_backend(
    nodes: list[FakeNode],
    body: Callable[[ClusterBackend], Awaitable[None]],
    route_fn: RouteFn = schedule_route,
    heartbeat_running: list[int] | None = None,
) -> None:
    """`heartbeat_running[0]`: what every node last reported running (0 unless set)."""
    running = heartbeat_running if heartbeat_running is not None else [0]

    def make(address: str) -> ClusterBackend:
        state = lambda: _replicas(nodes, running[0])  # noqa: E731
        return ClusterBackend(state, LAYERS, address, route_fn, replay_wait_s=0.5)

    async with serving_backend(nodes, make) as backend:
        await body(backend)


def test_a_burst_is_spread_over_equivalent_replicas_and_counts_drop_when_done():
    nodes = [FakeNode("a", hang=True), FakeNode("b", hang=True)]

    async def body(backend: ClusterBackend) -> None:
        streams = [backend.generate(_request(f"r{i}")) for i in range(6)]
        for s in streams:  # back to back: each routed while the others are still open
            await anext(s)
        assert backend.node_in_flight == {"a": 3, "b": 3}
        for s in streams[:2]:
            await s.aclose()
        assert sum(backend.node_in_flight.values()) == 4
        for s in streams[2:]:
            await s.aclose()
        assert backend.node_in_flight == {}

    asyncio.run(_with_backend(nodes, body))
    assert [len(n.submits) for n in nodes] == [3, 3]


def test_a_failed_attempt_stops_counting():
    nodes = [FakeNode("a", refuse=grpc.StatusCode.UNAVAILABLE)]

    async def body(backend: ClusterBackend) -> None:
        stream = backend.generate(_request("r1"))
        first = await anext(stream)  # refused: replayed while the wait lasts, then failed
        assert first.failure is not None and first.failure.kind is FailureKind.UNREACHABLE
        assert backend.node_in_flight == {}
        await stream.aclose()

    asyncio.run(_with_backend(nodes, body))


def test_routing_sees_the_larger_of_heartbeat_and_own_count():
    nodes = [FakeNode("a", hang=True)]
    seen: list[int] = []
    heartbeat = [0]

    def record(req: RouteRequest, state: ClusterState) -> Route:
        n = state.nodes[0]  # what the router counts: report or own open chains, the larger
        seen.append(max(n.running, state.running_floor.get(n.node_id, 0)))
        return schedule_route(req, state)

    async def body(backend: ClusterBackend) -> None:
        streams = [backend.generate(_request(f"r{i}")) for i in range(3)]
        for s in streams:
            await anext(s)
        heartbeat[0] = 5  # a heartbeat arrives: 5 running (ours and others')
        s4 = backend.generate(_request("r4"))
        await anext(s4)
        for s in [*streams, s4]:
            await s.aclose()

    asyncio.run(_with_backend(nodes, body, route_fn=record, heartbeat_running=heartbeat))
    assert seen == [0, 1, 2, 5]
