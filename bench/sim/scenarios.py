"""Generated clusters for the benchmark: mixed GPUs, one or more regions, a join order."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from bench.sim.catalog import GIB, load_catalog, node_from_gpu
from coordinator.scheduler.cluster_file import SPEC_FLOPS_EFFICIENCY
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.presets import model_preset
from coordinator.scheduler.types import LinkSpec, NodeCapacity
from parallax.models.spec import ModelSpec

# A volunteer pool: mostly consumer cards, some datacenter GPUs and Macs.
MIX = {
    "RTX4090": 6,
    "RTX3090": 5,
    "RTX5090": 2,
    "RTX3080": 2,
    "A6000": 2,
    "L40S": 2,
    "L4": 2,
    "T4": 2,
    "A100-40": 2,
    "A100-80": 2,
    "H100": 1,
    "M2-Ultra": 1,
    "M3-Max": 1,
    "M4-Max": 1,
}
REGION_NAMES = ("us", "eu", "asia")
# The benchmark workload: uniform prompt and output lengths (prefill ≈ 3x the output),
# short enough that a simulated run stays within a minute in Python.
PROMPT = (32, 160)
OUTPUT = (8, 40)


@dataclass(frozen=True)
class Scenario:
    name: str
    model: ModelSpec
    nodes: tuple[NodeCapacity, ...]  # in join order
    options: AllocateOptions
    gpus: dict[str, str]


def make_scenario(
    name: str, size: int, regions: int, seed: int, model: str = "llama3-70b", context: int = 2048
) -> Scenario:
    rng = random.Random(seed)
    cat = load_catalog()
    names = list(MIX)
    weights = [MIX[n] for n in names]
    nodes, gpus = [], {}
    for i in range(size):
        g = rng.choices(names, weights)[0]
        region = REGION_NAMES[i % regions]
        nid = f"{region}-{i:04d}"
        nodes.append(node_from_gpu(nid, cat[g], region))
        gpus[nid] = g
    rng.shuffle(nodes)  # join order
    links = {
        (a, b): LinkSpec(rtt_ms=90.0 + 60.0 * abs(i - j), gbps=1.0)
        for i, a in enumerate(REGION_NAMES[:regions])
        for j, b in enumerate(REGION_NAMES[:regions])
        if i < j
    }
    opts = AllocateOptions(
        dtype_bytes=2,
        context_tokens=context,
        links=links,
        intra_link=LinkSpec(1.0, 10.0),
        mean_prompt_tokens=sum(PROMPT) // 2,  # the benchmark workload's means
        mean_output_tokens=sum(OUTPUT) // 2,
    )
    return Scenario(name, model_preset(model), tuple(nodes), opts, gpus)


def with_solver(s: Scenario, solver: str, time_limit_s: float) -> AllocateOptions:
    return replace(s.options, solver=solver, time_limit_s=time_limit_s)


def as_cluster_json(s: Scenario) -> dict:
    """The scenario in `parallax plan`'s cluster file format."""
    return {
        "model": {
            "num_layers": s.model.num_layers,
            "hidden_size": s.model.hidden_size,
            "intermediate_size": s.model.intermediate_size,
            "num_attention_heads": s.model.num_attention_heads,
            "num_key_value_heads": s.model.num_key_value_heads,
            "head_dim": s.model.head_dim,
            "vocab_size": s.model.vocab_size,
            "tie_word_embeddings": s.model.tie_word_embeddings,
            "dtype_bytes": s.options.dtype_bytes,
        },
        "context_tokens": s.options.context_tokens,
        "workload": {
            "prompt_tokens": s.options.mean_prompt_tokens,
            "output_tokens": s.options.mean_output_tokens,
        },
        "nodes": [
            {
                "id": n.node_id,
                "gpu": s.gpus[n.node_id],
                "memory_gb": round(n.memory_bytes / GIB, 3),
                "mem_bw_gbps": round(n.mem_bandwidth / 1e9, 3),
                # The file's tflops is a spec peak; the parser takes 60% of it.
                "tflops": round(n.flops / 1e12 / SPEC_FLOPS_EFFICIENCY, 3),
                "region": n.region,
            }
            for n in s.nodes
        ],
        "regions": {
            "intra_rtt_ms": s.options.intra_link.rtt_ms,
            "intra_gbps": s.options.intra_link.gbps,
            "inter": {
                f"{a}-{b}": {"rtt_ms": x.rtt_ms, "gbps": x.gbps}
                for (a, b), x in s.options.links.items()
            },
        },
    }
