"""Config of the testbed: N nodes and a coordinator, each in its own network namespace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt

# Per-node settings are tuples: empty = the default for every node, one value = that value
# for every node, N values = one per node.
PER_NODE = ("rate_mbit", "delay_ms", "memory_gb", "cpus")


@dataclass(frozen=True)
class TestbedConfig(ConfigBase):
    command_help: ClassVar[str] = (
        "start a coordinator and N nodes, each in its own network namespace, with per-link "
        "bandwidth caps (tc tbf) and delays (a delaying TCP proxy); needs root"
    )
    __test__: ClassVar[bool] = False  # not a pytest class, despite its name

    nodes: int = opt(4, help="number of nodes")
    model: str = opt("smollm2-135m", help="model the cluster serves")
    rate_mbit: tuple[float, ...] = opt(
        (), help="each node's link bandwidth, both directions; repeat per node", unit="Mbit/s"
    )
    delay_ms: tuple[float, ...] = opt(
        (), help="one-way delay added to traffic into each node; repeat per node", unit="ms"
    )
    memory_gb: tuple[float, ...] = opt(
        (), help="each node's --memory-gb; repeat per node; default: measured", unit="GiB"
    )
    cpus: tuple[str, ...] = opt(
        (), help="each node's CPU list for taskset (e.g. 0 or 0-1); repeat per node"
    )
    coordinator_rate_mbit: float = opt(
        1000.0, help="the coordinator's link bandwidth", unit="Mbit/s"
    )
    min_stages: int = opt(2, help="the coordinator's --min-stages")
    threads: int = opt(1, help="torch threads per node")
    kv_cache_mb: float = opt(64.0, help="KV cache per node", unit="MiB")
    subnet: str = opt("10.77.0", help="first three octets of the private /24 inside the namespaces")
    prefix: str = opt("", help="name prefix of namespaces; default: pxtb<pid>")
    node_args: tuple[str, ...] = opt((), help="extra argument for every `parallax join`; repeat")
    coordinator_args: tuple[str, ...] = opt((), help="extra argument for `parallax run`; repeat")

    def validate(self) -> None:
        self.require(1 <= self.nodes <= 200, "nodes", "must be 1..200")
        for name in PER_NODE:
            got = len(getattr(self, name))
            self.require(got in (0, 1, self.nodes), name, f"give 0, 1 or {self.nodes} values")
        self.require(all(r > 0 for r in self.rate_mbit), "rate_mbit", "must be positive")
        self.require(all(d >= 0 for d in self.delay_ms), "delay_ms", "must be >= 0")
        self.require(all(m > 0 for m in self.memory_gb), "memory_gb", "must be positive")
        self.require(self.coordinator_rate_mbit > 0, "coordinator_rate_mbit", "must be positive")
        octets = self.subnet.split(".")
        self.require(
            len(octets) == 3
            and all(o.isdigit() and int(o) < 256 for o in octets)
            and octets[0] in ("10", "172", "192"),
            "subnet",
            "expected three octets of a private range, e.g. 10.77.0",
        )
        self.require(len(self.prefix) <= 8, "prefix", "at most 8 characters")

    def per_node(self, name: str, i: int, default):
        values = getattr(self, name)
        if not values:
            return default
        return values[0] if len(values) == 1 else values[i]
