"""The testbed: a coordinator and N nodes, each in its own network namespace.

    coordinator ns  SUBNET.1     eth0 ─┐
    node0 ns        SUBNET.10    eth0 ─┤ veth pairs, each end capped by tbf
    node1 ns        SUBNET.11    eth0 ─┼─ br0 in the bridge namespace
    ...                                 ┘

Each node's gRPC server listens on 127.0.0.1 inside its namespace; a delaying TCP proxy
(`proxy.py`) listens on the namespace's address with the same port, and the node advertises
that address. So every byte into a node (Submit, Forward, PushTokens, and the peers' RTT
probes) crosses its link's tbf caps and its delay. The coordinator's gRPC service sits
behind one too (it binds 127.0.0.1 and advertises SUBNET.1 with --advertise-host), so
traffic into it (Join, Heartbeat, Deliver) crosses its caps and its delay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from deploy.testbed.config import TestbedConfig
from deploy.testbed.cpu import in_cgroup, make_quota, remove_cgroup
from deploy.testbed.netns import InNamespace, Network, TestbedError
from parallax.procs import Child, stop_all

ROOT = Path(__file__).resolve().parents[2]
GRPC_PORT, HTTP_PORT, NODE_PORT = 7000, 8000, 7100
COORDINATOR_OCTET, FIRST_NODE_OCTET = 1, 10
START_TIMEOUT_S = 120
CLIENT_THREADS = 16  # concurrent calls into the coordinator's namespace


class Testbed:
    """`with Testbed(config) as bed:` starts everything; leaving the block (or a failed
    start) stops every process and deletes every namespace, veth and qdisc it made."""

    __test__ = False  # not a pytest class, despite its name

    def __init__(self, config: TestbedConfig, echo: bool = False) -> None:
        self.config = config
        self.prefix = config.prefix or f"pxtb{os.getpid()}"
        self.net = Network(self.prefix, config.subnet)
        self.echo = echo
        self.coordinator: Child | None = None
        self.coordinator_proxy: Child | None = None
        self.nodes: list[Child | None] = []
        self.proxies: list[Child | None] = []
        self.cgroups: list[Path] = []  # per-node CPU quotas
        self._client: InNamespace | None = None
        # The API listens on the coordinator namespace's loopback: only `in_coordinator_ns`
        # (or `ip netns exec NS ...`) reaches it, so it needs no API key.
        self.url = f"http://127.0.0.1:{HTTP_PORT}"
        self.grpc_address = f"{config.subnet}.{COORDINATOR_OCTET}:{GRPC_PORT}"

    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node_address(self, i: int) -> str:
        return f"{self.config.subnet}.{FIRST_NODE_OCTET + i}"

    def start(self) -> None:
        if os.geteuid() != 0:
            raise TestbedError("the testbed makes network namespaces: run it as root")
        cfg = self.config
        self.net.start()
        coord_ns = self.net.add_host("coord", COORDINATOR_OCTET, cfg.coordinator_rate_mbit)
        for i in range(cfg.nodes):
            self.net.add_host(f"n{i}", FIRST_NODE_OCTET + i, cfg.per_node("rate_mbit", i, 1000.0))
        self._client = InNamespace(coord_ns, workers=CLIENT_THREADS)
        host = f"{cfg.subnet}.{COORDINATOR_OCTET}"
        self.coordinator_proxy = self._proxy(coord_ns, host, GRPC_PORT, cfg.coordinator_delay_ms)
        self.coordinator = self._launch(
            coord_ns,
            [sys.executable, "-m", "parallax", "run", "--model", cfg.model,
             "--grpc-host", "127.0.0.1", "--advertise-host", host,
             "--grpc-port", str(GRPC_PORT), "--host", "127.0.0.1",
             "--port", str(HTTP_PORT), "--min-stages", str(cfg.min_stages),
             *cfg.coordinator_args],
        )  # fmt: skip
        self.coordinator.wait_for(r"gateway http listening on", START_TIMEOUT_S)
        for i in range(cfg.nodes):
            self.start_node(i)
            if cfg.ordered_joins:
                self._wait_joined(i + 1)

    def _wait_joined(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self.status()["nodes"]) < count:
            if time.monotonic() > deadline:
                raise TestbedError(f"node n{count - 1} did not join in {START_TIMEOUT_S} s")
            time.sleep(0.2)

    def start_node(self, i: int) -> None:
        cfg, ns = self.config, self.net.hosts[f"n{i}"]
        while len(self.nodes) <= i:
            self.nodes.append(None)
            self.proxies.append(None)
        delay = cfg.per_node("delay_ms", i, 0.0)
        self.proxies[i] = self._proxy(ns, self.node_address(i), NODE_PORT, delay)
        memory = cfg.per_node("memory_gb", i, 0.0)
        cpus = cfg.per_node("cpus", i, "")
        taskset = ["taskset", "-c", cpus] if cpus else []
        share = cfg.per_node("cpu_share", i, 0.0)
        # Numbered: a node started again gets a fresh cgroup.
        cgroup = make_quota(f"{self.prefix}-n{i}-{len(self.cgroups)}", share) if share else None
        if cgroup is not None:
            self.cgroups.append(cgroup)
        self.nodes[i] = self._launch(
            ns,
            [*taskset, sys.executable, "-m", "parallax", "join",
             "--coordinator", self.grpc_address, "--name", f"n{i}",
             "--host", "127.0.0.1", "--port", str(NODE_PORT),
             "--advertise-host", self.node_address(i), "--memory-gb", str(memory),
             "--threads", str(cfg.threads), "--kv-cache-mb", str(cfg.kv_cache_mb),
             *cfg.node_args],
            cgroup,
        )  # fmt: skip

    def _proxy(self, ns: str, host: str, port: int, delay_ms: float) -> Child:
        """A delaying proxy from HOST:PORT to 127.0.0.1:PORT (where the service listens)."""
        proxy = self._launch(
            ns,
            [sys.executable, "-m", "deploy.testbed.proxy", "--listen", f"{host}:{port}",
             "--connect", f"127.0.0.1:{port}", "--delay-ms", str(delay_ms)],
        )  # fmt: skip
        proxy.wait_for(r"proxy listening", 30)
        return proxy

    def _launch(self, ns: str, argv: list[str], cgroup: Path | None = None) -> Child:
        # `ip netns exec` mounts the namespace's own /sys, where no cgroup is to be seen:
        # the process enters its cgroup first. Each step execs: the pid is argv's.
        full = ["ip", "netns", "exec", ns, *argv]
        p = subprocess.Popen(
            full if cgroup is None else in_cgroup(cgroup, full),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)),
            start_new_session=True,
        )
        child = Child(p)
        tag = f"[{ns}] "

        def pump() -> None:
            for line in p.stdout:
                child.lines.append(line.rstrip("\n"))
                if self.echo:
                    print(tag + line, end="", file=sys.stderr, flush=True)

        threading.Thread(target=pump, daemon=True).start()
        return child

    def in_coordinator_ns(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call `fn` on a thread inside the coordinator's namespace (sockets it opens are
        there: the cluster's addresses are reachable only from the namespaces)."""
        if self._client is None:
            raise TestbedError("the testbed is not started")
        return self._client.call(fn, *args, **kwargs)

    def status(self) -> dict:
        return self.in_coordinator_ns(
            lambda: httpx.get(f"{self.url}/cluster/status", timeout=10).json()
        )

    def wait_ready(self, serving: int, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            st = self.status()
            up = [n for n in st["nodes"] if n.get("serving")]
            if len(up) >= serving and st["coverage"]["serving"]:
                return st
            time.sleep(0.5)
        raise TestbedError(f"{serving} nodes not serving after {timeout} s: {st}")

    def kill_node(self, i: int) -> None:
        """SIGKILL node i and its proxy: the host is gone, as far as anyone can tell."""
        for child in (self.nodes[i], self.proxies[i]):
            if child is not None and child.popen.poll() is None:
                os.killpg(child.popen.pid, signal.SIGKILL)
                child.popen.wait()

    def close(self) -> None:
        every = (*self.nodes, *self.proxies, self.coordinator, self.coordinator_proxy)
        children = [c for c in every if c is not None]
        try:
            stop_all(children, timeout=10)
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            self.net.teardown()
            for path in self.cgroups:
                remove_cgroup(path)
            self.cgroups.clear()
