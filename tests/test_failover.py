"""Live coordinator: a killed node is re-covered; smaller nodes get fewer layers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.cluster_harness import Cluster
from tests.test_cluster import chat
from tests.tiny_models import make_tiny_model


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_killed_node_is_recovered_and_the_cluster_serves_again(tiny_models):
    with Cluster(str(tiny_models["llama"]), nodes=3, min_stages=3) as cluster:
        before = chat(cluster.http_url, "hello there")
        victim = cluster.workers[1]
        os.killpg(victim.popen.pid, signal.SIGKILL)

        def recovered():
            st = cluster.status()
            dead = [n for n in st["nodes"] if n["state"] == "dead"]
            return dead and st["coverage"]["serving"] and st

        st = wait_until(recovered, 90, "the lost layers to be served again")
        assert (
            any(d["kind"] in ("dead", "realloc", "allocation") for d in st["decisions"])
            or st["allocation"]["reason"]
        )
        assert chat(cluster.http_url, "hello there") == before


def test_node_with_less_memory_gets_fewer_layers(tmp_path):
    model = make_tiny_model(tmp_path / "deep", "llama", num_layers=12)
    with Cluster(str(model), nodes=0, min_stages=1) as cluster:
        cluster.add_node("big", "--memory-gb", "0.012")
        cluster.add_node("small", "--memory-gb", "0.004")
        st = cluster.wait_ready(2)
        size = {
            n["name"]: n["assignment"]["range"][1] - n["assignment"]["range"][0]
            for n in st["nodes"]
        }
        assert size["small"] < size["big"], size
        assert chat(cluster.http_url, "hi")
