"""Death by silence, and only by the nodes' silence: a coordinator that stalled does
not declare its whole cluster dead, and a drain never leaves a moment in which the
gateway sees uncovered layers without a re-allocation under way (the chaos e2e test
saw 503 "no node holds layers [0,30)" bursts on CI)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from contextlib import AsyncExitStack

import grpc

from coordinator.liveness import Listening, silent_nodes
from coordinator.registry import Registry
from coordinator.registry_types import NodeReport, NodeState
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from tests.support import control
from tests.support.control import BEAT_S, SimNode, run, sign
from tests.support.registry import HALF, OPTS, SPEC, covers, hw, ready
from tests.support.wait import wait_for


def test_listening_restarts_the_count_after_a_late_round_only() -> None:
    listening = Listening(stall_after_s=2.0)
    assert listening.round(0.0) == -math.inf  # the first round: nothing to compare
    assert listening.round(1.0) == -math.inf
    assert listening.round(3.0) == -math.inf  # exactly the limit is not a stall
    assert listening.round(5.5) == 5.5  # 2.5 s late: silence counts from here
    assert listening.round(6.5) == 5.5
    assert Listening().round(0.0) == Listening().round(1e9) == -math.inf  # never assumes one


def test_silent_nodes_count_from_the_later_of_heartbeat_and_listening() -> None:
    reg = _registry(math.inf)
    a, b = _two(reg)
    records = reg.nodes
    assert set(silent_nodes(records, 10.0, 4.0, -math.inf)) == {a, b}
    assert silent_nodes(records, 10.0, 4.0, heard_since=7.0) == []
    assert set(silent_nodes(records, 11.5, 4.0, heard_since=7.0)) == {a, b}
    assert silent_nodes(records, 4.4, 4.0, -math.inf) == []  # last heard at 0.5


def _registry(stall_after_s: float) -> Registry:
    return Registry("tiny", SPEC, dead_after_s=4.0, options=OPTS, stall_after_s=stall_after_s)


def _two(reg: Registry):
    ids = [reg.join(n, f"127.0.0.1:510{i}", hw(HALF), now=0.0)[0] for i, n in enumerate("ab")]
    for i in ids:
        ready(reg, i, now=0.5)
    return ids


def test_a_stalled_coordinator_does_not_declare_its_nodes_dead() -> None:
    reg = _registry(stall_after_s=2.0)
    a, b = _two(reg)
    for t in (1.0, 2.0, 3.0):
        assert reg.expire(now=t) == []
    # The coordinator was away for 7 s (say its loop was blocked): both nodes' last
    # heartbeats are 9.5 s old, but it could not have heard them.
    assert reg.expire(now=10.0) == []
    ready(reg, a, now=10.2)  # the queued heartbeat of a arrives; b's never does
    for t in (11.0, 12.0, 13.0, 14.0):
        assert reg.expire(now=t) == []
    assert reg.expire(now=14.1) == [b]  # 4.1 s of silence while listening
    assert reg.get(a).state is NodeState.READY


def test_without_a_stall_a_silent_node_dies_on_time() -> None:
    reg = _registry(stall_after_s=2.0)
    a, b = _two(reg)
    for t in (1.0, 2.0, 3.0, 4.0):
        ready(reg, a, now=t)
        assert reg.expire(now=t) == []
    ready(reg, a, now=4.5)
    assert reg.expire(now=4.6) == [b]  # silent since 0.5


def test_a_drain_shows_only_once_its_re_allocation_may_start() -> None:
    # While another membership change holds the lock, a draining heartbeat waits before
    # it marks the node leaving: until then the node's layers still count as assigned.
    reg = _registry(math.inf)
    ids = [reg.join(n, f"127.0.0.1:520{i}", hw(HALF), now=0.0)[0] for i, n in enumerate("abc")]
    for i in ids:
        ready(reg, i, now=0.5)
    leaving = next(i for i in ids if reg.get(i).assignment.range is not None)
    report = NodeReport(state=NodeState.LEAVING, loaded=reg.get(leaving).assignment.range)
    with reg._membership:  # a join's or a death's solve, say
        beat = threading.Thread(target=reg.heartbeat, args=(leaving, report, {}, 1.0))
        beat.start()
        time.sleep(0.2)
        assert beat.is_alive()
        assert reg.get(leaving).state is NodeState.READY
    beat.join(10)
    assert reg.get(leaving).state is NodeState.LEAVING
    others = [reg.get(i).assignment.range for i in ids if i != leaving]
    assert covers(others) and reg.recovering(now=1.0)


def test_a_draining_heartbeat_does_not_block_the_coordinators_event_loop() -> None:
    # The drain's re-allocation waits for the membership lock: other nodes' heartbeats
    # must still be heard meanwhile, or they all look silent when it ends.
    async def main():
        async with control.coordinator() as (reg, address), AsyncExitStack() as stack:
            drainer = await SimNode(address, "drainer").start(stack)
            other = await SimNode(address, "other").start(stack)
            node_id, other_id = drainer.client.node_id, other.client.node_id
            await wait_for(lambda: {node_id, other_id} <= {n.node_id for n in reg.nodes})
            await drainer.stop()
            release = threading.Event()
            held = threading.Event()

            def hold() -> None:
                with reg._membership:
                    held.set()
                    release.wait(10)

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait(5)
            try:
                async with grpc.aio.insecure_channel(address) as ch:
                    leaving = pb.HeartbeatRequest(
                        node_id=node_id, status=pb.NodeStatus(state="leaving")
                    )
                    sign(leaving, drainer.client._secret, "Heartbeat", counter=10**9)
                    call = asyncio.ensure_future(
                        pb_grpc.CoordinatorStub(ch).Heartbeat(leaving, timeout=10)
                    )
                    before = reg.get(other_id).last_heartbeat
                    await asyncio.sleep(6 * BEAT_S)
                    assert not call.done()
                    assert reg.get(other_id).last_heartbeat > before, "the loop was blocked"
                    release.set()
                    reply = await call
                    assert not reply.unknown_node
            finally:
                release.set()
                holder.join(10)
            assert reg.get(node_id).state is NodeState.LEAVING
            await other.stop()

    run(main())


def test_requests_wait_a_while_after_the_whole_cluster_was_lost() -> None:
    # Nodes taken for dead (a stall of their own) find out at their next heartbeat and
    # join again at once: until then nothing covers the model, and the gateway should
    # wait for them, not answer 503 to every request meanwhile.
    reg = _registry(math.inf)
    a, b = _two(reg)
    assert reg.recovering(now=1.0)
    assert set(reg.expire(now=5.0)) == {a, b}
    assert reg.recovering(now=5.0) and reg.recovering(now=8.9)
    assert not reg.recovering(now=9.1)  # dead_after_s later, nobody came back: 503 at once
    again = reg.join("a", "127.0.0.1:5100", hw(HALF), now=9.5)[0]
    ready(reg, again, now=9.6)
    assert not reg.recovering(now=9.7)  # one half-sized node cannot hold the model
    reg.join("b", "127.0.0.1:5101", hw(HALF), now=10.0)
    assert reg.recovering(now=10.1)  # covered again, loading
