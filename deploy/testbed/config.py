"""Config of the testbed: N nodes and a coordinator, each in its own network namespace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt

# Per-node settings are tuples: empty = the default for every node, one value = that value
# for every node, N values = one per node.
PER_NODE = ("rate_mbit", "delay_ms", "memory_gb", "cpus", "cpu_share")


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
    cpu_share: tuple[float, ...] = opt(
        (),
        help="each node's CPU quota (a cpu cgroup), e.g. 0.5; repeat per node; default none",
        unit="cores",
    )
    coordinator_rate_mbit: float = opt(
        1000.0, help="the coordinator's link bandwidth", unit="Mbit/s"
    )
    coordinator_delay_ms: float = opt(
        0.0,
        help="one-way delay added to traffic into the coordinator's gRPC (joins, "
        "heartbeats, deliveries)",
        unit="ms",
    )
    min_stages: int = opt(2, help="the coordinator's --min-stages")
    ordered_joins: bool = opt(
        False,
        help="start each node once the previous one joined: a fixed join order (the "
        "baseline allocation policies place nodes by it)",
    )
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
        self.require(all(c > 0 for c in self.cpu_share), "cpu_share", "must be positive")
        self.require(self.coordinator_rate_mbit > 0, "coordinator_rate_mbit", "must be positive")
        self.require(self.coordinator_delay_ms >= 0, "coordinator_delay_ms", "must be >= 0")
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


@dataclass(frozen=True)
class ExperimentConfig(TestbedConfig):
    """The testbed benchmark: one fresh testbed per (round, policy), the same nodes and
    load each time. Its defaults are the bed recorded in docs/BENCHMARKS.md."""

    command_help: ClassVar[str] = (
        "benchmark allocation policies on the testbed: per round and policy a fresh "
        "testbed, `parallax bench serve` against its gateway; prints figures, writes JSON "
        "and a PNG; needs root"
    )

    # The bed: unequal memory (none holds SmolLM2 alone), links, delays and CPU quotas.
    rate_mbit: tuple[float, ...] = opt(
        (200.0, 50.0, 100.0, 20.0), help="each node's link bandwidth; repeat", unit="Mbit/s"
    )
    delay_ms: tuple[float, ...] = opt(
        (2.0, 15.0, 5.0, 25.0), help="one-way delay into each node; repeat", unit="ms"
    )
    memory_gb: tuple[float, ...] = opt(
        (0.5, 0.3, 0.4, 0.25), help="each node's --memory-gb; repeat", unit="GiB"
    )
    cpus: tuple[str, ...] = opt((), help="each node's taskset CPU list; default any")
    cpu_share: tuple[float, ...] = opt(
        (0.6, 0.3, 0.45, 0.25), help="each node's CPU quota; repeat", unit="cores"
    )
    coordinator_delay_ms: float = opt(
        10.0, help="one-way delay into the coordinator's gRPC", unit="ms"
    )
    min_stages: int = opt(1, help="the coordinator's --min-stages (ours; baselines ignore it)")
    max_model_len: int = opt(
        1024, help="the coordinator's --max-model-len: the KV each node reserves", unit="tokens"
    )
    ordered_joins: bool = opt(True, help="start each node once the previous one joined")

    policies: tuple[str, ...] = opt(
        ("ours", "parallax", "petals"), help="allocation policies, interleaved each round"
    )
    rounds: int = opt(3, help="rounds; each runs every policy once, in order")
    num_prompts: int = opt(24, help="requests per load run")
    input_len: int = opt(64, help="prompt length (random prompts)", unit="tokens")
    output_len: int = opt(16, help="tokens generated per request (ignore_eos)", unit="tokens")
    request_rates: tuple[float, ...] = opt(
        (2.0, float("inf")),
        help="load runs per testbed, one per rate; inf = all at once",
        unit="requests/s",
    )
    warmup: int = opt(2, help="requests sent (and not counted) before the load runs")
    output: str = opt("bench-output/testbed.json", help="JSON result path")
    plot: str = opt("bench-output/testbed.png", help="PNG plot path")

    def validate(self) -> None:
        super().validate()
        bad = [p for p in self.policies if p not in ("ours", "parallax", "petals")]
        self.require(bool(self.policies) and not bad, "policies", "each ours, parallax or petals")
        self.require(self.rounds >= 1, "rounds", "must be >= 1")
        self.require(self.num_prompts >= 1, "num_prompts", "must be >= 1")
        self.require(self.input_len >= 1 and self.output_len >= 2, "output_len", "need >= 2")
        self.require(
            self.max_model_len >= self.input_len + self.output_len + 64,
            "max_model_len",
            "must hold a prompt, its output and the chat template",
        )
        self.require(
            bool(self.request_rates) and all(r > 0 for r in self.request_rates),
            "request_rates",
            "each > 0 (inf = all at once)",
        )
        self.require(self.warmup >= 0, "warmup", "must be >= 0")
