"""`parallax run` as a real process: listeners, a node joining it, status, clean SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from node.control import ControlClient
from node.hardware import Hardware
from parallax.config.generate import DEFAULT_MODEL
from parallax.config.node import NodeConfig
from parallax.errors import ModelNotFound
from parallax.models.registry import resolve_model

PARALLAX = Path(sys.executable).with_name("parallax")
GRPC_LINE = re.compile(r"^coordinator grpc listening on (\S+):(\d+)$")
HTTP_LINE = re.compile(r"^gateway http listening on (http://\S+)$")


def _default_model_missing() -> str:
    try:
        resolve_model(DEFAULT_MODEL)
    except ModelNotFound as e:
        return str(e)
    return ""


pytestmark = pytest.mark.skipif(bool(_default_model_missing()), reason=_default_model_missing())


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(PARALLAX), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listeners(proc: subprocess.Popen) -> tuple[str, str]:
    grpc_address = http_url = None
    for line in proc.stdout:  # the two lines come right after start-up
        if m := GRPC_LINE.match(line.strip()):
            grpc_address = f"{m[1]}:{m[2]}"
        elif m := HTTP_LINE.match(line.strip()):
            http_url = m[1]
        if grpc_address and http_url:
            return grpc_address, http_url
    raise AssertionError(f"parallax run exited early: {proc.wait()} {proc.stderr.read()}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = proc.wait(timeout=10)
    assert time.monotonic() - t0 < 5.0, "SIGTERM took too long"
    return rc


async def join_one(grpc_address: str) -> str:
    hw = Hardware("cpu", "test", flops=1e11, mem_bandwidth=1e10, memory_bytes=8 * 2**30)
    client = ControlClient(grpc_address)
    node_id, assignment, _ = await client.join(
        NodeConfig(coordinator=grpc_address, name="solo"), "127.0.0.1:6553", hw
    )
    assert (assignment.start, assignment.end) == (0, 30)  # smollm2-135m: 30 layers
    await client.close()
    return node_id


def test_run_serves_status_accepts_a_node_and_stops_on_sigterm() -> None:
    proc = start("--grpc-port", "0", "--port", "0")
    try:
        grpc_address, http_url = listeners(proc)
        status = httpx.get(f"{http_url}/cluster/status", timeout=10).json()
        assert status["model"] == {"name": "smollm2-135m", "num_layers": 30}
        assert status["nodes"] == [] and status["coverage"]["gaps"] == [[0, 30]]
        assert httpx.get(f"{http_url}/health", timeout=10).status_code == 503  # no layers yet
        node_id = asyncio.run(join_one(grpc_address))
        status = httpx.get(f"{http_url}/cluster/status", timeout=10).json()
        assert [n["node_id"] for n in status["nodes"]] == [node_id]
        assert status["nodes"][0]["state"] == "joining"
        assert status["coverage"]["gaps"] == [] and status["coverage"]["serving_gaps"] == [[0, 30]]
        assert stop(proc) == 0
    finally:
        proc.kill()
        proc.wait()


def test_taken_grpc_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        proc = start("--grpc-port", port, "--port", "0")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"--grpc-port={port}" in err and "choose another --grpc-port" in err
