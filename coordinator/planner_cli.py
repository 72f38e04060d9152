"""`parallax plan CLUSTER.json`: the scheduler's allocation for a described cluster."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from coordinator.scheduler import Allocation, allocate
from coordinator.scheduler.cluster_file import Cluster, parse_cluster
from coordinator.scheduler.presets import model_preset, preset_names
from parallax.cli import Command
from parallax.config.plan import PlanConfig
from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec


def resolve(name: str) -> ModelSpec:
    if name in preset_names():
        return model_preset(name)
    from parallax.models.registry import resolve_model

    return resolve_model(name).spec


def load_cluster(path: str) -> Cluster:
    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"cluster file {path!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{path} is not valid JSON: {e}") from e
    return parse_cluster(data, resolve)


def as_json(alloc: Allocation) -> dict:
    return {
        "assignments": {
            n: [r.start, r.end] if r is not None else None for n, r in alloc.assignments.items()
        },
        "throughput_tok_s": round(alloc.throughput_tok_s, 3),
        "latency_ms_per_token": round(alloc.latency_ms_per_token, 3),
        "solve_s": round(alloc.solve_s, 4),
        "solver": alloc.solver,
        "reason": alloc.reason,
    }


def table(cluster: Cluster, alloc: Allocation) -> str:
    by_id = {n.node_id: n for n in cluster.nodes}
    rows = sorted(alloc.assignments.items(), key=lambda kv: (kv[1] is None, kv[1] or (0, 0), kv[0]))
    lines = [f"{'node':<16} {'gpu':<10} {'region':<10} {'GiB':>7}  layers"]
    for nid, r in rows:
        n = by_id[nid]
        held = f"{r.start}–{r.end - 1} ({len(r)})" if r is not None else "standby"
        gpu = cluster.gpus.get(nid, "")
        lines.append(f"{nid:<16} {gpu:<10} {n.region:<10} {n.memory_bytes / 2**30:>7.1f}  {held}")
    lines += [
        "",
        f"throughput   {alloc.throughput_tok_s:,.0f} tok/s (expected)",
        f"latency      {alloc.latency_ms_per_token:.1f} ms/token",
        f"solver       {alloc.solver}, {alloc.solve_s:.3f} s",
        f"why          {alloc.reason}",
    ]
    return "\n".join(lines)


def run_plan(config: PlanConfig) -> int:
    cluster = load_cluster(config.cluster)
    opts = replace(
        cluster.options,
        solver=config.solver,
        time_limit_s=config.time_limit_s,
        memory_reserve=config.memory_reserve,
        max_running_per_node=config.max_running,
    )
    alloc = allocate(cluster.nodes, cluster.model, opts)
    print(json.dumps(as_json(alloc), indent=2) if config.json else table(cluster, alloc))
    return 0


plan_command = Command("plan", PlanConfig, run_plan, PlanConfig.command_help)
