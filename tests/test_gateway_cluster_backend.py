"""ClusterBackend against real grpc.aio servers: fake nodes, the real Deliver servicer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from coordinator.gateway.backend import GenerationRequest
from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.scheduler.types import ClusterState, NodeLoad
from parallax.errors import NotCovered
from parallax.failures import FailureKind
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId
from tests.support.fake_nodes import FakeNode, chain, serving_backend

LAYERS = 30
PROMPT = (1, 2, 3)


def _request(rid: str = "r1", max_tokens: int = 16, logprobs: int = -1) -> GenerationRequest:
    return GenerationRequest(rid, PROMPT, SamplingParams(max_tokens=max_tokens, logprobs=logprobs))


async def _with_cluster(
    nodes: list[FakeNode],
    body: Callable[[ClusterBackend], Awaitable[None]],
    stall_s: float = 60.0,
    replay_wait_s: float = 30.0,
    token_stall_s: float = 20.0,
    capacity_retries: int = 30,
) -> None:
    def make(address: str) -> ClusterBackend:
        route = chain(nodes, LAYERS)
        return ClusterBackend(
            state_fn=lambda: ClusterState(LAYERS, ()),
            num_layers=LAYERS,
            self_address=address,
            route_fn=lambda _req, _state: route,
            stall_s=stall_s,
            replay_wait_s=replay_wait_s,
            token_stall_s=token_stall_s,
            capacity_retries=capacity_retries,
        )

    async with serving_backend(nodes, make) as backend:
        await body(backend)


def _three() -> list[FakeNode]:
    return [FakeNode("a"), FakeNode("b"), FakeNode("c")]


def test_a_request_streams_and_is_released_on_every_hop():
    nodes = _three()

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request(logprobs=0))]
        assert [t.token_id for t in tokens] == [10, 11, 12, 13, 14]
        assert tokens[-1].finished and tokens[-1].finish_reason == "stop"
        assert all(t.logprob == -0.5 for t in tokens)
        (submit,) = nodes[0].submits
        assert list(submit.prompt_ids) == list(PROMPT)
        assert [(h.node_id, h.start, h.end) for h in submit.route.hops] == [
            ("a", 0, 10),
            ("b", 10, 20),
            ("c", 20, 30),
        ]
        assert submit.reply_to == backend._self_address
        assert not nodes[1].submits and not nodes[2].submits
        assert backend.in_flight == 0

    asyncio.run(_with_cluster(nodes, body))
    for node in nodes:
        assert node.releases == [(("r1",), "finished")]


def test_length_finish_and_no_logprobs_unless_asked():
    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request(max_tokens=2))]
        assert [(t.token_id, t.finish_reason) for t in tokens] == [(10, None), (11, "length")]
        assert all(t.logprob is None for t in tokens)

    asyncio.run(_with_cluster(_three(), body))


def test_closing_the_iterator_releases_every_hop_at_once():
    nodes = [FakeNode(n, hang=True) for n in "abc"]

    async def body(backend: ClusterBackend) -> None:
        stream = backend.generate(_request())
        got = [await anext(stream), await anext(stream)]
        assert [t.token_id for t in got] == [10, 11]
        await stream.aclose()
        await asyncio.sleep(0.2)  # the release is sent in the background

    asyncio.run(_with_cluster(nodes, body))
    for node in nodes:
        assert node.releases == [(("r1",), "abort")]
    # The node stopped delivering once released.
    assert nodes[0].delivered.count("r1") <= 5


def test_cancelling_the_consumer_task_releases_too():
    nodes = [FakeNode(n, hang=True) for n in "abc"]

    async def body(backend: ClusterBackend) -> None:
        async def consume() -> None:
            async for _ in backend.generate(_request()):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(_with_cluster(nodes, body))
    assert all(n.releases == [(("r1",), "abort")] for n in nodes)


def test_concurrent_requests_are_dispatched_by_id():
    async def body(backend: ClusterBackend) -> None:
        async def run(rid: str) -> list[int]:
            return [t.token_id async for t in backend.generate(_request(rid))]

        outs = await asyncio.gather(*(run(f"r{i}") for i in range(8)))
        assert all(o == [10, 11, 12, 13, 14] for o in outs)

    asyncio.run(_with_cluster(_three(), body))


def test_a_first_node_refusing_for_capacity_is_retried_then_fails_as_overloaded():
    nodes = [FakeNode("a", refuse=grpc.StatusCode.RESOURCE_EXHAUSTED), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert len(tokens) == 1 and tokens[0].failure is not None
        assert tokens[0].failure.kind is FailureKind.OVERLOADED

    asyncio.run(_with_cluster(nodes, body, capacity_retries=1))
    assert [s.request_id for s in nodes[0].submits] == ["r1", "r1~r1"]  # one retry
    # Whatever the first node did keep is freed on every hop.
    assert all(n.releases == [(("r1",), "abort"), (("r1~r1",), "abort")] for n in nodes)


def test_an_unreachable_first_node_ends_as_unreachable_after_the_replays():
    nodes = [FakeNode("a", refuse=grpc.StatusCode.UNAVAILABLE)]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert len(tokens) == 1 and tokens[0].failure is not None
        assert tokens[0].failure.kind is FailureKind.UNREACHABLE
        assert "first node a" in tokens[0].failure.message

    asyncio.run(_with_cluster(nodes, body, replay_wait_s=0.2))
    # No other chain: the same one was taken once more as a last resort.
    assert [s.request_id for s in nodes[0].submits] == ["r1", "r1~r1"]


def test_a_chain_that_stays_silent_ends_in_an_error_and_is_released():
    nodes = [FakeNode("a", silent=True), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert len(tokens) == 1 and tokens[0].failure is not None
        assert tokens[0].failure.kind is FailureKind.STALLED

    asyncio.run(_with_cluster(nodes, body, stall_s=0.3, replay_wait_s=0.2))
    # No other chain: the silent one was tried once more, each attempt released.
    wire_ids = ["r1", "r1~r1"]
    assert [s.request_id for s in nodes[0].submits] == wire_ids
    assert all(n.releases == [((w,), "abort") for w in wire_ids] for n in nodes)


def test_a_chain_that_hangs_mid_stream_is_noticed_by_the_shorter_token_timer():
    # Tokens came, then silence: a hung hop. The between-tokens timer ends the attempt
    # long before the first-token timer would (60 s here).
    nodes = [FakeNode("a", hang=True), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        t0 = time.monotonic()
        tokens = [t async for t in backend.generate(_request())]
        assert time.monotonic() - t0 < 10
        assert tokens[-1].failure is not None and tokens[-1].failure.kind is FailureKind.STALLED
        assert [t.token_id for t in tokens[:5]] == [10, 11, 12, 13, 14]

    asyncio.run(_with_cluster(nodes, body, stall_s=60, replay_wait_s=0.2, token_stall_s=0.3))
    assert len(nodes[0].submits) == 2  # the attempt, and one replay on the same chain


def test_a_lost_message_on_the_only_chain_is_replayed_on_it():
    # The first attempt's tokens never come (a lost message); the nodes are alive, no
    # other chain exists: the replay goes to the same chain and the client sees one
    # stream.
    nodes = [FakeNode("a", silent_first=True), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert [t.token_id for t in tokens] == [10, 11, 12, 13, 14]
        assert tokens[-1].finish_reason == "stop" and tokens[-1].failure is None

    asyncio.run(_with_cluster(nodes, body, stall_s=0.3, replay_wait_s=0.2))
    assert [s.request_id for s in nodes[0].submits] == ["r1", "r1~r1"]


def test_an_event_delivered_twice_is_taken_once():
    # A captured event sent again (same index, valid MAC) must not repeat a token.
    nodes = [FakeNode("a", resend_at=2), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert [t.token_id for t in tokens] == [10, 11, 12, 13, 14]
        assert backend.denied_deliveries == 1

    asyncio.run(_with_cluster(nodes, body))


def test_a_token_that_never_arrived_is_replayed_not_skipped():
    # Index 2 is lost on the first attempt: the client must not get 10, 11, 13, ...
    nodes = [FakeNode("a", skip_at=2), FakeNode("b")]

    async def body(backend: ClusterBackend) -> None:
        tokens = [t async for t in backend.generate(_request())]
        assert tokens[-1].failure is None
        assert [t.token_id for t in tokens] == [10, 11, 12, 13, 14]

    asyncio.run(_with_cluster(nodes, body, replay_wait_s=0.2))
    replay = nodes[0].submits[-1]
    assert replay.request_id == "r1~r1" and replay.generated_offset == 2


def test_deliver_drops_tokens_of_unknown_requests():
    async def body(backend: ClusterBackend) -> None:
        ev = pb.TokenEvent(request_id="ghost", token_id=1)
        ack = await backend.servicer.Deliver(pb.TokenBatch(events=[ev]), None)
        assert ack.ok and backend.in_flight == 0

    asyncio.run(_with_cluster(_three(), body))


def test_check_ready_uses_the_router_over_live_state():
    half = ClusterState(
        LAYERS, (NodeLoad(NodeId("a"), "127.0.0.1:1", LayerRange(0, 10), kv_free_tokens=100),)
    )
    backend = ClusterBackend(lambda: half, LAYERS, "127.0.0.1:2")
    with pytest.raises(NotCovered, match=r"\[10,30\)"):
        backend.check_ready()
    full = ClusterState(LAYERS, (*half.nodes, NodeLoad(NodeId("b"), "x:1", LayerRange(10, 30))))
    ClusterBackend(lambda: full, LAYERS, "127.0.0.1:2").check_ready()


def test_a_replay_avoids_the_hop_that_was_unreachable():
    # The router may still offer chains through a hop that just failed (the coordinator
    # has not declared it dead yet): the replay waits for one without it.
    a, b = FakeNode("a", refuse=grpc.StatusCode.UNAVAILABLE), FakeNode("b")
    calls = [0]

    def make(address: str) -> ClusterBackend:
        def route_fn(_req, _state):
            calls[0] += 1
            if calls[0] == 1:
                return chain([a], LAYERS)
            if calls[0] <= 3:  # different from the failed chain, but through `a` again
                return chain([a, b], LAYERS)
            return chain([b], LAYERS)

        return ClusterBackend(
            state_fn=lambda: ClusterState(LAYERS, ()),
            num_layers=LAYERS,
            self_address=address,
            route_fn=route_fn,
            replay_wait_s=10.0,
        )

    async def run() -> list:
        async with serving_backend([a, b], make) as backend:
            return [t async for t in backend.generate(_request())]

    tokens = asyncio.run(run())
    assert [t.token_id for t in tokens] == [10, 11, 12, 13, 14]
    assert len(a.submits) == 1  # never tried again
    assert [s.request_id for s in b.submits] == ["r1~r1"]


def test_a_request_waiting_out_a_recovery_fails_as_soon_as_the_recovery_ends():
    # The cover was lost and the registry waits --dead-after-s for nodes to re-join: a
    # request waits with it, then gets its 503 (NotCovered) when that ends, not a 429
    # after --max-queue-s (60 s here).
    recovering = [True]

    def route_fn(_req, _state):
        raise NotCovered("no node holds layers [0,30)")

    backend = ClusterBackend(
        state_fn=lambda: ClusterState(LAYERS, ()),
        num_layers=LAYERS,
        self_address="127.0.0.1:2",
        route_fn=route_fn,
        max_queue_s=60.0,
        recovering=lambda: recovering[0],
    )

    async def body() -> float:
        task = asyncio.create_task(anext(aiter(backend.generate(_request()))))
        await asyncio.sleep(0.6)
        assert not task.done()  # still recovering: it waits
        recovering[0] = False
        t = time.monotonic()
        with pytest.raises(NotCovered, match=r"\[0,30\)"):
            await task
        return time.monotonic() - t

    assert asyncio.run(body()) < 2.0
    assert backend.admission.queued == 0


def test_ready_while_the_registry_recovers_unready_after():
    # Every chat request is checked first (`check_request`): layers that are only
    # reloading must not fail it with a 503 before it can wait in admission.
    recovering = [True]
    half = ClusterState(
        LAYERS, (NodeLoad(NodeId("a"), "127.0.0.1:1", LayerRange(0, 10), kv_free_tokens=100),)
    )
    backend = ClusterBackend(lambda: half, LAYERS, "127.0.0.1:2", recovering=lambda: recovering[0])
    backend.check_ready()  # recovering: taken, it will wait
    recovering[0] = False
    with pytest.raises(NotCovered, match=r"\[10,30\)"):
        backend.check_ready()
