"""The cluster description shared by `parallax plan`, the simulator and the benchmark.

A pure function over an already-parsed JSON dict; reading the file is the caller's job.

    {"model": {num_layers, hidden_size, intermediate_size, num_attention_heads,
               num_key_value_heads, head_dim?, vocab_size, tie_word_embeddings?,
               dtype_bytes?} | "model name",
     "context_tokens": 2048,
     "workload"?: {"prompt_tokens", "output_tokens"},
     "nodes": [{"id", "memory_gb", "mem_bw_gbps", "tflops" (spec-sheet peak), "region"?,
                "gpu"?, "weights"?: fp32|bf16|fp16|q8|q4, "dtype"?: float32|bfloat16|float16}],
     "regions": {"intra_rtt_ms", "intra_gbps", "inter": {"A-B": {"rtt_ms", "gbps"}},
                 "per_region": {"A": {"intra_rtt_ms", "intra_gbps"}}}}

`memory_gb` is GiB (2^30 bytes). A node with "weights" or "dtype" is sized in that
format (parallax/models/footprint.py; q8/q4 compute in bfloat16 unless "dtype" says
otherwise, floats follow their weights); others in the model's "dtype_bytes". Without a "workload" the plan is for decode-heavy
load with sequences half full on average (mean context = context_tokens / 2, no
prefill share); with one, the mean context is the prompt plus half the output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.types import LinkSpec, NodeCapacity
from parallax.errors import InvalidArgument
from parallax.models.footprint import DTYPE_BYTES, FLOAT_WEIGHTS, Footprint, footprint
from parallax.models.spec import ModelSpec
from parallax.types import NodeId

GIB = float(1 << 30)
# A file's "tflops" is the spec sheet's dense peak; decode matmuls reach about 60% of
# it (MFU), while live nodes report what they measured. Bandwidth is taken as given.
SPEC_FLOPS_EFFICIENCY = 0.6


@dataclass(frozen=True)
class Cluster:
    model: ModelSpec
    nodes: tuple[NodeCapacity, ...]
    options: AllocateOptions  # dtype, context and links from the file
    gpus: Mapping[NodeId, str]  # informational


def _num(
    d: Mapping[str, Any], key: str, where: str, default: float | None = None, positive: bool = True
) -> float:
    if key not in d:
        if default is not None:
            return default
        raise InvalidArgument(f"{where}.{key} is missing; it must be a number")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0) or v < 0:
        raise InvalidArgument(
            f"{where}.{key}={v!r}: expected a {'positive ' if positive else ''}number"
        )
    return float(v)


def _int(d: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    v = _num(d, key, where, None if default is None else float(default))
    if v != int(v):
        raise InvalidArgument(f"{where}.{key}={d[key]!r}: expected an integer")
    return int(v)


def _dict(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise InvalidArgument(f"{where} must be an object, got {type(v).__name__}")
    return v


def parse_model(raw: Mapping[str, Any]) -> tuple[ModelSpec, int]:
    w = "model"
    heads = _int(raw, "num_attention_heads", w)
    hidden = _int(raw, "hidden_size", w)
    try:
        spec = ModelSpec(
            family="llama",
            num_layers=_int(raw, "num_layers", w),
            hidden_size=hidden,
            intermediate_size=_int(raw, "intermediate_size", w),
            num_attention_heads=heads,
            num_key_value_heads=_int(raw, "num_key_value_heads", w, heads),
            head_dim=_int(raw, "head_dim", w, max(1, hidden // heads)),
            vocab_size=_int(raw, "vocab_size", w),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )
    except ValueError as e:
        raise InvalidArgument(f"model: {e}") from e
    dtype = _int(raw, "dtype_bytes", w, 2)
    if dtype not in (1, 2, 4):
        raise InvalidArgument(f"model.dtype_bytes={dtype}: expected 1, 2 or 4")
    return spec, dtype


def node_format(d: Mapping[str, Any], where: str, model: ModelSpec) -> Footprint | None:
    """A node's own bytes from its "weights" and "dtype" (None: neither given)."""
    weights, dtype = d.get("weights"), d.get("dtype")
    if weights is None and dtype is None:
        return None
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise InvalidArgument(f"{where}.dtype={dtype!r}: expected one of {', '.join(DTYPE_BYTES)}")
    if dtype is None:
        by_weights = {w: t for t, w in FLOAT_WEIGHTS.items()}
        dtype = by_weights.get(weights, "bfloat16")  # q8/q4 run bfloat16 activations
    try:
        return footprint(model, dtype, "auto" if weights is None else weights)
    except InvalidArgument as e:
        raise InvalidArgument(f"{where}: {e}") from None


def parse_links(raw: Mapping[str, Any]) -> tuple[LinkSpec, dict[tuple[str, str], LinkSpec]]:
    w = "regions"
    intra = LinkSpec(_num(raw, "intra_rtt_ms", w, 1.0), _num(raw, "intra_gbps", w, 10.0))
    links: dict[tuple[str, str], LinkSpec] = {}
    for pair, spec in _dict(raw.get("inter", {}), f"{w}.inter").items():
        where = f"{w}.inter.{pair}"
        parts = pair.split("-")
        if len(parts) != 2 or not all(parts):
            raise InvalidArgument(f"{where}: key must be 'REGION_A-REGION_B'")
        d = _dict(spec, where)
        links[(parts[0], parts[1])] = LinkSpec(_num(d, "rtt_ms", where), _num(d, "gbps", where))
    for region, spec in _dict(raw.get("per_region", {}), f"{w}.per_region").items():
        where = f"{w}.per_region.{region}"
        d = _dict(spec, where)
        links[(region, region)] = LinkSpec(
            _num(d, "intra_rtt_ms", where, intra.rtt_ms), _num(d, "intra_gbps", where, intra.gbps)
        )
    return intra, links


def parse_cluster(data: Any, resolve_model: Callable[[str], ModelSpec] | None = None) -> Cluster:
    """Validate a cluster dict; InvalidArgument names the offending field."""
    top = _dict(data, "cluster file")
    if "model" not in top:
        raise InvalidArgument("model is missing: give the model's shape as an object or a name")
    raw_model = top["model"]
    if isinstance(raw_model, str):
        if resolve_model is None:
            raise InvalidArgument(
                "model: give the model's shape as an object (names not supported here)"
            )
        model, dtype = resolve_model(raw_model), 2
    else:
        model, dtype = parse_model(_dict(raw_model, "model"))
    context = _int(top, "context_tokens", "cluster", 2048)
    raw_nodes = top.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InvalidArgument("nodes must be a non-empty list of node objects")
    nodes, gpus, seen = [], {}, set()
    for i, raw in enumerate(raw_nodes):
        where = f"nodes[{i}]"
        d = _dict(raw, where)
        nid = d.get("id")
        if not isinstance(nid, str) or not nid:
            raise InvalidArgument(f"{where}.id must be a non-empty string")
        if nid in seen:
            raise InvalidArgument(f"{where}.id={nid!r} appears twice; ids must be unique")
        seen.add(nid)
        region = d.get("region", "default")
        if not isinstance(region, str) or not region:
            raise InvalidArgument(f"{where}.region must be a non-empty string")
        nodes.append(
            NodeCapacity(
                node_id=NodeId(nid),
                memory_bytes=_num(d, "memory_gb", where) * GIB,
                flops=_num(d, "tflops", where) * 1e12 * SPEC_FLOPS_EFFICIENCY,
                mem_bandwidth=_num(d, "mem_bw_gbps", where) * 1e9,
                region=region,
                footprint=node_format(d, where, model),
            )
        )
        if "gpu" in d:
            gpus[NodeId(nid)] = str(d["gpu"])
    intra, links = parse_links(_dict(top.get("regions", {}), "regions"))
    if "workload" in top:
        w = _dict(top["workload"], "workload")
        prompt = _int(w, "prompt_tokens", "workload")
        output = _int(w, "output_tokens", "workload")
        mix: dict[str, Any] = {"mean_prompt_tokens": prompt, "mean_output_tokens": output}
    else:
        mix = {"mean_prompt_tokens": 0, "mean_context_tokens": max(1, context // 2)}
    options = AllocateOptions(
        dtype_bytes=dtype, context_tokens=context, links=links, intra_link=intra, **mix
    )
    return Cluster(model, tuple(nodes), options, gpus)
