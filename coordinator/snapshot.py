"""The registry as JSON-ready data: what `GET /cluster/status` and the dashboard show."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from coordinator.registry_types import Decision, NodeRecord
from coordinator.scheduler import Allocation
from parallax.models.footprint import Footprint
from parallax.types import LayerRange


def coverage_gaps(num_layers: int, ranges: Iterable[LayerRange | None]) -> list[list[int]]:
    """Half-open `[start, end)` spans of layers that no range holds."""
    held = [0] * (num_layers + 1)
    for r in ranges:
        if r is not None:
            held[max(0, r.start)] += 1
            held[min(num_layers, r.end)] -= 1
    gaps: list[list[int]] = []
    depth = 0
    for layer in range(num_layers):
        depth += held[layer]
        if depth == 0:
            if gaps and gaps[-1][1] == layer:
                gaps[-1][1] = layer + 1
            else:
                gaps.append([layer, layer + 1])
    return gaps


def _range(r: LayerRange | None) -> list[int] | None:
    return None if r is None else [r.start, r.end]


def _format_json(fp: Footprint | None) -> dict[str, Any] | None:
    if fp is None:
        return None
    return {
        "label": fp.label,
        "dtype": fp.dtype,
        "weights": fp.weights,
        "layer_bytes": fp.weight_bytes,
        "kv_bytes_per_token": fp.kv_bytes_per_token,
        "embedding_bytes": fp.embedding_bytes,
        "head_bytes": fp.head_bytes,
    }


def node_json(rec: NodeRecord, now: float) -> dict[str, Any]:
    hw, rep = rec.hardware, rec.report
    return {
        "node_id": rec.node_id,
        "name": rec.name,
        "address": rec.address,
        "metrics_address": rec.metrics_address,
        "state": str(rec.state),
        "serving": rec.serving,
        "quarantined": rec.quarantined,  # why spot checks took it off ("" = not)
        # Measured / claimed per-layer step time, when far above 1 (0 = not flagged).
        "slower_than_claimed": round(rec.slower_than_claimed, 1),
        "hardware": {
            "device": hw.device,
            "device_name": hw.device_name,
            "flops": hw.flops,
            "mem_bandwidth": hw.mem_bandwidth,
            "memory_bytes": hw.memory_bytes,
            "region": hw.region,
            # How it holds the model, planned with (None: an older node, the default).
            "format": _format_json(hw.footprint),
        },
        "assignment": {
            "range": _range(rec.assignment.range),
            "standby": rec.assignment.standby,
            "epoch": rec.assignment.epoch,
        },
        "loaded": _range(rep.loaded),
        "joined_age_s": round(now - rec.joined_at, 3),
        "heartbeat_age_s": round(now - rec.last_heartbeat, 3),
        "status": {
            "running_requests": rep.running_requests,
            "kv_free_tokens": rep.kv_free_tokens,
            "kv_total_tokens": rep.kv_total_tokens,
            "layer_latency_ms": rep.layer_latency_ms,
            "tokens_per_s": rep.tokens_per_s,
        },
        "rtt_ms": dict(rec.rtt_ms),
    }


def prometheus_targets(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery (`http_sd_configs`): one target group per live
    node that serves `/metrics`, labelled with its id, name and model."""
    dead = ("dead", "leaving")
    return [
        {
            "targets": [n["metrics_address"]],
            "labels": {
                "parallax_node_id": n["node_id"],
                "parallax_node_name": n["name"],
                "parallax_model": snapshot["model"]["name"],
            },
        }
        for n in snapshot["nodes"]
        if n["metrics_address"] and n["state"] not in dead
    ]


def build_snapshot(
    *,
    model_name: str,
    num_layers: int,
    nodes: Sequence[NodeRecord],
    allocation: Allocation,
    decisions: Sequence[Decision],
    now: float,
) -> dict[str, Any]:
    alive = [r for r in nodes if r.alive]
    serving = [r for r in nodes if r.serving]
    assigned_gaps = coverage_gaps(num_layers, (r.assignment.range for r in alive))
    serving_gaps = coverage_gaps(num_layers, (r.assignment.range for r in serving))
    return {
        "time": now,
        "model": {"name": model_name, "num_layers": num_layers},
        "nodes": [node_json(r, now) for r in sorted(nodes, key=lambda r: r.node_id)],
        "allocation": {
            "assignments": {n: _range(r) for n, r in sorted(allocation.assignments.items())},
            "solver": allocation.solver,
            "reason": allocation.reason,
            "throughput_tok_s": allocation.throughput_tok_s,
            "latency_ms_per_token": allocation.latency_ms_per_token,
        },
        "coverage": {
            # Layers no live node is assigned (more nodes needed) ...
            "gaps": assigned_gaps,
            # ... and layers no node serves yet (assigned but still loading, say).
            "serving_gaps": serving_gaps,
            "serving": not serving_gaps,
        },
        "decisions": [
            {"time": d.time, "kind": d.kind, "message": d.message} for d in reversed(decisions)
        ],
    }
