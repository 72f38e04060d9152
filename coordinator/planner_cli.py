"""`parallax plan CLUSTER.json`: the scheduler's allocation for a described cluster."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from coordinator.scheduler import Allocation, allocate
from coordinator.scheduler.cluster_file import GIB, Cluster, parse_cluster
from coordinator.scheduler.explain import NodeExplain, explain
from coordinator.scheduler.perf import PerfModel
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


def formats(cluster: Cluster) -> dict[str, str]:
    """Each node's weight format as planned: its own, or the model's dtype_bytes."""
    default = f"{cluster.options.dtype_bytes} B/param"
    return {n.node_id: n.footprint.label if n.footprint else default for n in cluster.nodes}


def as_json(
    alloc: Allocation, why: list[NodeExplain] | None = None, fmt: dict[str, str] | None = None
) -> dict:
    out = {
        "assignments": {
            n: [r.start, r.end] if r is not None else None for n, r in alloc.assignments.items()
        },
        "throughput_tok_s": round(alloc.throughput_tok_s, 3),
        "latency_ms_per_token": round(alloc.latency_ms_per_token, 3),
        "solve_s": round(alloc.solve_s, 4),
        "solver": alloc.solver,
        "reason": alloc.reason,
    }
    if why is not None:
        out["nodes"] = {e.node_id: e.as_json() for e in why}
        for nid, label in (fmt or {}).items():
            out["nodes"][nid]["format"] = label
    return out


def table(cluster: Cluster, alloc: Allocation, why: list[NodeExplain]) -> str:
    by_id, fmt = {e.node_id: e for e in why}, formats(cluster)
    rows = sorted(alloc.assignments.items(), key=lambda kv: (kv[1] is None, kv[1] or (0, 0), kv[0]))
    head = (
        f"{'node':<16} {'gpu':<12} {'region':<8} {'GiB':>6} {'format':<12} {'layers':<13} "
        f"{'weights':>7} {'KV':>6} {'reserve':>7} {'batch':>5}"
    )
    lines = [head, "-" * len(head)]
    for nid, r in rows:
        e = by_id[nid]
        held = f"{r.start}-{r.end - 1} ({len(r)})" if r is not None else "standby"
        gpu = cluster.gpus.get(nid, "")
        lines.append(
            f"{nid:<16} {gpu:<12} {cluster_region(cluster, nid):<8} "
            f"{e.memory_bytes / GIB:>6.1f} {fmt[nid]:<12} {held:<13} {e.weights_bytes / GIB:>7.2f} "
            f"{e.kv_bytes / GIB:>6.2f} {e.reserve_bytes / GIB:>7.2f} {e.batch:>5.0f}"
        )
        lines.append(f"{'':<16} why: {e.why}")
    lines += [
        "",
        "memory in GiB: weights (layers, embedding, head) + KV room + reserve = the node's",
        'format: how the node holds the weights (a node spec\'s "weights"/"dtype")',
        "batch: sequences a node decodes per step when busy (its KV holds about this many",
        "times the chain's stages in flight)",
        "",
        f"throughput   {alloc.throughput_tok_s:,.0f} tok/s (expected)",
        f"latency      {alloc.latency_ms_per_token:.1f} ms/token",
        f"solver       {alloc.solver}, {alloc.solve_s:.3f} s",
        f"why          {alloc.reason}",
    ]
    return "\n".join(lines)


def cluster_region(cluster: Cluster, nid: str) -> str:
    return next(n.region for n in cluster.nodes if n.node_id == nid)


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
    why = explain(alloc.assignments, cluster.nodes, PerfModel.of(cluster.model, opts))
    if config.json:
        print(json.dumps(as_json(alloc, why, formats(cluster)), indent=2))
    else:
        print(table(cluster, alloc, why))
    return 0


plan_command = Command("plan", PlanConfig, run_plan, PlanConfig.command_help)
