"""Admission control and the replay decision: pure parts, exhaustively; the queue with
real asyncio tasks (fairness across clients, bounds, time-outs, clients that leave)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from coordinator.gateway.admission import (
    Admission,
    QueueFull,
    fit_to_kv,
    kv_token_limit,
    route_has_room,
)
from coordinator.gateway.backend import GenerationRequest
from coordinator.gateway.replay import Budget, Used, plan_replay
from coordinator.scheduler.types import ClusterState, Hop, NodeLoad, Route
from parallax.errors import ContextOverflow, NotCovered
from parallax.failures import FailureKind
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId

BUDGET = Budget(max_replays=2, capacity_retries=3, replay_wait_s=30.0)


@pytest.mark.parametrize(
    ("kind", "replays", "capacity", "fallback", "moves"),
    list(itertools.product(FailureKind, range(4), range(5), (False, True), (0, 7, 8))),
)
def test_plan_replay_follows_the_kind_and_the_budget(kind, replays, capacity, fallback, moves):
    used = Used(replays, capacity, fallback, moves)
    plan = plan_replay(kind, used, BUDGET)
    if kind in (FailureKind.INVALID, FailureKind.CANCELLED):
        assert plan is None  # no chain can run it, or nobody wants it
    elif kind in (FailureKind.KV_FULL, FailureKind.OVERLOADED):
        # A healthy chain that is full: any chain after a back-off, on its own budget.
        assert (plan is None) == (capacity >= BUDGET.capacity_retries)
        if plan is not None:
            assert plan.any_chain and plan.backoff_s > 0
            assert plan.used == Used(replays, capacity + 1, fallback, moves)
    elif kind in (FailureKind.REASSIGNED, FailureKind.DRAINING):
        # The cluster moved: wait for any current chain while layers reload.
        assert (plan is None) == (moves >= BUDGET.max_moves)
        if plan is not None:
            assert plan.any_chain and plan.wait_s == BUDGET.replay_wait_s
            assert plan.used == Used(replays, capacity, fallback, moves + 1)
    else:
        assert (plan is None) == (replays >= BUDGET.max_replays)
        if plan is not None:
            assert not plan.any_chain and plan.wait_s > 0
            assert plan.same_at_last == (not fallback)  # the same chain once per request
            assert plan.used == Used(replays + 1, capacity, fallback, moves)


def _route(*ids: str) -> Route:
    return Route(
        tuple(Hop(NodeId(i), f"127.0.0.1:{k + 1}", LayerRange(k, k + 1)) for k, i in enumerate(ids))
    )


def _node(i: str, running: int = 0, max_running: int = 4, free: int = 1000, cap: int = 1000):
    return NodeLoad(
        NodeId(i),
        "127.0.0.1:1",
        LayerRange(0, 1),
        running=running,
        kv_free_tokens=free,
        kv_capacity_tokens=cap,
        max_running=max_running,
    )


def test_route_has_room_needs_a_slot_and_kv_on_every_hop():
    route = _route("a", "b")
    state = ClusterState(2, (_node("a"), _node("b")))
    assert route_has_room(route, state, 100)
    # One hop out of slots, by its report or by the gateway's own open requests.
    assert not route_has_room(route, ClusterState(2, (_node("a"), _node("b", running=4))), 100)
    floor = ClusterState(2, (_node("a"), _node("b")), running_floor={NodeId("b"): 4})
    assert not route_has_room(route, floor, 100)
    # KV: what the report shows free, less what the gateway opened there since.
    assert not route_has_room(route, ClusterState(2, (_node("a"), _node("b", free=99))), 100)
    opened = ClusterState(2, (_node("a"), _node("b", free=250)), running_floor={NodeId("b"): 2})
    assert not route_has_room(route, opened, 100)  # 250 - 2 * 100 < 100
    assert route_has_room(route, ClusterState(2, (_node("a"), _node("b", free=300))), 100)
    # Unknown slots and unknown KV hold nothing back.
    unknown = ClusterState(2, (_node("a", running=99, max_running=0, free=0, cap=0), _node("b")))
    assert route_has_room(route, unknown, 100)


async def _fairness() -> list[str]:
    room = [0]
    adm = Admission(max_queue=100, max_queue_s=10)
    order: list[str] = []

    def has_room() -> bool:
        if room[0] > 0:
            room[0] -= 1
            return True
        return False

    async def request(client: str, k: int) -> None:
        async with adm.slot(client, has_room):
            order.append(client)
            await asyncio.sleep(0)

    flood = [asyncio.create_task(request("flood", k)) for k in range(10)]
    await asyncio.sleep(0.01)
    other = [asyncio.create_task(request("other", k)) for k in range(2)]
    await asyncio.sleep(0.01)
    assert adm.queued == 12
    for _ in range(12):  # room opens one request at a time
        room[0] += 1
        adm.wake()
        await asyncio.sleep(0.01)
    await asyncio.gather(*flood, *other)
    return order


def test_the_queue_is_fair_across_clients():
    order = asyncio.run(_fairness())
    assert len(order) == 12
    # The flood queued first, yet the other client waits behind one flood request per turn.
    assert [i for i, c in enumerate(order) if c == "other"] == [1, 3]


async def _bounds() -> tuple[int, int, int]:
    adm = Admission(max_queue=2, max_queue_s=0.3)
    never = lambda: False  # noqa: E731
    waiting = [asyncio.create_task(_hold(adm, "c", never)) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull, match="--max-queue 2"):
        await _hold(adm, "d", never)
    for t in waiting:
        with pytest.raises(QueueFull, match="--max-queue-s"):
            await t
    assert adm.queued == 0
    # A client that leaves while waiting leaves no trace.
    gone = asyncio.create_task(_hold(adm, "e", never))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert adm.queued == 0
    return (adm.stats.rejected["queue_full"], adm.stats.rejected["timeout"], adm.stats.admitted)


async def _hold(adm: Admission, client: str, has_room) -> None:
    async with adm.slot(client, has_room):
        pass


def test_a_full_queue_and_a_long_wait_are_refused_and_counted():
    assert asyncio.run(_bounds()) == (1, 2, 0)


async def _admits_at_once() -> int:
    adm = Admission(max_queue=0, max_queue_s=1)
    await _hold(adm, "a", lambda: True)  # room: no queue needed, even with max_queue 0
    return adm.stats.admitted


def test_room_admits_at_once():
    assert asyncio.run(_admits_at_once()) == 1


def _holder(i: str, start: int, end: int, cap: int) -> NodeLoad:
    return NodeLoad(NodeId(i), "127.0.0.1:1", LayerRange(start, end), kv_capacity_tokens=cap)


@pytest.mark.parametrize(
    ("nodes", "want"),
    [
        ([], None),  # nothing serves: not bounded here (the router says "not covered")
        ([("a", 0, 4, 100)], 84),  # one block (16 tokens) is kept to decode into
        ([("a", 0, 2, 100), ("b", 2, 4, 500)], 84),  # a chain needs every layer
        ([("a", 0, 4, 100), ("b", 0, 4, 500)], 484),  # the bigger replica can take it
        ([("a", 0, 3, 300), ("b", 1, 4, 100), ("c", 2, 4, 200)], 184),
        ([("a", 0, 2, 100), ("b", 2, 4, 0)], 84),  # b never reported: bounds nothing
        ([("a", 0, 4, 0)], None),
        ([("a", 0, 2, 100)], None),  # layers 2-3 unserved
        ([("a", 0, 4, 10)], 1),
    ],
)
def test_kv_token_limit_is_the_best_chain_s_smallest_cache(nodes, want):
    state = ClusterState(4, nodes=tuple(_holder(*n) for n in nodes))
    assert kv_token_limit(state) == want


def test_a_request_is_fitted_to_the_cluster_s_kv_or_refused_at_once():
    def req(prompt: int, max_tokens: int) -> GenerationRequest:
        return GenerationRequest("r", tuple(range(prompt)), SamplingParams(max_tokens=max_tokens))

    assert fit_to_kv(req(50, 10**6), None).sampling.max_tokens == 10**6  # not bounded
    assert fit_to_kv(req(50, 20), 100).sampling.max_tokens == 20
    assert fit_to_kv(req(50, 50), 100).sampling.max_tokens == 50
    assert fit_to_kv(req(50, 51), 100).sampling.max_tokens == 50  # lowered: ends "length"
    assert fit_to_kv(req(99, 4000), 100).sampling.max_tokens == 1
    for prompt in (100, 101, 5000):
        with pytest.raises(ContextOverflow, match="--kv-cache-mb"):
            fit_to_kv(req(prompt, 1), 100)


async def _a_failing_wait() -> tuple[float, int, int]:
    adm = Admission(max_queue=4, max_queue_s=20.0)
    gone = [False]

    def uncovered() -> bool:
        if gone[0]:
            raise NotCovered("no node holds layers [10,30)")
        return False

    other = asyncio.create_task(_hold(adm, "b", lambda: gone[0]))  # waits, then has room
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(_hold(adm, "a", uncovered))
    await asyncio.sleep(0.3)  # polled a time or two: still waiting
    assert not waiting.done()
    t = time.monotonic()
    gone[0] = True
    with pytest.raises(NotCovered, match=r"\[10,30\)"):
        await waiting
    await other  # the failed waiter did not block the one behind it
    return time.monotonic() - t, adm.queued, adm.stats.admitted


def test_a_wait_ends_at_once_with_the_error_its_room_check_raises():
    # Layers that will not be served again: HTTP 503 within a poll, not a 429 after
    # --max-queue-s (20 s here).
    waited, queued, admitted = asyncio.run(_a_failing_wait())
    assert waited < 1.0 and queued == 0 and admitted == 1


def test_a_node_s_own_kv_block_is_the_slack_it_keeps():
    # A first hop starts a request only with its prompt plus one of *its* blocks free:
    # a node on --kv-block-size 32 takes 16 tokens fewer than the 16-token default.
    def load(i: str, cap: int, block: int) -> NodeLoad:
        return NodeLoad(
            NodeId(i), "x:1", LayerRange(0, 4), kv_capacity_tokens=cap, kv_block_tokens=block
        )

    assert kv_token_limit(ClusterState(4, (load("a", 100, 32),))) == 68
    assert kv_token_limit(ClusterState(4, (load("a", 100, 0),))) == 84  # not reported
    assert kv_token_limit(ClusterState(4, (load("a", 100, 32), load("b", 90, 8)))) == 82
