"""Spec-sheet numbers of common accelerators, for the simulator and cluster generator only.

Real nodes report measured figures; these turn a GPU name into a `NodeCapacity` with
achievable (not peak) rates so that simulated clusters look like real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from coordinator.scheduler.types import NodeCapacity
from parallax.errors import InvalidArgument
from parallax.types import NodeId

# Fraction of peak that inference kernels reach; typical of vLLM/llama.cpp measurements.
BANDWIDTH_EFFICIENCY = 0.8
FLOPS_EFFICIENCY = 0.6
# Vendors' "80 GB" cards hold 80 GiB; the runtime's share is kept back by the planner
# (its memory reserve) and by the simulator (its own margin), not here.
GIB = float(1 << 30)


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    mem_bw_gbps: float  # GB/s
    dense_tflops: float


def load_catalog() -> dict[str, Gpu]:
    raw = json.loads(resources.files(__package__).joinpath("catalog.json").read_text())
    return {name: Gpu(name=name, **spec) for name, spec in raw["gpus"].items()}


def gpu(name: str, catalog: dict[str, Gpu]) -> Gpu:
    if name not in catalog:
        raise InvalidArgument(f"unknown GPU {name!r}; known: {', '.join(sorted(catalog))}")
    return catalog[name]


def node_from_gpu(node_id: str, g: Gpu, region: str = "default") -> NodeCapacity:
    return NodeCapacity(
        node_id=NodeId(node_id),
        memory_bytes=g.memory_gb * GIB,
        flops=g.dense_tflops * 1e12 * FLOPS_EFFICIENCY,
        mem_bandwidth=g.mem_bw_gbps * 1e9 * BANDWIDTH_EFFICIENCY,
        region=region,
    )
