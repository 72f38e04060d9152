"""`AllocateOptions`: the knobs of phase 1. Every field has a default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coordinator.scheduler.types import Allocation, LinkSpec
from parallax.errors import InvalidArgument

SOLVERS = ("auto", "exact", "fast", "simple")


@dataclass(frozen=True)
class AllocateOptions:
    """How to allocate layers. Sizes in bytes, times in seconds unless the name says ms."""

    dtype_bytes: int = 4  # weights; 4 = fp32 on CPU
    kv_dtype_bytes: int | None = None  # default: dtype_bytes
    wire_dtype_bytes: int = 2  # activations between nodes
    context_tokens: int = 2048  # longest sequence a request may reach
    # KV tokens each node reserves for every layer it holds; default: one full context.
    # The throughput solvers size this from the concurrency a node's share needs instead,
    # but never below this floor.
    kv_reserve_tokens: int | None = None
    # Pipelines of at least this many nodes when that many exist: real hops on a
    # cluster that one node could serve alone (demos, tests of the data path).
    min_stages_when_possible: int = 1
    max_stages: int | None = None  # cap on hops per chain (a latency bound)
    latency_target_ms: float | None = None  # per-token latency bound of a chain
    batch_size: int = 16  # sequences a node decodes per step when busy
    # Sequences a node keeps at once (the engine's --max-running): with D stages a chain
    # runs at most this many, so each stage decodes about max_running / D per step.
    max_running_per_node: int = 64
    # Share of each node's memory kept back for activations, the runtime and allocator
    # slack: weights and KV are planned in the rest. Packing to the last byte OOMs.
    memory_reserve: float = 0.1
    # Tokens a running sequence holds on average (its KV per layer); None: the prompt
    # plus half the output. A node's decode batch is what fits its KV room at this size.
    mean_context_tokens: int | None = None
    # The engine's costs beyond the roofline. Per layer and step: kernel launches and
    # small ops (20 us: a fused GPU engine; eager PyTorch on a CPU is ~0.2 ms). Bytes
    # decode attention moves per byte of KV: 1 for a paged-attention kernel; an engine
    # that gathers the context first and expands grouped KV heads moves more.
    layer_overhead_s: float = 20e-6
    kv_read_factor: float = 1.0
    # Matmuls over few rows reach a fraction rows / (rows + this) of the device's
    # measured (large, square) FLOP/s; 0 = full rate at any batch.
    matmul_half_rows: float = 0.0
    # Or measured: (rows, fraction of that FLOP/s) points of a matmul over weights too
    # big for the caches, rows ascending; interpolated in log(rows), flat past the ends.
    # CPU BLAS libraries run few-row matmuls with kernels far from any smooth curve (on
    # the dev box 8 rows took about as long as 16), so a probe's points beat the formula.
    matmul_row_rates: tuple[tuple[float, float], ...] = ()
    # The workload's mix: prefill is compute-bound, so slow-FLOP nodes (Macs, T4s) are
    # worth less per layer than their bandwidth suggests when prompts are long.
    mean_prompt_tokens: int = 512
    mean_output_tokens: int = 128
    solver: str = "auto"  # "auto" | "exact" | "fast" | "simple"
    time_limit_s: float = 10.0  # exact solver wall-clock limit
    previous: Allocation | None = None  # for minimal movement on join/leave/rebalance
    # (region_a, region_b) -> link; looked up in both orders. Same-region default below.
    links: Mapping[tuple[str, str], LinkSpec] = field(default_factory=dict)
    intra_link: LinkSpec = field(default_factory=lambda: LinkSpec(rtt_ms=1.0, gbps=10.0))
    inter_link: LinkSpec = field(default_factory=lambda: LinkSpec(rtt_ms=80.0, gbps=1.0))
    # Rebalance only when the new allocation is this much better (hysteresis).
    rebalance_gain: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            (self.dtype_bytes in (1, 2, 4), "dtype_bytes must be 1, 2 or 4"),
            (self.kv_dtype_bytes in (None, 1, 2, 4), "kv_dtype_bytes must be 1, 2, 4 or None"),
            (self.wire_dtype_bytes in (1, 2, 4), "wire_dtype_bytes must be 1, 2 or 4"),
            (self.context_tokens >= 1, "context_tokens must be >= 1"),
            (
                self.kv_reserve_tokens is None or self.kv_reserve_tokens >= 0,
                "kv_reserve_tokens must be >= 0 or None",
            ),
            (self.min_stages_when_possible >= 1, "min_stages_when_possible must be >= 1"),
            (self.max_stages is None or self.max_stages >= 1, "max_stages must be >= 1 or None"),
            (
                self.latency_target_ms is None or self.latency_target_ms > 0,
                "latency_target_ms must be positive or None",
            ),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.max_running_per_node >= 1, "max_running_per_node must be >= 1"),
            (0 <= self.memory_reserve < 1, "memory_reserve must be in [0, 1)"),
            (self.layer_overhead_s >= 0, "layer_overhead_s must be >= 0"),
            (self.kv_read_factor >= 1, "kv_read_factor must be >= 1"),
            (self.matmul_half_rows >= 0, "matmul_half_rows must be >= 0"),
            (
                all(r >= 1 and 0 < f <= 1 for r, f in self.matmul_row_rates)
                and all(
                    a[0] < b[0]
                    for a, b in zip(self.matmul_row_rates, self.matmul_row_rates[1:], strict=False)
                ),
                "matmul_row_rates must be (rows >= 1, fraction in (0, 1]) pairs, rows ascending",
            ),
            (
                self.mean_context_tokens is None or self.mean_context_tokens >= 1,
                "mean_context_tokens must be >= 1 or None",
            ),
            (self.mean_prompt_tokens >= 0, "mean_prompt_tokens must be >= 0"),
            (self.mean_output_tokens >= 1, "mean_output_tokens must be >= 1"),
            (self.solver in SOLVERS, f"solver must be one of {', '.join(SOLVERS)}"),
            (self.time_limit_s > 0, "time_limit_s must be positive"),
            (0 <= self.rebalance_gain < 10, "rebalance_gain must be in [0, 10)"),
        ]
        for ok, why in checks:
            if not ok:
                raise InvalidArgument(f"AllocateOptions: {why}")

    @property
    def kv_bytes(self) -> int:
        return self.kv_dtype_bytes or self.dtype_bytes

    @property
    def reserve_tokens(self) -> int:
        return self.context_tokens if self.kv_reserve_tokens is None else self.kv_reserve_tokens

    def link(self, a: str, b: str) -> LinkSpec:
        if (a, b) in self.links:
            return self.links[(a, b)]
        if (b, a) in self.links:
            return self.links[(b, a)]
        return self.intra_link if a == b else self.inter_link
