"""Start a real cluster for tests: `parallax run` plus N `parallax join` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import httpx

from parallax.procs import Child, spawn

# The harness runs the same child processes as `parallax demo` does.
Proc = Child
start = spawn


@dataclass
class Cluster:
    model: str
    nodes: int = 3
    min_stages: int = 3
    node_args: tuple[str, ...] = ()
    coordinator_args: tuple[str, ...] = ()
    coordinator: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    grpc_address: str = ""
    http_url: str = ""

    def __enter__(self) -> Cluster:
        try:
            return self._start()
        except BaseException:
            self.__exit__(None, None, None)  # never leak processes when start-up fails
            raise

    def _start(self) -> Cluster:
        self.coordinator = start(
            [
                "run",
                "--model",
                self.model,
                "--grpc-port",
                "0",
                "--port",
                "0",
                "--min-stages",
                str(self.min_stages),
                *self.coordinator_args,
            ]
        )
        m = self.coordinator.wait_for(r"coordinator grpc listening on (\S+)", 60)
        self.grpc_address = m.group(1)
        self.http_url = self.coordinator.wait_for(r"gateway http listening on (\S+)", 30).group(1)
        for i in range(self.nodes):
            self.add_node(f"node{i}")
        if self.nodes:
            self.wait_ready(self.nodes)
        return self

    def add_node(self, name: str, *extra: str) -> Proc:
        p = start(
            [
                "join",
                "--coordinator",
                self.grpc_address,
                "--name",
                name,
                "--threads",
                "1",
                "--kv-cache-mb",
                "64",
                *self.node_args,
                *extra,
            ]
        )
        self.workers.append(p)
        return p

    def status(self) -> dict:
        return httpx.get(f"{self.http_url}/cluster/status", timeout=5).json()

    def wait_ready(self, n: int, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            serving = [x for x in st["nodes"] if x.get("serving")]
            if len(serving) >= n and st["coverage"]["serving"]:
                return st
            time.sleep(0.3)
        raise TimeoutError(f"cluster not ready: {self.status()}")

    def __exit__(self, *exc) -> None:
        for p in [*self.workers, self.coordinator]:
            if p and p.popen.poll() is None:
                os.killpg(p.popen.pid, signal.SIGTERM)
        for p in [*self.workers, self.coordinator]:
            if p:
                try:
                    p.popen.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.popen.pid, signal.SIGKILL)


def routed_hops(cluster: Cluster) -> list[str]:
    """Node ids of the most recently routed request, from the coordinator's log."""
    for line in reversed(cluster.coordinator.lines):
        if '"request routed"' in line:
            entry = json.loads(line)
            # A spot check's chains are logged the same way: skip them.
            if entry.get("client") != "spot-check":
                return entry["route"]
    raise AssertionError("no request was routed")
