"""Config of `parallax bench KIND`. Benchmarks print figures and write JSON; they are not tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt
from parallax.config.generate import DEFAULT_MODEL


@dataclass(frozen=True)
class BenchConfig(ConfigBase):
    command_help: ClassVar[str] = "run a benchmark: engine, hop, pipeline or schedule"

    kind: str = opt(
        help="which benchmark", choices=("engine", "hop", "pipeline", "schedule"), positional=True
    )
    model: str = opt(DEFAULT_MODEL, help="model for engine/pipeline benchmarks")
    threads: int = opt(2, help="torch CPU threads for engine benchmarks")
    dtype: str = opt(
        "float32",
        help="our engine's compute dtype in the engine benchmark (the reference stays float32)",
        choices=("float32", "bfloat16", "float16"),
    )
    output: str = opt("", help="JSON result path; default bench-output/KIND.json")
    quick: bool = opt(False, help="smaller, faster run (smoke check)")
    seed: int = opt(0, help="random seed of generated workloads")
