"""A coordinator killed with SIGKILL and started again (same --state-dir, same port)
knows its nodes at once: they keep their ids and loaded weights, reload nothing, and
a chat succeeds within 10 s of the restart."""

from __future__ import annotations

import os
import signal
import socket
import time

import httpx
import pytest

from tests.support.cluster import Cluster, start
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(url: str) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def test_a_restarted_coordinator_serves_again_within_10_s_and_no_node_reloads(tmp_path):
    args = ("--state-dir", str(tmp_path / "state"), "--grpc-port", str(_free_port()))
    run_args = ["run", "--model", MODEL, "--port", "0", "--min-stages", "3", *args[:2]]
    with Cluster(MODEL, nodes=3, min_stages=3, coordinator_args=args) as cluster:
        before = _chat(cluster.http_url)
        ids = sorted(n["node_id"] for n in cluster.status()["nodes"])
        time.sleep(1.5)  # a save period: the state file holds the current assignments
        loads = [sum("loading layers" in line for line in w.lines) for w in cluster.workers]
        os.killpg(cluster.coordinator.popen.pid, signal.SIGKILL)
        cluster.coordinator.popen.wait(10)
        time.sleep(2.0)  # nodes heartbeat into the void meanwhile
        t0 = time.monotonic()
        cluster.coordinator = start([*run_args, "--grpc-port", args[3]])
        url = cluster.coordinator.wait_for(r"gateway http listening on (\S+)", 30).group(1)

        def answered() -> str | None:
            try:
                return _chat(url)
            except httpx.HTTPError:
                return None

        after = wait_until(answered, 10, "a chat on the restarted coordinator")
        took = time.monotonic() - t0
        assert after == before
        assert took < 10, took
        cluster.http_url = url
        st = cluster.status()
        assert sorted(n["node_id"] for n in st["nodes"]) == ids  # same identities
        assert all(n["state"] == "ready" for n in st["nodes"])
        reloads = [sum("loading layers" in line for line in w.lines) for w in cluster.workers]
        assert reloads == loads, "a node reloaded weights after the restart"
        assert not any("joining again" in line for w in cluster.workers for line in w.lines)
