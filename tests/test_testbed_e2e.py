"""Four nodes in four network namespaces, on unequal links, serve SmolLM2 with the local
engine's greedy text; a node killed mid-request is survived; teardown leaves nothing."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time

import pytest

from deploy.testbed import Testbed, TestbedConfig
from tests.support.chat import chat, local_texts
from tests.support.deploy import leftovers

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

QUESTIONS = ["hello there", "what is 2+2?", "tell me a story", "name three colors"]
CONFIG = TestbedConfig(
    nodes=4,
    rate_mbit=(200.0, 50.0, 100.0, 20.0),
    delay_ms=(2.0, 15.0, 5.0, 25.0),
    memory_gb=(1.0, 0.6, 0.8, 0.5),
    cpus=("0", "1", "0", "1"),
    coordinator_delay_ms=10.0,  # joins, heartbeats and deliveries cross a delayed link too
    min_stages=2,
)


def test_four_namespaces_on_unequal_links_serve_and_survive_a_killed_node() -> None:
    want = local_texts("smollm2-135m", QUESTIONS, max_tokens=32)
    with Testbed(CONFIG, echo=True) as bed:
        prefix = bed.prefix
        st = bed.wait_ready(4, timeout=300)
        holders = [n for n in st["nodes"] if not n["assignment"].get("standby")]
        assert len(holders) >= 2  # split over namespaces, so hidden states cross links
        got = [bed.in_coordinator_ns(chat, bed.url, q, max_tokens=32) for q in QUESTIONS]
        assert got == want

        # Kill a node that holds layers while every question is in flight.
        victim = int(holders[0]["name"].removeprefix("n"))
        with cf.ThreadPoolExecutor(len(QUESTIONS)) as pool:
            futures = [
                pool.submit(bed.in_coordinator_ns, chat, bed.url, q, 32, True) for q in QUESTIONS
            ]
            time.sleep(1.5)  # mid-stream
            bed.kill_node(victim)
            after = [f.result(timeout=300) for f in futures]
        assert after == want
        # The kill hit requests in flight: the gateway replayed them on another chain.
        assert any("replaying request on a new chain" in line for line in bed.coordinator.lines)
        # And the cluster keeps serving without it.
        assert bed.in_coordinator_ns(chat, bed.url, QUESTIONS[0], max_tokens=32) == want[0]
    assert leftovers(prefix) == []
