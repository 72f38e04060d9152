"""A hop out of KV fails a request on a healthy chain: the gateway replays it there
after a short back-off, where a failed node's chain is never reused."""

from __future__ import annotations

import asyncio
import time

from coordinator.gateway.backend import GenerationRequest
from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.gateway.replay import CAPACITY_BACKOFF_S
from coordinator.scheduler.types import ClusterState, NodeLoad
from parallax.failures import FailureKind
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId
from tests.support.fake_nodes import FakeNode, serving_backend

LAYERS = 30
SCRIPT = (10, 11, 12, 13, 14)


async def _generate(node: FakeNode, replay_wait_s: float) -> list:
    """Tokens of one request through a one-node cluster (one chain only)."""

    def make(address: str) -> ClusterBackend:
        only = NodeLoad(NodeId(node.node_id), node.address, LayerRange(0, LAYERS))
        state = ClusterState(LAYERS, (only,))
        return ClusterBackend(lambda: state, LAYERS, address, replay_wait_s=replay_wait_s)

    async with serving_backend([node], make) as backend:
        req = GenerationRequest("r1", (1, 2, 3), SamplingParams(max_tokens=len(SCRIPT)))
        return [t async for t in backend.generate(req)]


def test_kv_full_on_the_only_chain_is_replayed_there_after_a_back_off():
    node = FakeNode("a", fail_first="request r1: KV cache full", fail_kind=pb.FAILURE_KV_FULL)
    t0 = time.monotonic()
    tokens = asyncio.run(_generate(node, replay_wait_s=20.0))
    took = time.monotonic() - t0
    assert [t.token_id for t in tokens] == list(SCRIPT)
    assert tokens[-1].finish_reason == "length"
    assert [s.request_id for s in node.submits] == ["r1", "r1~r1"]
    assert CAPACITY_BACKOFF_S <= took < 10.0


def test_a_fault_on_the_only_chain_is_replayed_there_once_no_other_shows_up():
    node = FakeNode("a", fail_first="internal error: the engine step failed on node a")
    t0 = time.monotonic()
    tokens = asyncio.run(_generate(node, replay_wait_s=1.2))
    # It looked for another chain for the whole wait (a fault, unlike a full KV cache,
    # may be the chain's), then took the same one as a last resort.
    assert time.monotonic() - t0 >= 1.2
    assert [t.token_id for t in tokens] == list(SCRIPT)
    assert [s.request_id for s in node.submits] == ["r1", "r1~r1"]


def test_a_request_the_nodes_call_invalid_is_never_replayed():
    node = FakeNode("a", fail_first="bad request", fail_kind=pb.FAILURE_INVALID)
    tokens = asyncio.run(_generate(node, replay_wait_s=1.2))
    assert len(tokens) == 1 and tokens[0].failure is not None
    assert tokens[0].failure.kind is FailureKind.INVALID
    assert len(node.submits) == 1
