"""Network namespaces, veth pairs, a bridge and tbf qdiscs, and their teardown.

Every host is a namespace with one interface, `eth0`, whose peer sits in a bridge
namespace on `br0`. Links are created straight inside their namespaces (never in the
root namespace), so deleting the namespaces deletes every veth and qdisc with them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from parallax.errors import ParallaxError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class TestbedError(ParallaxError):
    """A namespace, link or qdisc could not be made (run as root, with iproute2)."""

    __test__ = False


def sh(*argv: str, check: bool = True) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise TestbedError(
            f"`{' '.join(argv)}` failed: {out.stderr.strip()} (the testbed needs root and iproute2)"
        )
    return out.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def tbf(ns: str, dev: str, rate_mbit: float) -> None:
    """Cap `dev`'s egress at `rate_mbit`. The bucket holds at least 4 ms of traffic (a 250 Hz
    timer's tick) and a jumbo segment; the queue holds 50 ms, past which packets drop."""
    burst = max(64 * 1024, int(rate_mbit * 1e6 / 8 / 250))
    sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
       "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "50ms")  # fmt: skip


class Network:
    """A bridge namespace and host namespaces on it. Undo happens in reverse, always."""

    def __init__(self, prefix: str, subnet: str) -> None:
        self.prefix, self.subnet = prefix, subnet
        self.bridge = f"{prefix}-br"
        self.hosts: dict[str, str] = {}  # host name -> its namespace
        self._made: list[str] = []  # namespaces, in creation order

    def _add_ns(self, ns: str) -> None:
        if ns in namespaces():
            raise TestbedError(f"namespace {ns} exists: remove it (python -m deploy.testbed clean)")
        sh("ip", "netns", "add", ns)
        self._made.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def start(self) -> None:
        self._add_ns(self.bridge)
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")

    def add_host(self, name: str, octet: int, rate_mbit: float) -> str:
        """A namespace with eth0 = SUBNET.OCTET/24, capped at `rate_mbit` both ways."""
        ns = f"{self.prefix}-{name}"
        self._add_ns(ns)
        port = f"v{name}"[:15]
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
           "peer", "name", port, "netns", self.bridge)  # fmt: skip
        sh("ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.subnet}.{octet}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        tbf(ns, "eth0", rate_mbit)  # host -> bridge (upload)
        tbf(self.bridge, port, rate_mbit)  # bridge -> host (download)
        self.hosts[name] = ns
        return ns

    def teardown(self) -> None:
        """Kill what still runs in our namespaces, then delete them (their veths and
        qdiscs go with them). Safe to call twice and after a half-made start."""
        for ns in reversed(self._made):
            remove_namespace(ns)
        self._made.clear()


def remove_namespace(ns: str) -> None:
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    sh("ip", "netns", "del", ns, check=False)


def enter(ns: str) -> None:
    """Move the calling thread (only it) into namespace `ns`."""
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise TestbedError(f"setns({ns}) failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


class InNamespace:
    """Runs calls on threads that live in a namespace: sockets they open are there."""

    def __init__(self, ns: str, workers: int = 1) -> None:
        # The initializer runs on every worker thread: each enters the namespace.
        self._pool = ThreadPoolExecutor(
            workers, thread_name_prefix=ns, initializer=enter, initargs=(ns,)
        )

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        fut: Future = self._pool.submit(fn, *args, **kwargs)
        return fut.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
