"""A hop out of KV fails a request on a healthy chain: the gateway replays it there
after a short back-off, where a failed node's chain is never reused."""

from __future__ import annotations

import asyncio
import time

from coordinator.gateway.backend import GenerationRequest
from coordinator.gateway.cluster_backend import KV_FULL_BACKOFF_S, ClusterBackend
from coordinator.scheduler.types import ClusterState, NodeLoad
from parallax.errors import KV_FULL_MARK
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, NodeId
from tests.gateway_fake_nodes import FakeNode, serving_backend

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
    node = FakeNode("a", fail_first=f"request r1: {KV_FULL_MARK} on this node (needs 3 more)")
    t0 = time.monotonic()
    tokens = asyncio.run(_generate(node, replay_wait_s=20.0))
    took = time.monotonic() - t0
    assert [t.token_id for t in tokens] == list(SCRIPT)
    assert tokens[-1].finish_reason == "length"
    assert [s.request_id for s in node.submits] == ["r1", "r1~r1"]
    assert KV_FULL_BACKOFF_S <= took < 10.0


def test_another_failure_is_not_replayed_on_the_same_chain():
    node = FakeNode("a", fail_first="internal error: the engine step failed on node a")
    tokens = asyncio.run(_generate(node, replay_wait_s=1.2))
    assert [t.finish_reason for t in tokens] == ["error"]
    assert "engine step failed" in (tokens[0].error or "")
    assert len(node.submits) == 1
