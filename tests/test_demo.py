"""`parallax demo` starts a working cluster; Ctrl-C or SIGTERM stops every process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import httpx
import psutil
import pytest

from tests.support.cluster import start


# SIGTERM too: the nodes run in their own sessions, so a demo killed without stopping
# them would leave them running.
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_demo_serves_and_stops_cleanly(tiny_models, stop_signal):
    demo = start(
        [
            "demo",
            "--model",
            str(tiny_models["qwen2"]),
            "--nodes",
            "2",
            "--grpc-port",
            "0",
            "--port",
            "0",
            "--kv-cache-mb",
            "16",
        ]
    )
    children: list[psutil.Process] = []
    try:
        url = demo.wait_for(r"API:\s+(\S+)/v1", 240).group(1)
        demo.wait_for(r"parallax join --coordinator \S+", 5)
        curl = demo.wait_for(r"Try:\s+curl ", 5)
        assert curl
        children = psutil.Process(demo.popen.pid).children(recursive=True)
        assert len(children) >= 3  # coordinator + 2 nodes
        mid = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": mid, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in (
            "stop",
            "length",
        )
    finally:
        demo.popen.send_signal(stop_signal)
        try:
            rc = demo.popen.wait(30)
        except subprocess.TimeoutExpired:
            for p in [demo.popen, *children]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(
                f"demo still running 30 s after {stop_signal.name}:\n" + "\n".join(demo.lines[-40:])
            )
    assert rc == 0
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"left running: {alive}"
