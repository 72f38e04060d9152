"""End-to-end on the real SmolLM2 weights: a 3-node cluster equals the local engine."""

from __future__ import annotations

import pytest

from tests.support.chat import QUESTIONS, chat, local_texts
from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e


def test_smollm2_three_node_cluster_equals_local_engine():
    want = local_texts("smollm2-135m", QUESTIONS, max_tokens=24)
    with Cluster("smollm2-135m", nodes=3, min_stages=3) as cluster:
        ranges = sorted(tuple(n["assignment"]["range"]) for n in cluster.status()["nodes"])
        assert len(ranges) == 3 and all(b - a < 30 for a, b in ranges)
        got = [chat(cluster.http_url, q, max_tokens=24) for q in QUESTIONS]
        streamed = [chat(cluster.http_url, q, max_tokens=24, stream=True) for q in QUESTIONS[:2]]
    assert got == want
    assert streamed == want[:2]
