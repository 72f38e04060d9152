"""The testbed's network: namespaces joined through a bridge, tbf caps that really cap, a
proxy that really delays, and a teardown that leaves nothing behind. Needs root."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.testbed.config import TestbedConfig
from deploy.testbed.netns import InNamespace, Network, sh
from parallax.errors import ConfigError
from tests.support.deploy import leftovers

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def listen(port: int) -> socket.socket:
    s = socket.create_server(("0.0.0.0", port))
    s.settimeout(20)
    return s


def receive_all(server: socket.socket) -> int:
    conn, _ = server.accept()
    got = 0
    with conn:
        while data := conn.recv(1 << 16):
            got += len(data)
    return got


def send(address: tuple[str, int], payload: bytes) -> float:
    t0 = time.monotonic()
    with socket.create_connection(address, timeout=20) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)  # the peer closes after reading everything
    return time.monotonic() - t0


def test_links_are_capped_and_delayed_and_teardown_leaves_nothing() -> None:
    prefix = f"pxtt{os.getpid() % 10000}"
    net = Network(prefix, "10.78.0")
    proxy = None
    try:
        net.start()
        a = net.add_host("a", 1, 1000.0)
        b = net.add_host("b", 2, 8.0)  # 8 Mbit/s: 1 MB takes >= 1 s
        qdiscs = sh("tc", "-n", b, "qdisc", "show", "dev", "eth0")
        assert "tbf" in qdiscs and "8Mbit" in qdiscs
        in_a, in_b = InNamespace(a), InNamespace(b)
        try:
            server = in_b.call(listen, 9000)
            fut = in_b._pool.submit(receive_all, server)
            took = in_a.call(send, ("10.78.0.2", 9000), b"x" * 1_000_000)
            assert fut.result(30) == 1_000_000
            assert 0.9 < took < 5, f"1 MB over an 8 Mbit/s link took {took:.2f} s"
            # Delay: a proxy in b adds 100 ms each way in front of a server on b's loopback.
            proxy = subprocess.Popen(
                ["ip", "netns", "exec", b, sys.executable, "-m", "deploy.testbed.proxy",
                 "--listen", "10.78.0.2:9100", "--connect", "127.0.0.1:9101", "--delay-ms", "100"],
                cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )  # fmt: skip
            assert "proxy listening" in proxy.stdout.readline()
            server = in_b.call(lambda: socket.create_server(("127.0.0.1", 9101)))
            fut = in_b._pool.submit(receive_all, server)
            took = in_a.call(send, ("10.78.0.2", 9100), b"ping")
            assert fut.result(30) == 4
            # Connect (no delay: the proxy accepts), data in (100 ms), close back (100 ms).
            assert 0.2 <= took < 2, f"a round trip through a 100 ms proxy took {took:.3f} s"
        finally:
            in_a.close()
            in_b.close()
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        net.teardown()
    assert leftovers(prefix) == []


def test_a_half_made_network_is_torn_down() -> None:
    prefix = f"pxth{os.getpid() % 10000}"
    net = Network(prefix, "10.79.0")
    net.start()
    net.add_host("a", 1, 100.0)
    with pytest.raises(Exception, match="failed"):
        net.add_host("b", 1, 0.0)  # a rate of 0 is refused by tc, half-way through
    net.teardown()
    assert leftovers(prefix) == []


@pytest.mark.parametrize(
    ("over", "flag"),
    [
        ({"nodes": 3, "memory_gb": (1.0, 2.0)}, "--memory-gb"),
        ({"rate_mbit": (0.0,)}, "--rate-mbit"),
        ({"subnet": "8.8.8"}, "--subnet"),
        ({"delay_ms": (-1.0,)}, "--delay-ms"),
    ],
)
def test_bad_config_names_the_flag(over: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        TestbedConfig(**over)


def test_per_node_values_broadcast_or_index() -> None:
    cfg = TestbedConfig(nodes=3, rate_mbit=(5.0,), delay_ms=(1.0, 2.0, 3.0))
    assert [cfg.per_node("rate_mbit", i, 0) for i in range(3)] == [5.0, 5.0, 5.0]
    assert [cfg.per_node("delay_ms", i, 0) for i in range(3)] == [1.0, 2.0, 3.0]
    assert cfg.per_node("cpus", 1, "all") == "all"
