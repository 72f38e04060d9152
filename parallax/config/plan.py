"""Config of `parallax plan CLUSTER.json`: allocate layers for a described cluster, offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt


@dataclass(frozen=True)
class PlanConfig(ConfigBase):
    command_help: ClassVar[str] = (
        "plan a layer allocation for a cluster file: who holds which layers, throughput, latency"
    )

    cluster: str = opt(help="cluster JSON file (model, nodes, regions)", positional=True)
    solver: str = opt("auto", help="allocation solver", choices=("auto", "exact", "fast", "simple"))
    time_limit_s: float = opt(10.0, help="wall-clock limit of the exact solver", unit="s")
    json: bool = opt(False, help="print one JSON object instead of a table")
    memory_reserve: float = opt(
        0.1, help="share of each node's memory kept back for activations and the runtime"
    )
    max_running: int = opt(
        256, help="sequences a node's engine keeps at once (its --max-running)", unit="sequences"
    )

    def validate(self) -> None:
        self.require(self.time_limit_s > 0, "time_limit_s", "must be positive")
        self.require(0 <= self.memory_reserve < 1, "memory_reserve", "must be in [0, 1)")
        self.require(self.max_running >= 1, "max_running", "must be >= 1")
